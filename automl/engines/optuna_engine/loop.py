"""The loop of one process: trials one at a time (``study.optimize``) or in population rounds, until the stop
rule or its share of trials says stop."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial

from automl.devices import distributed
from automl.engines.base import SearchData, SearchJob
from automl.engines.optuna_engine.asking import MIN_ROUND_SECONDS
from automl.engines.optuna_engine.claims import Claims
from automl.engines.optuna_engine.ledger import Ledger, StudyStop
from automl.engines.optuna_engine.objective import objective
from automl.engines.optuna_engine.policy import DEFAULT_POLICY, WorkerPolicy
from automl.engines.optuna_engine.recovery import owner_gone, retry_interrupted
from automl.engines.optuna_engine.rounds import run_round
from automl.engines.optuna_engine.study import TPE_STARTUP
from automl.errors import FailedTrialError
from automl.events import EventLog

__all__ = ["work", "population_size", "CLAIMED_WAIT_SECONDS"]

#: How often a worker whose remaining trials all run elsewhere looks at the study again.
CLAIMED_WAIT_SECONDS = 1.0

#: Called after each trial (with it) or round (with None).
OnTrial = Callable[[optuna.Study, FrozenTrial | None], None]


def population_size(job: SearchJob, data: SearchData | None) -> int | None:
    """Members per round: ``--population``; 1 where populations do not apply (CNNs, TensorBoard logs: one log
    per trial, a mirrored or TPU strategy: each network across its devices); None: each round chooses
    (:func:`automl.population.choose_size`)."""
    if data is None or data.family != "mlp" or data.log_dir is not None or distributed():
        return 1
    return job.config.search.population


def work(study: optuna.Study, job: SearchJob, data: SearchData, stop: StudyStop, *, n_trials: int | None = None,
         on_trial: OnTrial | None = None, orphan_check: bool = False, label: str | None = None,
         events: EventLog | None = None, policy: WorkerPolicy = DEFAULT_POLICY) -> str | None:
    """Run trials in this process until ``stop`` says so or ``n_trials`` ran; return the stop reason.

    Trials train one at a time or in rounds (:func:`population_size`); ``n_trials`` counts
    trainings (a population is one: it builds one graph).
    ``orphan_check``: exit if the parent process dies (for workers a supervisor started).
    ``label``: this worker's name on its trials (a remote worker's flow run).
    ``events``: where a retried trial is reported (the run's event log, when trials run in its process).
    """
    reason: str | None = stop.reason(study.trials)

    def after_trial(study: optuna.Study, trial: FrozenTrial | None) -> None:
        nonlocal reason
        if on_trial is not None:
            on_trial(study, trial)
        reason = stop.reason(study.trials)
        if reason is not None:
            with contextlib.suppress(RuntimeError):  # outside optimize (a population round) there is nothing to stop
                study.stop()

    claims = Claims(job, orphan_check, label)
    size = population_size(job, data)
    if reason is None and size == 1:
        study.optimize(objective(job, data, stop.trial_deadline(), claims), n_trials=n_trials,
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
            # retried here once its grace is over (see owner_gone), not only when the study is opened.
            if job.config.search.storage is None:
                retry_interrupted(study, lambda t: owner_gone(t, policy.grace_seconds), events)
            time.sleep(CLAIMED_WAIT_SECONDS)
            reason = stop.reason(study.trials)
            continue
        # With the size chosen per round, TPE's random first trials train alone: a round fixes its members' batch
        # size and width, and rounds from the first trial on had all searched the first warm start's (Pima:
        # 158 trials at width 64, where one-at-a-time search found its best at 16).
        startup = size is None and len(Ledger(study.trials).results()) < TPE_STARTUP
        run_round(study, job, data, 1 if startup else size, stop, claims,
                  None if on_trial is None else lambda: on_trial(study, None))
        after_trial(study, None)  # once per round: the stop rule and progress read the whole study
        rounds += 1
    if reason is None and stop.all_claimed(study.trials):
        reason = "the last trials run in other workers"
    return reason
