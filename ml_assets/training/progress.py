"""Progress in the Dagster run log while a long, blocking call (a Ray fit, a Tune search) runs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def streamed_lines(poll: Callable[[], list[str]], log: Callable[[str], None],
                   interval_s: float = 2.0) -> Iterator[None]:
    """Log each new line `poll` returns (it returns every line so far, in order) as it appears,
    from a background thread; lines present on entry (an earlier attempt's) are not repeated.
    On exit, a last poll logs what finished since the previous one."""
    seen = len(poll())
    stop = threading.Event()

    def flush() -> None:
        nonlocal seen
        try:
            lines = poll()
        except Exception as error:  # a failed poll must not fail the work it reports on
            log(f"progress poll failed: {error!r}")
            return
        for line in lines[seen:]:
            log(line)
        seen = max(seen, len(lines))

    def watch() -> None:
        while not stop.wait(interval_s):
            flush()

    thread = threading.Thread(target=watch, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        flush()


def trial_progress(log: Callable[[str], None]) -> Any:
    """A Ray Tune callback (Tune calls it in the driver, this process) that logs each trial as
    it completes: its epochs (fewer when ASHA stopped it), last validation metrics, config."""
    from ray import tune

    class TrialProgress(tune.Callback):
        def __init__(self, log: Callable[[str], None]) -> None:
            self.log: Callable[[str], None] | None = log  # an argument: not in a closure

        def __getstate__(self) -> dict:
            # Tune pickles callbacks into its experiment state; a run's logger does not pickle
            # (and means nothing in a restored search), so the copy logs nothing
            return {**self.__dict__, "log": None}

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any):
            if self.log is None:
                return
            result = trial.last_result or {}
            config = {k: list(v) if isinstance(v, tuple) else v for k, v in trial.config.items()}
            self.log(f"trial {trial.trial_id} done after {result.get('training_iteration', 0)} "
                f"epochs: val_roc_auc={result.get('val_roc_auc', float('nan')):.4f} "
                f"val_loss={result.get('val_loss', float('nan')):.4f} config={config}")

    return TrialProgress(log)
