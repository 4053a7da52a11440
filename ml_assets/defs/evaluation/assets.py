"""Holdout evaluation of the candidate against the tenant's current Production model."""


import io
import json
from typing import Literal

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from ml_assets import names
from ml_assets.defs.partitions import tenant_partitions
from ml_assets.registry import stages
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.schema import FEATURES, LABEL
from ml_assets.tenants import Tenant
from ml_assets.training.metrics import LOWER_IS_BETTER, binary_metrics

BEATS_BASELINE = names.BEATS_BASELINE
REFERENCE_BASELINE = names.REFERENCE_BASELINE


class EvaluationConfig(dg.Config):
    """The promotion gate: the candidate must beat the baseline on `metric` by `margin`."""

    metric: Literal["roc_auc", "f1", "accuracy", "brier", "log_loss"] = "roc_auc"
    margin: float = Field(0.0, ge=-1, le=1)




def _predict(model, frame: pd.DataFrame) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor(frame[FEATURES].to_numpy(), dtype=torch.float32)).numpy()


def _reference_model(train: pd.DataFrame):
    """Logistic regression on mean-imputed, standardized features: the no-frills reference."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(max_iter=500))
    return pipeline.fit(train[FEATURES], train[LABEL])


def _baseline(mlflow: MlflowRegistry, tenant: Tenant, features: pd.DataFrame,
              holdout: pd.DataFrame) -> tuple[str, np.ndarray]:
    production = stages.version_with_alias(mlflow.client(), tenant, stages.PRODUCTION)
    if production is not None:
        import mlflow.pytorch as mlflow_pytorch

        model = mlflow_pytorch.load_model(
            f"models:/{tenant.registered_model_name}/{production.version}")
        return f"production_v{production.version}", _predict(model, holdout)
    reference = _reference_model(features[features["split"] == "train"])
    return REFERENCE_BASELINE, reference.predict_proba(holdout[FEATURES])[:, 1]


def _report_png(y: np.ndarray, curves: dict[str, np.ndarray]) -> bytes:
    """ROC curves and a reliability diagram (calibration) of each model on the holdout."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, (roc, calibration) = plt.subplots(1, 2, figsize=(9, 4.2), dpi=80)
    for name, p in curves.items():
        fpr, tpr, _ = roc_curve(y, p)
        roc.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
        observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
        calibration.plot(predicted, observed, marker="o", markersize=3, label=name)
    for ax in (roc, calibration):
        ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
        ax.legend(loc="lower right", fontsize=8)
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="Holdout ROC")
    calibration.set(xlabel="mean predicted churn probability", ylabel="observed churn rate",
                    title="Calibration (deciles)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    """An image the Dagster UI shows inline: its markdown renderer allows data: URIs."""
    import base64

    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def _markdown(candidate: dict[str, float], baseline: dict[str, float], baseline_name: str) -> str:
    lines = [f"| metric | candidate | {baseline_name} |", "|---|---|---|"]
    lines += [f"| {k} | {candidate[k]:.4f} | {baseline[k]:.4f} |" for k in candidate]
    return "\n".join(lines)


@dg.asset(
    partitions_def=tenant_partitions,
    group_name="evaluation",
    kinds={"mlflow", "pytorch"},
    check_specs=[
        dg.AssetCheckSpec(
            BEATS_BASELINE,
            asset=names.EVALUATION_REPORT,
            blocking=True,
            description="The candidate beats the baseline (current Production, else a logistic "
            "regression reference) on the holdout by the configured margin; blocks registration.",
        )
    ],
)
def evaluation_report(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    training_features: pd.DataFrame,
    trained_model: dict,
    mlflow: MlflowRegistry,
):
    """Holdout metrics of the candidate and of the baseline on the same rows: a markdown table,
    ROC and calibration plots (shown here, and logged to the candidate's MLflow run), each
    metric as a number Dagster plots across materializations."""
    import mlflow.pytorch as mlflow_pytorch

    tenant = Tenant(context.partition_key)
    run_id = trained_model["run_id"]
    mlflow.tenant_run(tenant, run_id)
    holdout = training_features[training_features["split"] == "holdout"]
    y = holdout[LABEL].to_numpy()
    candidate_model = mlflow_pytorch.load_model(trained_model["model_uri"])
    p_candidate = _predict(candidate_model, holdout)
    baseline_name, p_baseline = _baseline(mlflow, tenant, training_features, holdout)
    candidate, baseline = binary_metrics(y, p_candidate), binary_metrics(y, p_baseline)

    sign = -1.0 if config.metric in LOWER_IS_BETTER else 1.0
    improvement = sign * (candidate[config.metric] - baseline[config.metric])
    passed = bool(improvement >= config.margin)
    report = {
        "tenant": tenant.key, "run_id": run_id, "model_uri": trained_model["model_uri"],
        "holdout_rows": len(holdout), "baseline": baseline_name,
        "candidate": candidate, "baseline_metrics": baseline,
        "gate": {"metric": config.metric, "margin": config.margin,
                 "improvement": improvement, "passed": passed},
    }
    markdown = _markdown(candidate, baseline, baseline_name)
    png = _report_png(y, {"candidate": p_candidate, baseline_name: p_baseline})
    client = mlflow.client()
    client.log_text(run_id, json.dumps(report, indent=2), "evaluation/report.json")
    client.log_text(run_id, markdown + "\n", "evaluation/report.md")
    client.log_image(run_id, _png_image(png), "evaluation/roc.png")
    for key, value in candidate.items():
        client.log_metric(run_id, f"holdout_{key}", value)

    yield dg.Output(
        report,
        metadata={
            "baseline": baseline_name,
            "holdout_rows": len(holdout),
            **{f"holdout_{k}": dg.MetadataValue.float(v) for k, v in candidate.items()},
            **{f"baseline_{k}": dg.MetadataValue.float(v) for k, v in baseline.items()},
            "report": dg.MetadataValue.md(markdown),
            "roc_and_calibration": png_markdown(png, "holdout ROC and calibration"),
            **mlflow.run_links(tenant, run_id),
        },
    )
    yield dg.AssetCheckResult(
        check_name=BEATS_BASELINE,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"candidate {config.metric} {candidate[config.metric]:.4f} vs "
        f"{baseline_name} {baseline[config.metric]:.4f}: improvement {improvement:+.4f}, "
        f"margin {config.margin}",
        metadata={
            "metric": config.metric,
            "candidate_value": dg.MetadataValue.float(candidate[config.metric]),
            "baseline_value": dg.MetadataValue.float(baseline[config.metric]),
            "improvement": dg.MetadataValue.float(improvement),
            "required_margin": dg.MetadataValue.float(config.margin),
            "baseline": baseline_name,
        },
    )


def _png_image(png: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(png))
