"""Population rounds: trials that share a batch size and width train as one graph; each member that ends is told
at once, and while the round admits, a new trial takes its slot."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from automl.budget import model_deadline
from automl.engines.base import SearchData, SearchJob
from automl.engines.optuna_engine.asking import (
    MIN_ROUND_SECONDS,
    ROUND_SHARES,
    Member,
    ask,
    ask_batch,
    explore_shares,
    shares,
)
from automl.engines.optuna_engine.claims import Claims
from automl.engines.optuna_engine.ledger import Attr, Ledger, StudyStop, claiming
from automl.engines.optuna_engine.objective import train_alone
from automl.engines.optuna_engine.recovery import Heartbeats
from automl.engines.optuna_engine.storage import fail_stale
from automl.engines.stop import MAX_REPEATS
from automl.engines.trainers import MemberOutcome, train_population
from automl.errors import FailedTrialError

__all__ = ["run_round", "REFILL_SHARE", "ROUND_ADMITS"]

#: A population round admits new members into freed slots for this share of the trials' time left at its start,
#: then drains: the next round may then draw other :data:`ROUND_SHARES`. Mean best validation AUC on diabetes,
#: 60 s, seeds 1-6 (bench/engines.py's search): 0.8432 with 1/3, 0.8449 with 1/2, 0.8425 with 2/3; one trial
#: at a time 0.8438 (a seed's best varies by ±0.006: the shares are within noise of each other).
REFILL_SHARE = 1 / 2
#: ... and at most this many times its size: rounds turn over, and each may try other shares (see
#: :func:`~automl.engines.optuna_engine.asking.explore_shares`). With the time share alone one round admitted all
#: 32 trials of a 43 s search on Pima.
ROUND_ADMITS = 2

#: Asks a new trial for a freed slot, or None.
Refill = Callable[[], Member | None]


def run_round(study: optuna.Study, job: SearchJob, data: SearchData, size: int | None, stop: StudyStop,
              claims: Claims, told: Callable[[], None] | None = None) -> None:
    """One round: ask a trial; choose how many more share its batch size and width (``size``, else from the
    time left, :func:`automl.population.choose_size`); train them as one population and tell each result.
    When fewer than :data:`automl.population.MIN_SIZE` would fit, the trial trains alone. While the round
    admits (:data:`REFILL_SHARE`), each member that ends is replaced by a new trial; ``told()`` follows each tell."""
    fail_stale(study)
    # One heartbeat thread for every trial of the round, from its ask to its tell (RDB storage).
    with Heartbeats(study) as beats:
        _round_of(study, job, data, size, stop, claims, beats, told)


def _round_of(study: optuna.Study, job: SearchJob, data: SearchData, size: int | None, stop: StudyStop,
              claims: Claims, beats: Heartbeats, told: Callable[[], None] | None) -> None:
    from automl.population import choose_size, trains_alone

    known = claiming(study)
    explore_shares(study, job, known)
    first = ask(study, job, claims, known, beats)
    if first is None:
        return
    deadline = stop.trial_deadline()
    left = None if stop.max_trials is None else \
        stop.max_trials - len(Ledger([t for t in known if t.number < first[0].number]).counted())
    if size is None:
        size = choose_size(first[1], len(data.x_train), data.x_train.shape[1], deadline - time.monotonic(),
                           _flops(), limit=left)
    if size == 1:
        _tell_alone(study, *first, job, data, deadline, claims)
        return
    asked = [first] + ask_batch(study, job, min(size, left or size) - 1, first[1], stop, claims, known, beats)
    groups: dict[tuple[Any, ...], list[Member]] = {}
    for trial, params in asked:  # a worker's batch may pick up other queued trials (warm starts, retries)
        groups.setdefault(tuple(params.get(name) for name in ROUND_SHARES), []).append((trial, params))
    # Queued trials of other shares (warm starts, retries) train first, as they are; the round's own group then
    # takes new members into its freed slots while it admits.
    *others, main = sorted(groups.values(), key=len)
    for members in [*others, main] if trains_alone(main[0][1]) else others:
        # The one-at-a-time trainer is the faster one for a single network, and the one of those that train alone.
        if len(members) == 1 or trains_alone(members[0][1]):
            for member in members:
                _tell_alone(study, *member, job, data, deadline, claims)
        else:
            _train_members(study, job, data, members, deadline, claims, None, told)
    if trains_alone(main[0][1]):
        return
    admit_until = min(time.monotonic() + REFILL_SHARE * (deadline - time.monotonic()), deadline - MIN_ROUND_SECONDS)
    refill = _refill(study, job, main[0][1], admit_until, stop, claims, known, beats,
                     admits=ROUND_ADMITS * len(main))
    _train_members(study, job, data, main, deadline, claims, refill, told)


def _refill(study: optuna.Study, job: SearchJob, shared: dict[str, Any], admit_until: float, stop: StudyStop,
            claims: Claims, known: list[FrozenTrial], beats: Heartbeats, admits: int) -> Refill:
    """``ask()``: a new trial with ``shared``'s :data:`ROUND_SHARES` for a freed slot of a round, or None once the
    round admits no more (``admits`` members, ``admit_until``, the stop rule, ``--max-models``, or trials queued
    for the next round)."""
    from optuna.exceptions import ExperimentalWarning

    fixed = shares(shared)
    with warnings.catch_warnings():  # "experimental" since Optuna 2.4: not the user's concern
        warnings.simplefilter("ignore", ExperimentalWarning)
        partial = optuna.samplers.PartialFixedSampler(fixed, study.sampler)

    def refill() -> Member | None:
        # A dead worker's trial is failed and queued again here too, not only as a round starts: its retry then
        # waits for this round to drain, not for its admission to end (half the time left, minutes on long runs).
        fail_stale(study)
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
                member = ask(study, job, claims, known, beats)
            finally:
                study.sampler = sampler
            if member is not None and any(member[1][name] != value for name, value in fixed.items()):
                _hand_back(study, *member)  # a trial another worker queued just now: it trains elsewhere
                return None
            if member is not None:
                return member
        return None

    return refill


def _tell_alone(study: optuna.Study, trial: optuna.Trial, params: dict[str, Any], job: SearchJob, data: SearchData,
                deadline: float, claims: Claims) -> None:
    """Train one trial of a round with the one-at-a-time trainer, and tell its result."""
    try:
        study.tell(trial, train_alone(trial, params, job, data, deadline, claims))
    except FailedTrialError:
        study.tell(trial, state=TrialState.FAIL)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)


def _hand_back(study: optuna.Study, trial: optuna.Trial, params: dict[str, Any]) -> None:
    """Queue ``trial``'s parameters again for another round, and end it unlisted and uncounted."""
    trial.set_user_attr(Attr.SURPLUS, True)
    study.tell(trial, state=TrialState.PRUNED)
    study.enqueue_trial(params)


def _flops() -> float:
    """Floating-point operations per second this process's populations get (for choosing a round's size)."""
    import tensorflow as tf

    from automl.population import FLOPS_PER_GPU, FLOPS_PER_THREAD

    if tf.config.list_logical_devices("GPU"):
        return FLOPS_PER_GPU
    return FLOPS_PER_THREAD * (tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1)


def _train_members(study: optuna.Study, job: SearchJob, data: SearchData, members: list[Member], deadline: float,
                   claims: Claims, refill: Refill | None = None, told: Callable[[], None] | None = None) -> None:
    """Train trials that share a batch size and width as one population; tell each its result as it ends.

    ``refill()`` asks a new trial (or None) for each slot a member frees: the population stays full.
    """
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


def _tell_member(study: optuna.Study, trial: optuna.Trial, outcome: MemberOutcome, size: int) -> None:
    trial.set_user_attr(Attr.POPULATION, size)
    # The refit's estimate and trials.csv read this, not the round's wall time that every member shares.
    trial.set_user_attr(Attr.TRAIN_SECONDS, outcome.seconds)
    if outcome.error:
        trial.set_user_attr(Attr.ERROR, outcome.error)
        study.tell(trial, state=TrialState.FAIL)
    elif outcome.pruned:
        if outcome.cut:
            trial.set_user_attr(Attr.CUT, True)
        study.tell(trial, state=TrialState.PRUNED)
    else:
        trial.set_user_attr(Attr.BEST_EPOCH, outcome.best_epoch)
        study.tell(trial, outcome.value)
