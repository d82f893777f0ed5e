"""The search stage's entry: open the study and start the workers early, then run or supervise the trials until
the stop rule says done, and list them."""

from __future__ import annotations

from collections import Counter

from automl.budget import Budget
from automl.engines.base import RemoteWorkers, SearchData, SearchJob, TrialRecord
from automl.engines.optuna_engine.ledger import Ledger, StudyStop, record, worker_name
from automl.engines.optuna_engine.loop import work
from automl.engines.optuna_engine.policy import DEFAULT_POLICY, WorkerPolicy
from automl.engines.optuna_engine.pool import Pool
from automl.engines.optuna_engine.progress import Progress
from automl.engines.optuna_engine.remote import end_remote
from automl.engines.optuna_engine.storage import retries
from automl.engines.optuna_engine.study import open_run_study
from automl.engines.stop import announce
from automl.events import EventLog

__all__ = ["start", "search"]


def start(job: SearchJob, budget: Budget, events: EventLog, policy: WorkerPolicy = DEFAULT_POLICY) -> Pool:
    """Open the study and start the worker processes now, before the search stage (none with one worker:
    trials then run in this process).

    Their start-up (TensorFlow's import, the data) then overlaps whatever the run does
    next; they run trials at once. :func:`search` supervises them. Remote workers join
    the study once it is open.
    """
    study = open_run_study(job, events, policy)
    pool = Pool(study, job, events, policy)
    if pool.size > 0:
        if job.spec is None:
            raise ValueError("search with workers > 1 needs the spec that worker processes rebuild the data from")
        pool.start_all(StudyStop(budget, job))
    return pool


def search(job: SearchJob, data: SearchData | None, budget: Budget, events: EventLog, started: Pool | None = None,
           remote: RemoteWorkers | None = None, policy: WorkerPolicy = DEFAULT_POLICY) -> list[TrialRecord]:
    """Run trials until the budget, ``max_models`` or the failure limit says stop.

    With more than one worker, ``job.spec`` lets worker processes build their search split
    (``data`` is then not needed: None); ``started`` is what :func:`start` returned, if it ran.
    ``remote`` workers are waited for (their last trials count) and then cancelled.
    """
    stop = StudyStop(budget, job)
    pool = started or start(job, budget, events, policy)
    study = pool.study
    progress = Progress(study, job, budget, events, pool.created)
    if pool.size == 0 and job.config.search.n_workers == 1:
        reason = work(study, job, data, stop, on_trial=lambda s, t: progress.show(), events=events, policy=policy)
    elif pool.size > 0:
        reason = pool.supervise(stop, progress)
    else:  # no trials here (--workers 0): the remote workers run them all
        reason = None
    if remote is not None:
        end_remote(remote, study, stop, progress, events, policy)
        reason = stop.reason(study.trials) or reason
    announce(events, reason)
    trials = study.trials
    listed = Ledger(trials).listed()
    if remote is not None or pool.size > 0:
        counts = Counter(worker_name(t) for t in listed)
        events.add("search", "trials per worker: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    retried_as = retries(trials)
    return [record(t, retried_as.get(t.number)) for t in listed]
