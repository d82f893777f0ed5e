"""How worker processes are run: when they are recycled, how long a silent one is given, and what their exit
codes say. One value for the local pool, the remote workers and the flow that runs them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

__all__ = ["WorkerPolicy", "WorkerExit", "DEFAULT_POLICY", "HEARTBEAT_SECONDS"]

#: RDB heartbeats: every trial of a worker records one this often.
HEARTBEAT_SECONDS = 5


@dataclass(frozen=True)
class WorkerPolicy:
    """The clock of the workers (tests pass shorter ones)."""

    #: Trials per worker process before it is recycled (one process grows 5-9 MB per trial).
    trials_per_process: int = 25
    #: A trial without a heartbeat (RDB), or an untagged RUNNING one (journal), for this long is failed and retried.
    grace_seconds: float = 20.0
    #: Seconds past the trials' deadline that remote workers get to record their last trial and end.
    remote_grace_seconds: float = 15.0


DEFAULT_POLICY = WorkerPolicy()


class WorkerExit(IntEnum):
    """``python -m automl.worker``'s exit codes, as both supervisors (the run's pool, the search-worker flow) read
    them; any other code is a crash."""

    #: The search is done.
    DONE = 0
    #: The worker could not load its data or study: a replacement would fail alike.
    BAD_INPUT = 2
    #: It ran its share of trials and wants a fresh process.
    RECYCLE = 3
