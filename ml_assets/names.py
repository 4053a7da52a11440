"""The graph's names, said once: asset keys, check names, jobs and run tags. The CLI, the ML
Service and the executor use them without importing the definitions."""

# assets, in the order the graph runs them
CUSTOMER_ACTIVITY = "customer_activity"
CHURN_LABELS = "churn_labels"
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

# what one run of the whole graph (and a retrain) materializes
MODEL_GRAPH = (TRAINING_FEATURES, HYPERPARAMETER_SEARCH, TRAINED_MODEL, EVALUATION_REPORT,
               REGISTERED_MODEL, DEPLOYED_ENDPOINT)
RETRAIN_ASSETS = (TRAINING_FEATURES, TRAINED_MODEL, EVALUATION_REPORT, REGISTERED_MODEL)

# the blocking data contracts on the source assets: nothing is joined or trained past a breach
ACTIVITY_CONTRACT = "customer_activity_contract"
LABELS_CONTRACT = "churn_labels_contract"
CONTRACTS = ((CUSTOMER_ACTIVITY, ACTIVITY_CONTRACT), (CHURN_LABELS, LABELS_CONTRACT))

# the blocking promotion gate on evaluation_report (monitoring's checks: monitoring/statistics)
BEATS_BASELINE = "beats_baseline"
# the baseline a tenant's candidate is held to while it has no Production version
REFERENCE_BASELINE = "logistic_regression_reference"

# the LLM chain: a tenant's registered LLM, served on vLLM behind the LLM gateway
REGISTERED_LLM = "registered_llm"
LLM_ENDPOINT = "llm_endpoint"
LLM_MONITORING = "llm_monitoring"

CHURN_MODEL_JOB = "churn_model_job"
PROMOTE_MODEL_JOB = "promote_model"

TRIGGER_TAG = "ml_assets/trigger"  # what started a run: retrain, prediction_log, ...
REASON_TAG = "ml_assets/retrain_reason"
