"""The Optuna engine: TPE sampling, Hyperband pruning, a journal file as storage.

The journal (``study.journal`` in the run's search folder) keeps every finished
trial, so running the same project again continues the same study.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from automl.budget import Budget, search_should_stop
from automl.engines import SearchData, TrialRecord, train_trial
from automl.errors import FailedTrialError
from automl.events import EventLog
from automl.metrics import Metric
from automl.spaces import Param, suggest

__all__ = ["search", "param_importances"]

#: Stop when this many trials in a row fail: the space or the data is broken, not the luck.
MAX_CONSECUTIVE_FAILURES = 10


def search(space: tuple[Param, ...], data: SearchData, metric: Metric, budget: Budget, *, max_trials: int | None,
           seed: int, storage_dir: Path, study_name: str, warm_starts: tuple[dict[str, Any], ...],
           refit_trials: float, finish_seconds: float, keep_share: float, events: EventLog,
           max_epochs: int) -> list[TrialRecord]:
    """Run trials until the budget, ``max_trials`` or the failure limit says stop."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(logging.ERROR)  # failed trials are recorded in trials.csv
    storage_dir.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(storage_dir / "study.journal")))
    study = optuna.create_study(
        storage=storage, study_name=study_name, load_if_exists=True,
        direction="maximize" if metric.higher_is_better else "minimize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=8),
        pruner=optuna.pruners.HyperbandPruner(min_resource=10, max_resource=max_epochs, reduction_factor=3),
    )
    if study.trials:
        events.add("search", f"resuming study {study_name} with {len(study.trials)} earlier trials")
    else:
        for params in warm_starts:
            study.enqueue_trial(params)
    # Only completed trials say how long a refit takes; pruned ones stop early.
    durations = [t.duration.total_seconds() for t in study.trials if t.state.name == "COMPLETE" and t.duration]
    failures = 0

    def objective(trial: optuna.Trial) -> float:
        params = suggest(space, trial)

        def report(value: float, epoch: int) -> None:
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            value, best_epoch = train_trial(params, data, metric, seed + trial.number, report,
                                            budget.deadline, max_epochs)
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # any failure of one trial is recorded; the search goes on
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:300])
            raise FailedTrialError(str(exc)) from exc
        trial.set_user_attr("best_epoch", best_epoch)
        return value

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal failures
        if trial.state == optuna.trial.TrialState.COMPLETE and trial.duration:
            durations.append(trial.duration.total_seconds())
        failures = failures + 1 if trial.state == optuna.trial.TrialState.FAIL else 0
        best = _best_value(study)
        events.add("search", f"trial {trial.number} {trial.state.name.lower()}"
                   + (f" {metric.name}={trial.value:.4f}" if trial.value is not None else "")
                   + (f", best {best:.4f}" if best is not None else "") + f", {budget.left():.0f}s left")
        if failures >= MAX_CONSECUTIVE_FAILURES:
            events.warn("search", f"stopping: {failures} trials in a row failed; see trials.csv")
            study.stop()
        elif search_should_stop(budget, durations, refit_trials, finish_seconds, keep_share):
            study.stop()

    finished = sum(t.state.is_finished() for t in study.trials)  # enqueued warm starts are not finished
    remaining = None if max_trials is None else max(0, max_trials - finished)
    if remaining != 0 and not search_should_stop(budget, durations, refit_trials, finish_seconds, keep_share):
        study.optimize(objective, n_trials=remaining, timeout=budget.left(), catch=(FailedTrialError,),
                       callbacks=[after_trial], gc_after_trial=False)
    return [_record(t) for t in study.trials if t.state.is_finished()]


def _best_value(study: Any) -> float | None:
    try:
        return float(study.best_value)
    except ValueError:  # no completed trial yet
        return None


def _record(trial: Any) -> TrialRecord:
    duration = trial.duration.total_seconds() if trial.duration else float("nan")
    return TrialRecord(trial.number, trial.state.name, float("nan") if trial.value is None else trial.value,
                       int(trial.user_attrs.get("best_epoch", 0)), round(duration, 3), dict(trial.params),
                       trial.user_attrs.get("error", ""))


def param_importances(storage_dir: Path, study_name: str) -> dict[str, float] | None:
    """Optuna's hyperparameter importances (fANOVA) of the study, or None with too few trials."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = storage_dir / "study.journal"
    if not journal.exists():
        return None
    study = optuna.load_study(study_name=study_name, storage=JournalStorage(JournalFileBackend(str(journal))))
    if sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) < 3:
        return None
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError):  # e.g. every completed trial scored the same
        return None
