"""Holdout evaluation of the candidate against the tenant's current Production model."""


import io
import json

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from ml_assets import names
from ml_assets.defs.scope import key, tenant_of, use_case_asset, use_case_of
from ml_assets.registry import stages
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.tenants import Tenant
from ml_assets.training.metrics import LOWER_IS_BETTER, task_metrics
from ml_assets.use_case import METRICS, UseCase, known_metric

BEATS_BASELINE = names.BEATS_BASELINE


class EvaluationConfig(dg.Config):
    """The promotion gate: the candidate must beat the baseline on `metric` by `margin`; left
    out, the use case's declared gate."""

    metric: str | None = Field(None, description="one of the task's metrics: "
                               + "; ".join(f"{t}: {', '.join(m)}" for t, m in METRICS.items()))
    margin: float | None = Field(None, ge=-1, le=1)

    _known_metric = field_validator("metric")(lambda cls, value: known_metric(value))

    def gate(self, use_case: UseCase) -> tuple[str, float]:
        """(metric, margin), checked against the use case's task."""
        metric = self.metric or use_case.gate.metric
        if metric not in METRICS[use_case.label.task]:
            raise ValueError(f"metric {metric!r} is not a {use_case.label.task} metric of use "
                             f"case {use_case.name!r}: one of {list(METRICS[use_case.label.task])}")
        return metric, use_case.gate.margin if self.margin is None else self.margin




def _predict(model_uri: str, family: str, frame: pd.DataFrame, use_case: UseCase) -> np.ndarray:
    from ml_assets.serving.models import load_predictor

    matrix = frame[use_case.features].to_numpy(dtype=np.float32)
    return load_predictor(model_uri, family)(matrix)


def _reference_model(train: pd.DataFrame, use_case: UseCase):
    """A linear model on mean-imputed, standardized features: the no-frills reference
    (logistic regression for a binary label, ridge regression for a number)."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    linear = LogisticRegression(max_iter=500) if use_case.binary else Ridge()
    pipeline = make_pipeline(SimpleImputer(), StandardScaler(), linear)
    return pipeline.fit(train[use_case.features], train[use_case.label.column])


def _baseline(mlflow: MlflowRegistry, tenant: Tenant, features: pd.DataFrame,
              holdout: pd.DataFrame, use_case: UseCase) -> tuple[str, np.ndarray]:
    production = stages.version_with_alias(mlflow.client(), tenant, stages.PRODUCTION)
    if production is not None:
        uri = f"models:/{tenant.registered_model_name}/{production.version}"
        from ml_assets.serving.models import family_of

        return f"production_v{production.version}", _predict(
            uri, family_of(production.tags), holdout, use_case)
    reference = _reference_model(features[features["split"] == "train"], use_case)
    rows = holdout[use_case.features]
    predicted = reference.predict_proba(rows)[:, 1] if use_case.binary else reference.predict(rows)
    return names.REFERENCE_BASELINES[use_case.label.task], predicted


def _report_png(y: np.ndarray, curves: dict[str, np.ndarray]) -> bytes:
    """ROC curves and a reliability diagram (calibration) of each model on the holdout."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, (roc, calibration) = _figure()
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
    return _png(fig)


def _regression_png(y: np.ndarray, curves: dict[str, np.ndarray]) -> bytes:
    """Predicted against actual, and the residuals' distribution, of each model."""
    fig, (scatter, residuals) = _figure()
    for name, p in curves.items():
        scatter.scatter(y, p, s=4, alpha=0.4, label=name)
        residuals.hist(p - y, bins=40, alpha=0.5, label=name)
    low, high = float(np.min(y)), float(np.max(y))
    scatter.plot([low, high], [low, high], "--", color="grey", linewidth=1)
    scatter.set(xlabel="actual", ylabel="predicted", title="Holdout: predicted vs actual")
    residuals.set(xlabel="predicted - actual", ylabel="rows", title="Residuals")
    for ax in (scatter, residuals):
        ax.legend(fontsize=8)
    return _png(fig)


def _figure():
    """A figure of two plots side by side, and its axes: a plain Figure, not pyplot's, which
    keeps every figure in global state until closed and needs a backend chosen."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.2), dpi=80)
    return fig, fig.subplots(1, 2)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    """An image the Dagster UI shows inline: its markdown renderer allows data: URIs."""
    import base64

    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def _markdown(candidate: dict[str, float], baseline: dict[str, float], baseline_name: str) -> str:
    lines = [f"| metric | candidate | {baseline_name} |", "|---|---|---|"]
    lines += [f"| {k} | {candidate[k]:.4f} | {baseline[k]:.4f} |" for k in candidate]
    return "\n".join(lines)


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
    tenant, use_case = tenant_of(context), use_case_of(context)
    metric, margin = config.gate(use_case)
    run_id = trained_model["run_id"]
    mlflow.tenant_run(tenant, run_id)
    holdout = training_features[training_features["split"] == "holdout"]
    y = holdout[use_case.label.column].to_numpy()
    family = trained_model.get("family", use_case.training.family)
    p_candidate = _predict(trained_model["model_uri"], family, holdout, use_case)
    baseline_name, p_baseline = _baseline(mlflow, tenant, training_features, holdout, use_case)
    task = use_case.label.task
    candidate, baseline = task_metrics(task, y, p_candidate), task_metrics(task, y, p_baseline)

    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    improvement = sign * (candidate[metric] - baseline[metric])
    passed = bool(improvement >= margin)
    report = {
        "tenant": tenant.key, "run_id": run_id, "model_uri": trained_model["model_uri"],
        "holdout_rows": len(holdout), "baseline": baseline_name,
        "candidate": candidate, "baseline_metrics": baseline,
        "gate": {"metric": metric, "margin": margin,
                 "improvement": improvement, "passed": passed},
    }
    markdown = _markdown(candidate, baseline, baseline_name)
    # (function, metadata key, alt text, artifact) of the task's plots
    plot, plot_name, alt, artifact = (
        (_report_png, "roc_and_calibration", "holdout ROC and calibration", "roc.png")
        if use_case.binary else (_regression_png, "predicted_vs_actual",
                                 "holdout predicted vs actual", "predicted_vs_actual.png"))
    png = plot(y, {"candidate": p_candidate, baseline_name: p_baseline})
    client = mlflow.client()
    client.log_text(run_id, json.dumps(report, indent=2), "evaluation/report.json")
    client.log_text(run_id, markdown + "\n", "evaluation/report.md")
    client.log_image(run_id, _png_image(png), f"evaluation/{artifact}")
    for metric_name, value in candidate.items():
        client.log_metric(run_id, f"holdout_{metric_name}", value)

    yield dg.Output(
        report,
        metadata={
            "baseline": baseline_name,
            "holdout_rows": len(holdout),
            **{f"holdout_{k}": dg.MetadataValue.float(v) for k, v in candidate.items()},
            **{f"baseline_{k}": dg.MetadataValue.float(v) for k, v in baseline.items()},
            "report": dg.MetadataValue.md(markdown),
            plot_name: png_markdown(png, alt),
            **mlflow.run_links(tenant, run_id),
        },
    )
    yield dg.AssetCheckResult(
        check_name=BEATS_BASELINE,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"candidate {metric} {candidate[metric]:.4f} vs "
        f"{baseline_name} {baseline[metric]:.4f}: improvement {improvement:+.4f}, "
        f"margin {margin}",
        metadata={
            "metric": metric,
            "candidate_value": dg.MetadataValue.float(candidate[metric]),
            "baseline_value": dg.MetadataValue.float(baseline[metric]),
            "improvement": dg.MetadataValue.float(improvement),
            "required_margin": dg.MetadataValue.float(margin),
            "baseline": baseline_name,
        },
    )


def _png_image(png: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(png))


def build(use_case: UseCase) -> list[dg.AssetsDefinition]:
    gate = dg.AssetCheckSpec(
        BEATS_BASELINE, asset=key(use_case.name, names.EVALUATION_REPORT), blocking=True,
        description="The candidate beats the baseline (current Production, else a linear "
        "reference) on the holdout by the gate's margin; blocks registration.")
    return [use_case_asset(use_case, evaluation_report, names.EVALUATION_REPORT, "evaluation",
                           {"mlflow", "pytorch"},
                           upstream=(names.TRAINING_FEATURES, names.TRAINED_MODEL),
                           check_specs=[gate])]
