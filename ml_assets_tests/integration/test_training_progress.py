"""Ray Tune trials reach the Dagster run log as each one completes."""

import re
import threading


def test_trial_progress_logs_each_trial_when_it_completes(ray_cluster, tmp_path):
    from ray import tune

    from ml_assets.training.progress import trial_progress

    def trainable(config):
        for _ in range(config["epochs"]):
            tune.report({"val_roc_auc": 0.5 + config["epochs"] / 10, "val_loss": 0.3})

    class RunLog:  # like Dagster's log manager: it does not pickle
        def __init__(self) -> None:
            self.lines: list[str] = []
            self.lock = threading.Lock()

        def info(self, line: str) -> None:
            with self.lock:
                self.lines.append(line)

    run_log = RunLog()
    tune.Tuner(
        trainable,
        param_space={"epochs": tune.grid_search([1, 3])},
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="progress",
                                  callbacks=[trial_progress(run_log.info)]),
    ).fit()
    logged = run_log.lines
    assert len(logged) == 2, logged
    assert sorted(re.search(r"done after (\d+) epochs: val_roc_auc=(\S+)", line).groups()
                  for line in logged) == [("1", "0.6000"), ("3", "0.8000")]
    assert all("config={'epochs'" in line for line in logged)
