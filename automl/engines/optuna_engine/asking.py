"""Asking trials for a population round: each checked against the study (a repeat or surplus is told pruned),
all sharing the round's :data:`ROUND_SHARES`, which an unexplored round fixes cheapest-first."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl.engines.base import SearchJob
from automl.engines.optuna_engine.claims import Claims
from automl.engines.optuna_engine.ledger import StudyStop
from automl.engines.optuna_engine.recovery import Heartbeats
from automl.engines.optuna_engine.storage import snapshot
from automl.population import SHARED
from automl.spaces import suggest

__all__ = ["ROUND_SHARES", "MIN_ROUND_SECONDS", "Member", "ask", "ask_batch", "explore_shares", "shares"]

#: What the members of a population round share: one batch size (one graph steps them all), one width, since
#: every member costs what the population's widest does (a 256-wide member makes 16-wide ones cost 256²), and
#: their inputs (:data:`automl.population.SHARED`: one input matrix, one embedding layout).
ROUND_SHARES = ("batch_size", "units", *SHARED)
#: A round is not started, nor a trial asked for it, closer than this to the trials' deadline.
MIN_ROUND_SECONDS = 3.0
#: The order in which :func:`explore_shares` tries a shared option's untried values: cheapest round first.
_CHEAPEST_FIRST: dict[str, Callable[[Any], Any]] = {"batch_size": lambda size: -size, "units": lambda units: units,
                                                    "ensemble_size": lambda k: k}

#: A trial asked for a round, with its parameters.
Member = tuple[optuna.Trial, dict[str, Any]]


def ask(study: optuna.Study, job: SearchJob, claims: Claims, known: list[FrozenTrial],
        beats: Heartbeats) -> Member | None:
    """Ask one trial and draw its parameters; None (told pruned) when it repeats another or is surplus.

    ``known`` (the study's claiming trials, read once per round) gets the new trial: other workers' trials
    asked meanwhile are not seen (a rare repeat costs one member), and each read of a database study costs
    ~30 ms per hundred trials.
    """
    with warnings.catch_warnings():  # "heartbeats are meant for optimize": this round keeps them itself
        warnings.simplefilter("ignore", UserWarning)
        trial = study.ask()
    beats.add(trial)  # at once: a worker killed while it asks leaves trials that are retried
    claims.tag(trial)
    params = suggest(job.space, trial)
    # In the snapshot before the checks: a retry's retry history makes the trial it retries no duplicate.
    known.append(snapshot(study, trial))
    if claims.skip(trial, params, known) is not None:
        study.tell(trial, state=TrialState.PRUNED)
        return None
    return trial, params


def ask_batch(study: optuna.Study, job: SearchJob, size: int, shared: dict[str, Any], stop: StudyStop,
              claims: Claims, known: list[FrozenTrial], beats: Heartbeats) -> list[Member]:
    """Ask ``size`` trials with ``shared``'s :data:`ROUND_SHARES` (queued as fixed parameters, TPE samples the
    rest; a repeat is refused by the duplicate check). A skipped trial (a repeat or surplus, told pruned) ends
    the batch when the search should stop, as does the trials' deadline."""
    queued = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))  # warm starts, retries
    asked: list[Member] = []
    for k in range(size):
        if time.monotonic() >= stop.trial_deadline() - MIN_ROUND_SECONDS:
            break
        if k >= queued:
            study.enqueue_trial(shares(shared))
        member = ask(study, job, claims, known, beats)
        if member is not None:
            asked.append(member)
        elif stop.reason(trials := study.trials) is not None or stop.all_claimed(trials):
            break
    return asked


def explore_shares(study: optuna.Study, job: SearchJob, known: list[FrozenTrial]) -> None:
    """Fix the next round's untried :data:`ROUND_SHARES` options: TPE, seeing every member of a round share
    them, kept to the first round's (32 trials on Pima: every batch size 32, every input scaling standard).

    Each shared choice that has a value no trial has tried takes the cheapest such value
    (:data:`_CHEAPEST_FIRST`); the others are left to TPE. Nothing is fixed while queued trials (warm starts,
    retries) wait: they lead their rounds as they are.
    """
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


def shares(params: dict[str, Any]) -> dict[str, Any]:
    """``params``' values of :data:`ROUND_SHARES` (those its space has)."""
    return {name: params[name] for name in ROUND_SHARES if name in params}
