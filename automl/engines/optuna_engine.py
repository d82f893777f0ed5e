"""The Optuna engine: TPE sampling, Hyperband pruning, trials in one or many processes.

Storage: by default a journal file (``search/study.journal`` in the run folder; no
server, safe for local processes); with ``storage_url`` (``postgresql://…``) Optuna's
RDB storage, with heartbeats so that a trial whose worker died is retried, for workers
on several machines. Every finished trial stays in the storage, so running the same
project again continues the study (``max_trials`` counts the study's trials, old ones
included) and a killed run loses no completed trial.

With ``workers > 1`` the trials run in ``python -m automl.worker`` processes that
rebuild the search data from the ``spec`` kept in the study; this process only
supervises them, restarts recycled ones and reports progress.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from automl.budget import Budget, search_should_stop
from automl.engines import SearchData, TrialRecord, train_trial
from automl.errors import FailedTrialError, InputError
from automl.events import EventLog
from automl.metrics import Metric
from automl.spaces import Param, suggest

__all__ = ["search", "work", "open_study", "param_importances", "StopRule", "RECYCLE_EXIT", "HEARTBEAT_SECONDS"]

#: Stop when this many trials in a row fail: the space or the data is broken, not the luck.
MAX_CONSECUTIVE_FAILURES = 10
#: A worker process exits with this code after its share of trials, to be replaced by a fresh one
#: (one process grows 5-9 MB per trial).
RECYCLE_EXIT = 3
#: Trials per worker process before it is recycled.
TRIALS_PER_PROCESS = 25
#: RDB heartbeats: a trial without one for GRACE seconds is failed and retried.
HEARTBEAT_SECONDS = 5
GRACE_SECONDS = 20
_INTERRUPTED = "interrupted"
#: Set on a trial that a parallel worker started after others had claimed the last of ``max_trials``.
_SURPLUS = "surplus"


def open_study(storage_url: str | None, storage_dir: Path, study_name: str, metric: Metric | None = None,
               seed: int = 0, max_epochs: int = 100) -> Any:
    """Create or load the study (``metric=None``: load only, it must exist)."""
    import optuna

    optuna.logging.set_verbosity(logging.ERROR)  # failed trials are recorded in trials.csv
    storage = _storage(storage_url, storage_dir)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=8)
    pruner = optuna.pruners.HyperbandPruner(min_resource=10, max_resource=max_epochs, reduction_factor=3)
    if metric is None:
        return optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
    return optuna.create_study(storage=storage, study_name=study_name, load_if_exists=True, sampler=sampler,
                               pruner=pruner, direction="maximize" if metric.higher_is_better else "minimize")


def _storage(storage_url: str | None, storage_dir: Path) -> Any:
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    if storage_url is None:
        storage_dir.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(storage_dir / "study.journal")))
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8: not the user's concern
            warnings.simplefilter("ignore", ExperimentalWarning)
            return RDBStorage(storage_url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
                              engine_kwargs={"pool_pre_ping": True})
    except Exception as exc:  # a wrong URL, no server, no driver: the user must fix the URL
        raise InputError(f"--storage {storage_url}: cannot open ({type(exc).__name__}: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
                         "check the URL and that the database server runs") from None


class StopRule:
    """When the search is done, read from the study alone, so every worker decides alike."""

    def __init__(self, budget: Budget, max_trials: int | None, refit_trials: float, finish_seconds: float,
                 keep_share: float) -> None:
        self.budget, self.max_trials = budget, max_trials
        self.refit_trials, self.finish_seconds, self.keep_share = refit_trials, finish_seconds, keep_share

    def reason(self, trials: list[Any], ahead: float = 0.0) -> str | None:
        """Why to stop now (or ``ahead`` seconds from now, as far as time goes), or None to go on."""
        finished = [t for t in _counted(trials) if t.state.is_finished()]
        if self.max_trials is not None and len(finished) >= self.max_trials:
            return f"{self.max_trials} trials done"
        tail = [t.state.name for t in finished[-MAX_CONSECUTIVE_FAILURES:]]
        if len(tail) == MAX_CONSECUTIVE_FAILURES and set(tail) == {"FAIL"}:
            return f"{MAX_CONSECUTIVE_FAILURES} trials in a row failed; see trials.csv"
        # Only completed trials say how long a refit takes; pruned ones stop early.
        durations = [t.duration.total_seconds() for t in finished if t.state.name == "COMPLETE" and t.duration]
        budget = self.budget if not ahead else replace(self.budget, clock=lambda: self.budget.clock() + ahead)
        if search_should_stop(budget, durations, self.refit_trials, self.finish_seconds, self.keep_share):
            return "time budget"
        return None

    def all_claimed(self, trials: list[Any]) -> bool:
        """Every one of ``max_trials`` is finished or running somewhere."""
        return self.max_trials is not None and len(_claimed(trials)) >= self.max_trials


def _claimed(trials: list[Any]) -> list[Any]:
    return [t for t in _counted(trials) if t.state.name != "WAITING"]


def _counted(trials: list[Any]) -> list[Any]:
    """Trials that count toward ``max_trials``: not interrupted (they are retried), not surplus."""
    retried = _retried_numbers(trials)
    return [t for t in trials if not _interrupted(t, retried) and not t.user_attrs.get(_SURPLUS)]


def _retried_numbers(trials: list[Any]) -> set[int]:
    """Numbers of trials that Optuna's heartbeat callback failed and queued again (``retry_history``)."""
    return {number for t in trials for number in t.system_attrs.get("retry_history", ())}


def _interrupted(trial: Any, retried: set[int]) -> bool:
    """A trial whose process died: it is retried, so it is not a result (nor counted as one)."""
    return trial.state.name == "FAIL" and (bool(trial.user_attrs.get(_INTERRUPTED)) or trial.number in retried)


def _objective(space: tuple[Param, ...], data: SearchData, metric: Metric, seed: int, deadline: float,
               max_epochs: int, orphan_check: bool, max_trials: int | None) -> Callable[[Any], float]:
    import optuna
    from optuna.trial import TrialState

    owner = f"{socket.gethostname()}:{os.getpid()}"
    parent = os.getppid()
    claiming = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", owner)
        if max_trials is not None:
            # Parallel workers must not overshoot --max-models: the first max_trials trials by number run.
            earlier = [t for t in _counted(trial.study.get_trials(deepcopy=False, states=claiming))
                       if t.number < trial.number]
            if len(earlier) >= max_trials:
                trial.set_user_attr(_SURPLUS, True)
                trial.study.stop()
                raise optuna.TrialPruned()
        params = suggest(space, trial)

        def report(value: float, epoch: int) -> None:
            if orphan_check and os.getppid() != parent:  # the supervisor died (kill -9): do not run orphaned
                raise SystemExit(1)
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            value, best_epoch = train_trial(params, data, metric, seed + trial.number, report, deadline, max_epochs,
                                            name=f"trial_{trial.number}")
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # any failure of one trial is recorded; the search goes on
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:300])
            raise FailedTrialError(str(exc)) from exc
        trial.set_user_attr("best_epoch", best_epoch)
        return value

    return objective


def work(study: Any, space: tuple[Param, ...], data: SearchData, metric: Metric, stop: StopRule, *, seed: int,
         max_epochs: int, n_trials: int | None = None, on_trial: Callable[[Any, Any], None] | None = None,
         orphan_check: bool = False) -> str | None:
    """Run trials in this process until ``stop`` says so or ``n_trials`` ran; return the stop reason.

    ``orphan_check``: exit if the parent process dies (for workers a supervisor started).
    """
    reason: str | None = stop.reason(study.trials)

    def after_trial(study: Any, trial: Any) -> None:
        nonlocal reason
        if on_trial is not None:
            on_trial(study, trial)
        reason = stop.reason(study.trials)
        if reason is not None:
            study.stop()

    if reason is None:
        objective = _objective(space, data, metric, seed, stop.budget.deadline, max_epochs, orphan_check,
                               stop.max_trials)
        study.optimize(objective, n_trials=n_trials,
                       timeout=stop.budget.left(), catch=(FailedTrialError,), callbacks=[after_trial],
                       gc_after_trial=False)
        if reason is None and stop.all_claimed(study.trials):
            reason = "the last trials run in other workers"
    return reason


def search(space: tuple[Param, ...], data: SearchData, metric: Metric, budget: Budget, *, max_trials: int | None,
           seed: int, storage_dir: Path, study_name: str, warm_starts: tuple[dict[str, Any], ...],
           refit_trials: float, finish_seconds: float, keep_share: float, events: EventLog, max_epochs: int,
           workers: int = 1, storage_url: str | None = None, spec: dict[str, Any] | None = None
           ) -> list[TrialRecord]:
    """Run trials until the budget, ``max_trials`` or the failure limit says stop.

    ``spec`` (JSON) lets worker processes rebuild ``data``; it is required when ``workers > 1``.
    """
    study = open_study(storage_url, storage_dir, study_name, metric, seed, max_epochs)
    if study.trials:
        events.add("search", f"resuming study {study_name} with {len(study.trials)} earlier trials")
        if storage_url is None:
            # A journal has no heartbeats: a trial left RUNNING belongs to a killed run. Retry it.
            _retry_interrupted(study, lambda t: True, events)
    else:
        for params in warm_starts:
            study.enqueue_trial(params)
    stop = StopRule(budget, max_trials, refit_trials, finish_seconds, keep_share)
    if spec is not None:
        study.set_user_attr("spec", {**spec, "max_trials": max_trials, "refit_trials": refit_trials,
                                     "finish_seconds": finish_seconds, "keep_share": keep_share,
                                     "max_epochs": max_epochs})
    progress = _Progress(study, metric, budget, events)
    if workers <= 1:
        reason = work(study, space, data, metric, stop, seed=seed, max_epochs=max_epochs,
                      on_trial=lambda s, t: progress.show())
    else:
        if spec is None:
            raise ValueError("search with workers > 1 needs the spec that worker processes rebuild the data from")
        reason = _supervise(study, storage_url, storage_dir, study_name, workers, stop, progress, events)
    events.add("search", f"search stopped: {reason or 'time budget'}")
    return [_record(t) for t in study.trials if t.state.is_finished() and not t.user_attrs.get(_SURPLUS)]


def _supervise(study: Any, storage_url: str | None, storage_dir: Path, study_name: str, workers: int,
               stop: StopRule, progress: _Progress, events: EventLog) -> str | None:
    """Keep ``workers`` worker processes running until the search is done; recycle and restart them."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    command = [sys.executable, "-m", "automl.worker", "--study", study_name, "--threads", str(threads),
               "--storage", storage_url or str(storage_dir / "study.journal"), "--supervised"]
    procs: dict[int, subprocess.Popen] = {}
    started: dict[int, float] = {}  # pid -> when it was started, until its first trial shows
    startup = 0.0  # seconds from starting a worker to its first trial (TensorFlow import, data)

    def start(slot: int, trials: int = TRIALS_PER_PROCESS) -> None:
        procs[slot] = subprocess.Popen([*command, "--trials", str(trials)])
        started[procs[slot].pid] = time.monotonic()

    reason = stop.reason(study.trials)
    for slot in range(workers if reason is None else 0):
        # Stagger the first recycling, so that workers do not all restart (and idle) at once.
        start(slot, max(1, TRIALS_PER_PROCESS * (slot + 1) // workers))
    events.add("search", f"{len(procs)} worker processes, {threads} TensorFlow thread(s) each")
    while procs:
        time.sleep(0.5)
        progress.show()
        trials = study.trials
        reason = stop.reason(trials)
        if started:
            owners = {t.user_attrs.get("worker") for t in trials}
            for pid in [p for p in started if f"{socket.gethostname()}:{p}" in owners]:
                startup = max(startup, time.monotonic() - started.pop(pid))
        for slot, proc in list(procs.items()):
            code = proc.poll()
            if code is None:
                if stop.budget.left() <= 0 and time.monotonic() > stop.budget.deadline + GRACE_SECONDS:
                    proc.kill()  # a trial ends at the deadline; this one hangs
                continue
            del procs[slot]
            started.pop(proc.pid, None)
            if code not in (0, RECYCLE_EXIT):
                events.warn("search", f"worker {proc.pid} exited with code {code}; retrying its trial")
                owner = f"{socket.gethostname()}:{proc.pid}"
                _retry_interrupted(study, lambda t, o=owner: t.user_attrs.get("worker") == o, events)
            if code == 2:  # the worker could not load the data: a replacement would fail alike
                events.warn("search", f"worker {proc.pid} could not start (see its error above)")
            elif reason is None and code != 0:
                # A replacement that would only be ready when the search is over just delays its end.
                if stop.reason(trials, ahead=startup) is None:
                    start(slot)
                else:
                    events.add("search", f"worker {proc.pid} not replaced: the search ends before a new one "
                                         f"would be ready ({startup:.0f}s)")
    progress.show()
    return stop.reason(study.trials)


def _retry_interrupted(study: Any, belongs: Callable[[Any], bool], events: EventLog) -> None:
    """Fail RUNNING trials whose process is gone, and queue their parameters again."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not belongs(trial):
            continue
        storage = study._storage  # Optuna has no public call to fail another process's trial
        try:
            storage.set_trial_user_attr(trial._trial_id, _INTERRUPTED, True)
            storage.set_trial_user_attr(trial._trial_id, "error", "interrupted: its process was killed; retried")
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:  # another worker's heartbeat check failed and retried it meanwhile
            continue
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        events.warn("search", f"trial {trial.number} was interrupted; its configuration is queued again")


class _Progress:
    """Progress lines for trials that finished since the last call, in any process."""

    def __init__(self, study: Any, metric: Metric, budget: Budget, events: EventLog) -> None:
        self.study, self.metric, self.budget, self.events = study, metric, budget, events
        self.seen = {t.number for t in study.trials if t.state.is_finished()}

    def show(self) -> None:
        for trial in self.study.trials:
            if trial.number in self.seen or not trial.state.is_finished():
                continue
            self.seen.add(trial.number)
            best = _best_value(self.study)
            self.events.add("search", f"trial {trial.number} {trial.state.name.lower()}"
                            + (f" {self.metric.name}={trial.value:.4f}" if trial.value is not None else "")
                            + (f", best {best:.4f}" if best is not None else "") + f", {self.budget.left():.0f}s left")


def param_importances(storage_dir: Path, study_name: str, storage_url: str | None = None) -> dict[str, float] | None:
    """Optuna's hyperparameter importances (fANOVA) of the study, or None with too few trials."""
    import optuna

    if storage_url is None and not (storage_dir / "study.journal").exists():
        return None
    study = open_study(storage_url, storage_dir, study_name)
    if sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) < 3:
        return None
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError):  # e.g. every completed trial scored the same
        return None


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
