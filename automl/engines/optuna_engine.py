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

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from automl.budget import Budget, model_deadline, search_deadline, search_should_stop
from automl.devices import distributed, usable_cores
from automl.engines import (
    HYPERBAND_MIN_EPOCHS,
    MAX_CONSECUTIVE_FAILURES,
    MemberOutcome,
    RemoteWorkers,
    SearchData,
    SearchJob,
    TrialRecord,
    check_identity,
    progress_line,
    train_population,
    train_trial,
)
from automl.errors import FailedTrialError, InputError
from automl.events import EventLog
from automl.population import SHARED
from automl.spaces import suggest

__all__ = ["search", "work", "open_study", "open_storage", "param_importances", "StopRule", "RECYCLE_EXIT",
           "HEARTBEAT_SECONDS", "SUPPORTS_WORKERS"]

SUPPORTS_WORKERS = True
#: A worker process exits with this code after its share of trials, to be replaced by a fresh one
#: (one process grows 5-9 MB per trial).
RECYCLE_EXIT = 3
#: Trials per worker process before it is recycled.
TRIALS_PER_PROCESS = 25
#: RDB heartbeats: a trial without one for GRACE seconds is failed and retried.
HEARTBEAT_SECONDS = 5
GRACE_SECONDS = 20
#: How often a worker whose remaining trials all run elsewhere looks at the study again.
CLAIMED_WAIT_SECONDS = 1.0
#: Seconds past the trials' deadline that remote workers get to record their last trial and end.
REMOTE_GRACE_SECONDS = 15
_INTERRUPTED = "interrupted"
#: Set on a trial that a parallel worker started after others had claimed the last of ``max_trials``.
_SURPLUS = "surplus"
#: Set on a trial whose configuration another trial already ran or runs: it trains nothing and is not listed.
_DUPLICATE = "duplicate_of"
#: Stop when the sampler repeats itself this often in a row (a small space, fully explored).
MAX_REPEATS = 25
_IDENTITY = "identity"
#: A remote worker's name on its trials (its Prefect flow run), beside the ``worker`` (host:pid) attribute.
_LABEL = "worker_label"
#: What the members of a population round share: one batch size (one graph steps them all), one width, since
#: every member costs what the population's widest does (a 256-wide member makes 16-wide ones cost 256²), and
#: their inputs (:data:`automl.population.SHARED`: one input matrix, one embedding layout).
ROUND_SHARES = ("batch_size", "units", *SHARED)
#: A round is not started, nor a trial asked for it, closer than this to the trials' deadline.
MIN_ROUND_SECONDS = 3.0
#: Trials TPE draws at random before it models the space.
TPE_STARTUP = 8
#: A population round admits new members into freed slots for this share of the trials' time left at its start,
#: then drains: the next round may then draw other :data:`ROUND_SHARES`. Mean best validation AUC on diabetes,
#: 60 s, seeds 1-6 (bench/engines.py's search): 0.8432 with 1/3, 0.8449 with 1/2, 0.8425 with 2/3; one trial
#: at a time 0.8438 (a seed's best varies by ±0.006: the shares are within noise of each other).
REFILL_SHARE = 1 / 2
#: ... and at most this many times its size: rounds turn over, and each may try other shares (see
#: :func:`_explore_shares`). With the time share alone one round admitted all 32 trials of a 43 s search on Pima.
ROUND_ADMITS = 2
#: The order in which :func:`_explore_shares` tries a shared option's untried values: cheapest round first.
_CHEAPEST_FIRST: dict[str, Callable[[Any], Any]] = {"batch_size": lambda size: -size, "units": lambda units: units}
#: Set on a population member that the deadline stopped before it was trained enough to rank (told pruned).
_CUT = "cut_by_deadline"
#: A population member's share of its round's training time (the round's wall time is every member's duration).
_SECONDS = "train_seconds"


def open_study(storage_url: str | None, storage_dir: Path, study_name: str, job: SearchJob | None = None,
               worker: int = 0) -> Any:
    """Create or load the study (``job=None``: load only, it must exist).

    Worker ``i`` samples with seed ``seed + i`` (distinct proposals, reproducible for a
    given worker count) and, one trial at a time, the constant-liar TPE, which counts
    running trials as proposals already taken. Resuming a study whose identity (task, metric, direction,
    seed, protocol, space version) differs from ``job``'s is refused.
    """
    import optuna

    optuna.logging.set_verbosity(logging.ERROR)  # failed trials are recorded in trials.csv
    storage = open_storage(storage_url, storage_dir)
    seed = (job.config.seed if job is not None else 0) + worker
    max_epochs = job.max_epochs if job is not None else 100
    # The constant liar counts running trials as bad results, so that parallel workers do not propose alike. A
    # population round asks its P trials together: the liar then spreads them over the space, away from the
    # best results, so populations go without it (bench/engines.py on diabetes, mean best validation AUC of 3
    # seeds at 60 s: 0.8278 with it, 0.8347 without; the second pair was measured with lr_schedule and
    # label_smoothing in the space, where one-at-a-time search got 0.8304 against 0.8323 without them;
    # duplicates are still refused by the check in _ask). Parallel workers keep it whatever they train: it is what
    # keeps them from proposing alike.
    settings = None if job is None else job.config.search
    liar = settings is None or settings.population == 1 or settings.processes > 1 or settings.fan_out > 0 \
        or bool(settings.storage)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP, constant_liar=liar)
    pruner = optuna.pruners.HyperbandPruner(min_resource=HYPERBAND_MIN_EPOCHS, max_resource=max_epochs,
                                            reduction_factor=3)
    if job is None:
        return optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
    study = optuna.create_study(storage=storage, study_name=study_name, load_if_exists=True, sampler=sampler,
                                pruner=pruner, direction="maximize" if job.metric.higher_is_better else "minimize")
    _check_identity(study, job)
    return study


def _check_identity(study: Any, job: SearchJob) -> None:
    """Tag a new study with the job's identity; refuse to mix an existing study with another one."""
    known = study.user_attrs.get(_IDENTITY)
    if known is None and study.trials:  # a study of an older version: what it searched for is unknown
        raise InputError(f"study {study.study_name!r} has trials but no recorded identity; use a new --project "
                         "or --output")
    check_identity(study.study_name, known, job)
    if known is None:
        study.set_user_attr(_IDENTITY, job.identity)


def open_storage(storage_url: str | None, storage_dir: Path) -> Any:
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

    def __init__(self, budget: Budget, job: SearchJob) -> None:
        self.budget, self.max_trials, self.policy = budget, job.config.search.max_models, job.stop

    def reason(self, trials: list[Any], ahead: float = 0.0) -> str | None:
        """Why to stop now (or ``ahead`` seconds from now, as far as time goes), or None to go on."""
        finished = [t for t in _counted(trials) if t.state.is_finished()]
        if self.max_trials is not None and len(finished) >= self.max_trials:
            return f"{self.max_trials} trials done"
        tail = [_DUPLICATE in t.user_attrs for t in trials if t.state.is_finished()][-MAX_REPEATS:]
        if len(tail) == MAX_REPEATS and all(tail):
            return f"the sampler proposed {MAX_REPEATS} configurations in a row that already ran: the space is spent"
        tail = [t.state.name for t in finished[-MAX_CONSECUTIVE_FAILURES:]]
        if len(tail) == MAX_CONSECUTIVE_FAILURES and set(tail) == {"FAIL"}:
            return f"{MAX_CONSECUTIVE_FAILURES} trials in a row failed; see the error column of trials.csv"
        # Only completed trials say how long a refit takes; pruned ones stop early.
        durations = [_seconds(t) for t in finished if t.state.name == "COMPLETE" and t.duration]
        budget = self.budget if not ahead else replace(self.budget, clock=lambda: self.budget.clock() + ahead)
        if search_should_stop(budget, durations, self.policy.refit_trials, self.policy.finish_seconds,
                              self.policy.keep_share):
            return "time budget"
        return None

    def trial_deadline(self) -> float:
        """When trials end: the search never spends the time kept for refits and outputs."""
        return search_deadline(self.budget, self.policy.finish_seconds, self.policy.keep_share)

    def all_claimed(self, trials: list[Any]) -> bool:
        """Every one of ``max_trials`` is finished or running somewhere."""
        return self.max_trials is not None and len(_claimed(trials)) >= self.max_trials


def _claimed(trials: list[Any]) -> list[Any]:
    return [t for t in _counted(trials) if t.state.name != "WAITING"]


def _counted(trials: list[Any]) -> list[Any]:
    """Trials that count toward ``max_trials``: not interrupted (they are retried), not surplus, not duplicates."""
    retried = _retried_numbers(trials)
    return [t for t in trials if not _interrupted(t, retried) and not t.user_attrs.get(_SURPLUS)
            and _DUPLICATE not in t.user_attrs]


def _retried_numbers(trials: list[Any]) -> set[int]:
    """Numbers of trials that Optuna's heartbeat callback failed and queued again (``retry_history``)."""
    return {number for t in trials for number in t.system_attrs.get("retry_history", ())}


def _interrupted(trial: Any, retried: set[int]) -> bool:
    """A trial whose process died: it is retried, so it is not a result (nor counted as one)."""
    return trial.state.name == "FAIL" and (bool(trial.user_attrs.get(_INTERRUPTED)) or trial.number in retried)


def _claiming(study: Any) -> list[Any]:
    """The study's trials that claim a configuration or a place in ``max_trials``: running or finished."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED,
                                                    TrialState.FAIL))


def _duplicate_of(number: int, params: dict[str, Any], trials: list[Any]) -> int | None:
    """The number of an earlier trial (running or finished, not interrupted) with exactly these parameters."""
    retried = _retried_numbers(trials)
    for other in _counted(trials):
        if other.number < number and other.params == params and not _interrupted(other, retried):
            return other.number
    return None


class _Claims:
    """What every trial of this process does before it trains: carry its worker's name, and not train when it
    repeats another trial or would exceed ``--max-models``."""

    def __init__(self, job: SearchJob, orphan_check: bool, label: str | None) -> None:
        self.owner, self.label = f"{socket.gethostname()}:{os.getpid()}", label or ""
        self.parent, self.orphan_check = os.getppid(), orphan_check
        self.max_trials = job.config.search.max_models

    def tag(self, trial: Any) -> None:
        trial.set_user_attr("worker", self.owner)
        trial.set_user_attr(_LABEL, self.label)  # a retried trial carries its first worker's attributes

    def skip(self, trial: Any, params: dict[str, Any], known: list[Any] | None = None) -> str | None:
        """Why ``trial`` must not train (``_DUPLICATE`` or ``_SURPLUS``, tagged on it), or None to train it.

        ``known``: the study's claiming trials, when the caller keeps them (a round asks many trials at once).
        """
        known = _claiming(trial.study) if known is None else known
        same = _duplicate_of(trial.number, params, known)
        if same is not None:  # constant-liar TPE makes this rare; a repeat would only cost time
            trial.set_user_attr(_DUPLICATE, same)
            return _DUPLICATE
        # Parallel workers must not overshoot --max-models: the first max_trials trials by number run.
        if self.max_trials is not None and len([t for t in _counted(known) if t.number < trial.number]) \
                >= self.max_trials:
            trial.set_user_attr(_SURPLUS, True)
            return _SURPLUS
        return None

    def guard(self) -> None:
        """Exit if the supervisor died (kill -9): do not run orphaned."""
        if self.orphan_check and os.getppid() != self.parent:
            raise SystemExit(1)


def _objective(job: SearchJob, data: SearchData, deadline: float, claims: _Claims) -> Callable[[Any], float]:
    import optuna

    def objective(trial: optuna.Trial) -> float:
        claims.tag(trial)
        params = suggest(job.space, trial)
        why = claims.skip(trial, params)
        if why is not None:
            if why == _SURPLUS:
                trial.study.stop()
            raise optuna.TrialPruned()
        return _train_alone(trial, params, job, data, deadline, claims)

    return objective


def _train_alone(trial: Any, params: dict[str, Any], job: SearchJob, data: SearchData, deadline: float,
                 claims: _Claims) -> float:
    """Train one trial with the one-at-a-time trainer; raises ``TrialPruned`` or :class:`FailedTrialError`."""
    import optuna

    def report(value: float, epoch: int) -> None:
        claims.guard()
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()

    deadline = model_deadline(deadline, job.config.search.max_runtime_secs_per_model)
    started = time.monotonic()
    try:
        value, best_epoch = train_trial(params, data, job.metric, job.config.seed + trial.number, report, deadline,
                                        job.max_epochs, name=f"trial_{trial.number}")
    except optuna.TrialPruned:
        raise
    except Exception as exc:  # any failure of one trial is recorded; the search goes on
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
        raise FailedTrialError(str(exc)) from exc
    finally:
        # Its own training time: a round's trial trained alone was asked with the round, and waited for the others.
        trial.set_user_attr(_SECONDS, round(time.monotonic() - started, 3))
    trial.set_user_attr("best_epoch", best_epoch)
    return value


def population_size(job: SearchJob, data: SearchData | None) -> int | None:
    """Members per round: ``--population``; 1 where populations do not apply (CNNs, TensorBoard logs: one log
    per trial, a mirrored or TPU strategy: each network across its devices); None: each round chooses
    (:func:`automl.population.choose_size`)."""
    if data is None or data.family != "mlp" or data.log_dir is not None or distributed():
        return 1
    return job.config.search.population


def work(study: Any, job: SearchJob, data: SearchData, stop: StopRule, *, n_trials: int | None = None,
         on_trial: Callable[[Any, Any], None] | None = None, orphan_check: bool = False,
         label: str | None = None, events: EventLog | None = None) -> str | None:
    """Run trials in this process until ``stop`` says so or ``n_trials`` ran; return the stop reason.

    Trials train one at a time or in rounds (:func:`population_size`); ``n_trials`` counts
    trainings (a population is one: it builds one graph).
    ``orphan_check``: exit if the parent process dies (for workers a supervisor started).
    ``label``: this worker's name on its trials (a remote worker's flow run).
    ``events``: where a retried trial is reported (the run's event log, when trials run in its process).
    """
    reason: str | None = stop.reason(study.trials)

    def after_trial(study: Any, trial: Any) -> None:
        nonlocal reason
        if on_trial is not None:
            on_trial(study, trial)
        reason = stop.reason(study.trials)
        if reason is not None:
            with contextlib.suppress(RuntimeError):  # outside optimize (a population round) there is nothing to stop
                study.stop()

    claims = _Claims(job, orphan_check, label)
    size = population_size(job, data)
    if reason is None and size == 1:
        study.optimize(_objective(job, data, stop.trial_deadline(), claims), n_trials=n_trials,
                       timeout=stop.budget.left(), catch=(FailedTrialError,), callbacks=[after_trial],
                       gc_after_trial=False)
    rounds = 0
    while reason is None and size != 1 and (n_trials is None or rounds < n_trials):
        if time.monotonic() >= stop.trial_deadline() - MIN_ROUND_SECONDS:
            reason = "time budget"  # too late for a round: what is left is the refits' and the outputs'
            break
        if stop.all_claimed(study.trials):
            # The trials left run elsewhere: a round would only ask surplus ones (a resumed run asked 550 in 68 s).
            # A journal has no heartbeats: a trial whose process was killed between creating and tagging it is
            # retried here once its grace is over (see _owner_gone), not only when the study is opened.
            if job.config.search.storage is None:
                _retry_interrupted(study, _owner_gone, events)
            time.sleep(CLAIMED_WAIT_SECONDS)
            reason = stop.reason(study.trials)
            continue
        # With the size chosen per round, TPE's random first trials train alone: a round fixes its members' batch
        # size and width, and rounds from the first trial on had all searched the first warm start's (Pima:
        # 158 trials at width 64, where one-at-a-time search found its best at 16).
        startup = size is None and len([t for t in _counted(study.trials) if t.state.is_finished()]) < TPE_STARTUP
        _round(study, job, data, 1 if startup else size, stop, claims,
               None if on_trial is None else lambda: on_trial(study, None))
        after_trial(study, None)  # once per round: the stop rule and progress read the whole study
        rounds += 1
    if reason is None and stop.all_claimed(study.trials):
        reason = "the last trials run in other workers"
    return reason


def _round(study: Any, job: SearchJob, data: SearchData, size: int | None, stop: StopRule, claims: _Claims,
           told: Callable[[], None] | None = None) -> None:
    """One round: ask a trial; choose how many more share its batch size and width (``size``, else from the
    time left, :func:`automl.population.choose_size`); train them as one population and tell each result.
    When fewer than :data:`automl.population.MIN_SIZE` would fit, the trial trains alone. While the round
    admits (:data:`REFILL_SHARE`), each member that ends is replaced by a new trial; ``told()`` follows each tell."""
    _fail_stale(study)
    # One heartbeat thread for every trial of the round, from its ask to its tell (RDB storage).
    with _Heartbeats(study) as beats:
        _round_of(study, job, data, size, stop, claims, beats, told)


def _round_of(study: Any, job: SearchJob, data: SearchData, size: int | None, stop: StopRule, claims: _Claims,
              beats: _Heartbeats, told: Callable[[], None] | None) -> None:
    from automl.population import choose_size

    known = _claiming(study)
    _explore_shares(study, job, known)
    first = _ask(study, job, claims, known, beats)
    if first is None:
        return
    deadline = stop.trial_deadline()
    left = None if stop.max_trials is None else stop.max_trials - len(_counted([t for t in known
                                                                               if t.number < first[0].number]))
    if size is None:
        size = choose_size(first[1], len(data.x_train), data.x_train.shape[1], deadline - time.monotonic(),
                           _flops(), limit=left)
    if size == 1:
        _tell_alone(study, *first, job, data, deadline, claims)
        return
    asked = [first] + _ask_batch(study, job, min(size, left or size) - 1, first[1], stop, claims, known, beats)
    groups: dict[tuple[Any, ...], list[tuple[Any, dict[str, Any]]]] = {}
    for trial, params in asked:  # a worker's batch may pick up other queued trials (warm starts, retries)
        groups.setdefault(tuple(params.get(name) for name in ROUND_SHARES), []).append((trial, params))
    # Queued trials of other shares (warm starts, retries) train first, as they are; the round's own group then
    # takes new members into its freed slots while it admits.
    *others, main = sorted(groups.values(), key=len)
    for members in others:
        if len(members) == 1:  # the one-at-a-time trainer is the faster one for a single network
            _tell_alone(study, *members[0], job, data, deadline, claims)
        else:
            _train_members(study, job, data, members, deadline, claims, None, told)
    admit_until = min(time.monotonic() + REFILL_SHARE * (deadline - time.monotonic()), deadline - MIN_ROUND_SECONDS)
    refill = _refill(study, job, main[0][1], admit_until, stop, claims, known, beats,
                     admits=ROUND_ADMITS * len(main))
    _train_members(study, job, data, main, deadline, claims, refill, told)


def _refill(study: Any, job: SearchJob, shared: dict[str, Any], admit_until: float, stop: StopRule, claims: _Claims,
            known: list[Any], beats: _Heartbeats, admits: int) -> Callable[[], tuple[Any, dict[str, Any]] | None]:
    """``ask()``: a new trial with ``shared``'s :data:`ROUND_SHARES` for a freed slot of a round, or None once the
    round admits no more (``admits`` members, ``admit_until``, the stop rule, ``--max-models``, or trials queued
    for the next round)."""
    import optuna
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState

    fixed = _shares(shared)
    with warnings.catch_warnings():  # "experimental" since Optuna 2.4: not the user's concern
        warnings.simplefilter("ignore", ExperimentalWarning)
        partial = optuna.samplers.PartialFixedSampler(fixed, study.sampler)

    def ask() -> tuple[Any, dict[str, Any]] | None:
        # A dead worker's trial is failed and queued again here too, not only as a round starts: its retry then
        # waits for this round to drain, not for its admission to end (half the time left, minutes on long runs).
        _fail_stale(study)
        nonlocal admits
        trials = study.get_trials(deepcopy=False)
        if admits <= 0 or time.monotonic() >= admit_until or stop.reason(trials) is not None \
                or stop.all_claimed(trials) or any(t.state == TrialState.WAITING for t in trials):
            return None
        admits -= 1
        for _ in range(MAX_REPEATS):  # a repeat is refused (told pruned): ask again
            # TPE draws the rest (not a queued trial: another worker could take it, and this one a stranger).
            sampler, study.sampler = study.sampler, partial
            try:
                member = _ask(study, job, claims, known, beats)
            finally:
                study.sampler = sampler
            if member is not None and any(member[1][name] != value for name, value in fixed.items()):
                _hand_back(study, *member)  # a trial another worker queued just now: it trains elsewhere
                return None
            if member is not None:
                return member
        return None

    return ask


def _tell_alone(study: Any, trial: Any, params: dict[str, Any], job: SearchJob, data: SearchData, deadline: float,
                claims: _Claims) -> None:
    """Train one trial of a round with the one-at-a-time trainer, and tell its result."""
    import optuna
    from optuna.trial import TrialState

    try:
        study.tell(trial, _train_alone(trial, params, job, data, deadline, claims))
    except FailedTrialError:
        study.tell(trial, state=TrialState.FAIL)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)


def _hand_back(study: Any, trial: Any, params: dict[str, Any]) -> None:
    """Queue ``trial``'s parameters again for another round, and end it unlisted and uncounted."""
    from optuna.trial import TrialState

    trial.set_user_attr(_SURPLUS, True)
    study.tell(trial, state=TrialState.PRUNED)
    study.enqueue_trial(params)


def _flops() -> float:
    """Floating-point operations per second this process's populations get (for choosing a round's size)."""
    import tensorflow as tf

    from automl.population import FLOPS_PER_GPU, FLOPS_PER_THREAD

    if tf.config.list_logical_devices("GPU"):
        return FLOPS_PER_GPU
    return FLOPS_PER_THREAD * (tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1)


def _train_members(study: Any, job: SearchJob, data: SearchData, members: list[tuple[Any, dict[str, Any]]],
                   deadline: float, claims: _Claims,
                   refill: Callable[[], tuple[Any, dict[str, Any]] | None] | None = None,
                   told: Callable[[], None] | None = None) -> None:
    """Train trials that share a batch size and width as one population; tell each its result as it ends.

    ``refill()`` asks a new trial (or None) for each slot a member frees: the population stays full.
    """
    from optuna.exceptions import UpdateFinishedTrialError

    trials, ended = [t for t, _ in members], set()
    # A round's members (those a refill admits too) train no longer than the round: its deadline carries the cap.
    deadline = model_deadline(deadline, job.config.search.max_runtime_secs_per_model)

    def report(i: int, value: float, epoch: int) -> bool:
        claims.guard()
        trials[i].report(value, epoch)
        return trials[i].should_prune()

    def more() -> tuple[dict[str, Any], int] | None:
        member = refill() if refill is not None else None
        if member is None:
            return None
        trials.append(member[0])
        return member[1], job.config.seed + member[0].number

    def done(i: int, outcome: MemberOutcome) -> None:
        ended.add(i)
        with contextlib.suppress(UpdateFinishedTrialError):  # failed meanwhile (lost heartbeats) and retried
            _tell_member(study, trials[i], outcome, len(members))
        if told is not None:
            told()

    try:
        train_population([p for _, p in members], data, job.metric, [job.config.seed + t.number for t in trials],
                         report, deadline, job.max_epochs, more if refill is not None else None, done)
    except Exception as exc:  # the population as a whole failed (e.g. out of memory): each member still running did
        for i in (i for i in range(len(trials)) if i not in ended):
            done(i, MemberOutcome(None, 0, f"{type(exc).__name__}: {exc}"))


def _tell_member(study: Any, trial: Any, outcome: MemberOutcome, size: int) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr("population", size)
    # The refit's estimate and trials.csv read this, not the round's wall time that every member shares.
    trial.set_user_attr(_SECONDS, outcome.seconds)
    if outcome.error:
        trial.set_user_attr("error", outcome.error)
        study.tell(trial, state=TrialState.FAIL)
    elif outcome.pruned:
        if outcome.cut:
            trial.set_user_attr(_CUT, True)
        study.tell(trial, state=TrialState.PRUNED)
    else:
        trial.set_user_attr("best_epoch", outcome.best_epoch)
        study.tell(trial, outcome.value)


def _ask(study: Any, job: SearchJob, claims: _Claims, known: list[Any],
         beats: _Heartbeats) -> tuple[Any, dict[str, Any]] | None:
    """Ask one trial and draw its parameters; None (told pruned) when it repeats another or is surplus.

    ``known`` (the study's claiming trials, read once per round) gets the new trial: other workers' trials
    asked meanwhile are not seen (a rare repeat costs one member), and each read of a database study costs
    ~30 ms per hundred trials.
    """
    from types import SimpleNamespace

    from optuna.trial import TrialState

    with warnings.catch_warnings():  # "heartbeats are meant for optimize": this round keeps them itself
        warnings.simplefilter("ignore", UserWarning)
        trial = study.ask()
    beats.add(trial)  # at once: a worker killed while it asks leaves trials that are retried
    claims.tag(trial)
    params = suggest(job.space, trial)
    # In the snapshot before the checks: a retry's retry_history makes the trial it retries no duplicate.
    known.append(SimpleNamespace(number=trial.number, params=params, state=TrialState.RUNNING, user_attrs={},
                                 system_attrs=study._storage.get_trial_system_attrs(trial._trial_id)))
    if claims.skip(trial, params, known) is not None:
        study.tell(trial, state=TrialState.PRUNED)
        return None
    return trial, params


def _ask_batch(study: Any, job: SearchJob, size: int, shared: dict[str, Any], stop: StopRule, claims: _Claims,
               known: list[Any], beats: _Heartbeats) -> list[tuple[Any, dict[str, Any]]]:
    """Ask ``size`` trials with ``shared``'s :data:`ROUND_SHARES` (queued as fixed parameters, TPE samples the
    rest; a repeat is refused by the duplicate check). A skipped trial (a repeat or surplus, told pruned) ends
    the batch when the search should stop, as does the trials' deadline."""
    from optuna.trial import TrialState

    queued = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))  # warm starts, retries
    asked: list[tuple[Any, dict[str, Any]]] = []
    for k in range(size):
        if time.monotonic() >= stop.trial_deadline() - MIN_ROUND_SECONDS:
            break
        if k >= queued:
            study.enqueue_trial(_shares(shared))
        member = _ask(study, job, claims, known, beats)
        if member is not None:
            asked.append(member)
        elif stop.reason(trials := study.trials) is not None or stop.all_claimed(trials):
            break
    return asked


def _explore_shares(study: Any, job: SearchJob, known: list[Any]) -> None:
    """Fix the next round's untried :data:`ROUND_SHARES` options: TPE, seeing every member of a round share
    them, kept to the first round's (32 trials on Pima: every batch size 32, every input scaling standard).

    Each shared choice that has a value no trial has tried takes the cheapest such value
    (:data:`_CHEAPEST_FIRST`); the others are left to TPE. Nothing is fixed while queued trials (warm starts,
    retries) wait: they lead their rounds as they are.
    """
    from optuna.trial import TrialState

    if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return
    fixed = {}
    for name in ROUND_SHARES:
        choices = next((getattr(p, "choices", ()) for p in job.space if p.name == name), ())
        tried = {t.params.get(name) for t in known}
        # The cheapest untried value first (larger batches, narrower layers): on a short budget the round that
        # explores must not be the slowest one.
        untried = sorted((c for c in choices if c not in tried), key=_CHEAPEST_FIRST.get(name, lambda c: 0))
        if untried:
            fixed[name] = untried[0]
    if fixed:
        study.enqueue_trial(fixed)


def _shares(params: dict[str, Any]) -> dict[str, Any]:
    """``params``' values of :data:`ROUND_SHARES` (those its space has)."""
    return {name: params[name] for name in ROUND_SHARES if name in params}


class _Heartbeats:
    """Heartbeats for the trials of a round, from their ask to their tell (RDB storage; Optuna's own thread
    covers one trial of ``optimize``): a worker that dies stops them, and its trials are retried."""

    def __init__(self, study: Any) -> None:
        storage = study._storage
        interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
        self.storage, self.interval, self.ids = storage, interval, []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def add(self, trial: Any) -> None:
        """Beat for ``trial`` from now on (its first heartbeat at once)."""
        if self.interval:
            self.storage.record_heartbeat(trial._trial_id)
            self.ids.append(trial._trial_id)

    def _beat(self) -> None:
        while not self.done.wait(self.interval):
            for trial_id in list(self.ids):  # the round adds trials while this thread runs
                self.storage.record_heartbeat(trial_id)

    def __enter__(self) -> _Heartbeats:
        if self.interval:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join()


def _fail_stale(study: Any) -> None:
    """Fail (and queue again) trials whose heartbeats stopped: what ``optimize`` does before each trial."""
    import optuna
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():  # "experimental" since Optuna 2.9, as the heartbeats themselves
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def start(job: SearchJob, budget: Budget, events: EventLog) -> _Pool:
    """Open the study and start the worker processes now, before the search stage (none with one worker:
    trials then run in this process).

    Their start-up (TensorFlow's import, the data) then overlaps whatever the run does
    next; they run trials at once. :func:`search` supervises them. Remote workers join
    the study once it is open.
    """
    study = _open(job, events)
    pool = _Pool(study, job, events)
    if pool.size > 0:
        if job.spec is None:
            raise ValueError("search with workers > 1 needs the spec that worker processes rebuild the data from")
        pool.start_all(StopRule(budget, job))
    return pool


def search(job: SearchJob, data: SearchData | None, budget: Budget, events: EventLog, started: _Pool | None = None,
           remote: RemoteWorkers | None = None) -> list[TrialRecord]:
    """Run trials until the budget, ``max_models`` or the failure limit says stop.

    With more than one worker, ``job.spec`` lets worker processes build their search split
    (``data`` is then not needed: None); ``started`` is what :func:`start` returned, if it ran.
    ``remote`` workers are waited for (their last trials count) and then cancelled.
    """
    stop = StopRule(budget, job)
    pool = started or start(job, budget, events)
    study = pool.study
    progress = _Progress(study, job, budget, events, pool.created)
    if pool.size == 0 and job.config.search.n_workers == 1:
        reason = work(study, job, data, stop, on_trial=lambda s, t: progress.show(), events=events)
    elif pool.size > 0:
        reason = pool.supervise(stop, progress)
    else:  # no trials here (--workers 0): the remote workers run them all
        reason = None
    if remote is not None:
        _end_remote(remote, study, stop, progress, events)
        reason = stop.reason(study.trials) or reason
    (events.warn if reason and "failed" in reason else events.add)("search", f"search stopped: "
                                                                            f"{reason or 'time budget'}")
    listed = _listed(study.trials)
    if remote is not None or pool.size > 0:
        counts = Counter(_worker_name(t) for t in listed)
        events.add("search", "trials per worker: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    retries = {t.system_attrs["failed_trial"]: t.number for t in study.trials if "failed_trial" in t.system_attrs}
    return [_record(t, retries.get(t.number)) for t in listed]


_READERS: dict[tuple[str, str], Any] = {}


def trials(job: SearchJob) -> list[TrialRecord]:
    """The study's trials as they stand now, read from its storage while workers run them (the scheduler polls
    this between jobs: one study object per storage is kept, so that a journal is read on from where it was)."""
    storage = job.config.search.storage or str(job.storage_dir / "study.journal")
    key = (storage, job.study_name)
    if key not in _READERS:
        _READERS[key] = open_study(job.config.search.storage, job.storage_dir, job.study_name)
    return [_record(t) for t in _listed(_READERS[key].get_trials(deepcopy=False))]


def _end_remote(remote: RemoteWorkers, study: Any, stop: StopRule, progress: _Progress, events: EventLog) -> None:
    """Wait until the search is done (the remote workers decide by the same rule), then for their last trials
    (cut at the trials' deadline), then cancel what still runs.

    Queued workers are cancelled first (they would only start after the search); one whose trial lost its
    heartbeat is marked crashed at once (its machine is gone: nothing would answer a cancellation).
    """
    while remote.active() and stop.reason(study.trials) is None and not stop.all_claimed(study.trials):
        time.sleep(1.0)
        progress.show()
    remote.cancel(remote.pending())
    until = max(stop.trial_deadline(), time.monotonic()) + REMOTE_GRACE_SECONDS
    winding_down = False
    while (active := remote.active()) and time.monotonic() < until:
        dead = active & _lost(study)
        if dead:
            remote.crashed(dead, "its trial stopped sending heartbeats (the worker or its machine died)")
        elif not any(t.state.name == "RUNNING" for t in study.get_trials(deepcopy=False)):
            # Every trial is told (a dead worker's stays RUNNING until its heartbeat is missed): what still runs
            # is a flow run ending by itself (the stop rule has spoken), which took up to 9 s more, and a
            # cancellation 8 s: time the refits need. It is not waited for.
            winding_down = True
            break
        time.sleep(1.0)
        progress.show()
    if not winding_down and (active := remote.active()):
        events.warn("search", f"{len(active)} remote worker(s) still running {REMOTE_GRACE_SECONDS}s after "
                              "the trials' deadline; cancelling them")
        remote.cancel(active)
    progress.show()
    states = remote.states()
    fine = ("Completed", "Cancelled", "Running") if winding_down else ("Completed", "Cancelled")
    (events.add if all(s in fine for s in states.values()) else events.warn)(
        "search", "remote workers: " + ", ".join(f"{name} {state}" for name, state in sorted(states.items()))
        + (" (the running ones end by themselves: every trial is told)" if "Running" in states.values() else ""))


def _lost(study: Any) -> set[str]:
    """Labels of workers whose last trial was failed for a missing heartbeat (checked now, RDB storage only)."""
    _fail_stale(study)
    trials = study.get_trials(deepcopy=False)
    retried = _retried_numbers(trials)
    last: dict[str, Any] = {}
    for t in trials:
        if t.user_attrs.get(_LABEL):
            last[t.user_attrs[_LABEL]] = t
    return {label for label, t in last.items() if t.state.name == "FAIL" and t.number in retried}


def _worker_name(trial: Any) -> str:
    return str(trial.user_attrs.get(_LABEL) or trial.user_attrs.get("worker", ""))


def _open(job: SearchJob, events: EventLog) -> Any:
    """The job's study, resumed (interrupted trials queued again) or new (warm starts queued)."""
    settings = job.config.search
    study = open_study(settings.storage, job.storage_dir, job.study_name, job)
    if study.trials:
        events.add("search", f"resuming study {job.study_name} with {len(study.trials)} earlier trials")
        if settings.storage is None:
            # A journal has no heartbeats: a trial left RUNNING by a process that is gone is retried.
            _retry_interrupted(study, _owner_gone, events)
    else:
        for params in job.warm_starts:
            study.enqueue_trial(params)
    if job.spec is not None:
        study.set_user_attr("spec", job.spec)
    return study


def _listed(trials: list[Any]) -> list[Any]:
    """Finished trials for ``trials.csv``: not surplus, not skipped duplicates."""
    return [t for t in trials if t.state.is_finished() and not t.user_attrs.get(_SURPLUS)
            and _DUPLICATE not in t.user_attrs]


def _owner_gone(trial: Any) -> bool:
    """A RUNNING trial whose process is dead: tagged by a process of this host that no longer runs, or never
    tagged and older than the heartbeat grace (its process died between creating and tagging it)."""
    owner = trial.user_attrs.get("worker")
    if owner is None:
        start = trial.datetime_start
        return start is None or (datetime.now() - start).total_seconds() > GRACE_SECONDS
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return False  # another machine's process: a journal is not shared across machines, so leave it be
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


class _Pool:
    """The job's worker processes: started, recycled and restarted until the search is done."""

    def __init__(self, study: Any, job: SearchJob, events: EventLog) -> None:
        settings = job.config.search
        self.study, self.events, self.size, self.created = study, events, settings.processes, datetime.now()
        # A background worker leaves the run's process a core of its own: the cores are never oversubscribed.
        threads = max(1, (usable_cores() - int(settings.background)) // max(self.size, 1))
        self.command = [sys.executable, "-m", "automl.worker", "--study", job.study_name, "--threads", str(threads),
                        "--storage", settings.storage or str(job.storage_dir / "study.journal"), "--supervised"]
        self.logs = job.storage_dir / "workers"
        self.procs: dict[int, subprocess.Popen] = {}
        self.started: dict[int, datetime] = {}  # pid -> when it was started, until its first trial shows
        self.startup = 0.0  # seconds from starting a worker to its first trial (TensorFlow import, data)
        self.threads = threads
        self._supervised = threading.Event()  # set when supervise() takes over from the keep-alive thread
        self._keeper: threading.Thread | None = None
        self.stop: StopRule | None = None

    def start(self, slot: int, trials: int = TRIALS_PER_PROCESS) -> None:
        # Worker output (TensorFlow's start-up chatter, tracebacks) goes to a log file, not the user's terminal.
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"worker-{slot}.log", "ab") as log:
            self.procs[slot] = subprocess.Popen([*self.command, "--trials", str(trials), "--index", str(slot)],
                                                stdout=log, stderr=subprocess.STDOUT)
        self.started[self.procs[slot].pid] = datetime.now()  # the clock of Optuna's datetime_start

    def start_all(self, stop: StopRule) -> None:
        self.stop = stop
        if stop.reason(self.study.trials) is not None:
            return
        for slot in range(self.size):
            # Stagger the first recycling, so that workers do not all restart (and idle) at once.
            self.start(slot, max(1, TRIALS_PER_PROCESS * (slot + 1) // self.size))
        self.events.add("search", f"{len(self.procs)} worker processes started, {self.threads} TensorFlow "
                                  f"thread(s) each; logs in {self.logs}")
        self._keeper = threading.Thread(target=self._keep_alive, args=(stop,), daemon=True)
        self._keeper.start()

    def running(self) -> bool:
        """The search goes on: a worker process is alive, or the stop rule says go on (a recycled worker is
        about to be replaced). Without local workers (``--workers 0``), remote ones decide: assumed running."""
        return self.size == 0 or any(proc.poll() is None for proc in self.procs.values()) or (
            self.stop is not None and self.stop.reason(self.study.trials) is None)

    def supervise(self, stop: StopRule, progress: _Progress) -> str | None:
        """Keep the workers running until the search is done; return the stop reason."""
        self._supervised.set()  # from here on this loop replaces workers, not the keep-alive thread
        if self._keeper is not None:
            self._keeper.join()
        while self.procs:
            time.sleep(0.5)
            progress.show()
            self._check(stop)
        progress.show()
        return stop.reason(self.study.trials)

    def _keep_alive(self, stop: StopRule) -> None:
        """Until :meth:`supervise` runs, replace the workers that recycle themselves (or die) meanwhile: while the
        reference models and the GBM search trained, recycled workers had stayed gone (Pima at 120 s: no network
        trained from 40 s to 70 s, 147 % CPU in the search instead of ~195 %)."""
        while not self._supervised.wait(1.0):
            self._check(stop)

    def _check(self, stop: StopRule) -> None:
        """One look at the workers: kill the hung ones past the deadline, retry and replace the exited ones."""
        trials = self.study.trials
        reason = stop.reason(trials)
        self._note_startup(trials)
        for slot, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                # At the deadline a worker still starting up has nothing to finish; one in a trial
                # gets GRACE_SECONDS (its trial ends at the deadline), after which it hangs.
                late = GRACE_SECONDS if proc.pid not in self.started else 0.0
                if stop.budget.left() <= 0 and time.monotonic() > stop.budget.deadline + late:
                    proc.kill()
                continue
            del self.procs[slot]
            never_ran = self.started.pop(proc.pid, None) is not None
            if never_ran and stop.budget.left() <= 0:
                continue  # stopped at the deadline before its first trial: nothing to retry or replace
            self._after_exit(slot, proc, code, reason is None and stop.reason(trials, ahead=self.startup) is None)

    def _note_startup(self, trials: list[Any]) -> None:
        if self.started:
            # From the trials' own start times: workers may run trials long before this supervisor first looks
            # (they start while the reference models train), and that wait is no part of their start-up.
            first: dict[str, datetime] = {}
            for t in trials:
                owner = t.user_attrs.get("worker")
                if owner is not None and t.datetime_start is not None:
                    first[owner] = min(first.get(owner, t.datetime_start), t.datetime_start)
            for pid in [p for p in self.started if f"{socket.gethostname()}:{p}" in first]:
                began = first[f"{socket.gethostname()}:{pid}"]
                self.startup = max(self.startup, (began - self.started.pop(pid)).total_seconds())

    def _after_exit(self, slot: int, proc: subprocess.Popen, code: int, replace_fits: bool) -> None:
        """Retry a dead worker's trial; replace a recycled or dead one if a new one is ready in time."""
        if code not in (0, RECYCLE_EXIT):
            self.events.warn("search", f"worker {proc.pid} exited with code {code} ({_last_line(self.logs, slot)}); "
                                       "retrying its trial")
            owner = f"{socket.gethostname()}:{proc.pid}"
            _retry_interrupted(self.study, lambda t, o=owner: t.user_attrs.get("worker") == o, self.events)
        if code == 2:  # the worker could not load the data: a replacement would fail alike
            self.events.warn("search", f"worker {proc.pid} could not start: {_last_line(self.logs, slot)}")
        elif code != 0:
            # A replacement that would only be ready when the search is over just delays its end.
            if replace_fits:
                self.start(slot)
            else:
                self.events.add("search", f"worker {proc.pid} not replaced: the search ends before a new one "
                                          f"would be ready ({self.startup:.0f}s)")


def _last_line(logs: Path, slot: int) -> str:
    """The last line a worker wrote that is not TensorFlow start-up noise."""
    try:
        lines = (logs / f"worker-{slot}.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return next((line for line in reversed(lines) if line.startswith("error:")), lines[-1] if lines else "no output")


def _retry_interrupted(study: Any, belongs: Callable[[Any], bool], events: EventLog | None) -> None:
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
        if events is not None:
            events.warn("search", f"trial {trial.number} was interrupted; its configuration is queued again")


class _Progress:
    """Progress lines for this run's trials (started at ``since`` or later) as they finish, in any process."""

    def __init__(self, study: Any, job: SearchJob, budget: Budget, events: EventLog, since: datetime) -> None:
        self.study, self.job, self.budget, self.events = study, job, budget, events
        self.seen = {t.number for t in study.trials if t.state.is_finished() and t.datetime_start is not None
                     and t.datetime_start < since}

    def show(self) -> None:
        trials = self.study.trials
        for trial in _listed(trials):
            if trial.number in self.seen:
                continue
            self.seen.add(trial.number)
            done = len([t for t in _counted(trials) if t.state.is_finished() and t.number <= trial.number])
            self.events.add("search", progress_line(trial.number, trial.state.name, self.job.metric, trial.value,
                                                    _best_value(self.study), self.budget.left(), done,
                                                    self.job.config.search.max_models))


def param_importances(job: SearchJob) -> dict[str, float] | None:
    """Optuna's hyperparameter importances (fANOVA) of the study, or None with too few trials."""
    import optuna

    storage_url = job.config.search.storage
    if storage_url is None and not (job.storage_dir / "study.journal").exists():
        return None
    study = open_study(storage_url, job.storage_dir, job.study_name)
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


def _seconds(trial: Any) -> float:
    """What a finished trial cost: its own training time (a population member's share), else its duration."""
    if _SECONDS in trial.user_attrs:
        return float(trial.user_attrs[_SECONDS])
    return trial.duration.total_seconds() if trial.duration else float("nan")


def _record(trial: Any, retried_as: int | None = None) -> TrialRecord:
    duration = _seconds(trial)
    error = trial.user_attrs.get("error", "")
    if not error and retried_as is not None:  # failed by Optuna's heartbeat check, which records no reason
        error = f"interrupted: its worker stopped sending heartbeats; retried as trial {retried_as}"
    return TrialRecord(trial.number, trial.state.name, float("nan") if trial.value is None else trial.value,
                       int(trial.user_attrs.get("best_epoch", 0)), round(duration, 3), dict(trial.params),
                       error, _worker_name(trial))
