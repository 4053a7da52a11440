"""The graph's names, said once: asset keys, check names, jobs and run tags. The CLI, the ML
Service and the executor use them without importing the definitions."""

# each use case's assets (after its declared sources), in the order the graph runs them
TRAINING_FEATURES = "training_features"
HYPERPARAMETER_SEARCH = "hyperparameter_search"
TRAINED_MODEL = "trained_model"
EVALUATION_REPORT = "evaluation_report"
REGISTERED_MODEL = "registered_model"
DEPLOYED_ENDPOINT = "deployed_endpoint"
MODEL_MONITORING = "model_monitoring"
PREDICTION_LOG_COMPACTION = "prediction_log_compaction"
BATCH_PREDICTIONS = "batch_predictions"
TRITON_MODEL_REPOSITORY = "triton_model_repository"
TRITON_ENDPOINT = "triton_endpoint"



def op_name(use_case: str, asset: str) -> str:
    """The step (op) of a use case's asset: its run config key and step key."""
    return f"{use_case}__{asset}"


def model_job(use_case: str) -> str:
    """The job of a use case's chain up to the live endpoint."""
    return f"{use_case}_model_job"


def selection(use_case: str, *assets: str) -> str:
    """The `dagster asset materialize --select` string of a use case's assets."""
    return ",".join(f"{use_case}/{asset}" for asset in assets)


# what one run of the whole graph (and a retrain) materializes
MODEL_GRAPH = (TRAINING_FEATURES, HYPERPARAMETER_SEARCH, TRAINED_MODEL, EVALUATION_REPORT,
               REGISTERED_MODEL, DEPLOYED_ENDPOINT)
RETRAIN_ASSETS = (TRAINING_FEATURES, TRAINED_MODEL, EVALUATION_REPORT, REGISTERED_MODEL)

# the blocking promotion gate on evaluation_report (monitoring's checks: monitoring/statistics)
BEATS_BASELINE = "beats_baseline"
# the baseline a tenant's candidate is held to while it has no Production version, per task
REFERENCE_BASELINES = {"binary_classification": "logistic_regression_reference",
                       "regression": "ridge_regression_reference"}

# the LLM chain: a tenant's registered LLM, served on vLLM behind the LLM gateway
REGISTERED_LLM = "registered_llm"
LLM_ENDPOINT = "llm_endpoint"
LLM_MONITORING = "llm_monitoring"

PROMOTE_MODEL_JOB = "promote_model"

TRIGGER_TAG = "ml_assets/trigger"  # what started a run: retrain, prediction_log, ...
REASON_TAG = "ml_assets/retrain_reason"
