"""The end of a search with remote workers (Prefect flow runs on a work pool): wait for their last trials,
cancel the queued and the late, mark the dead crashed."""

from __future__ import annotations

import time

import optuna

from automl.engines.base import RemoteWorkers
from automl.engines.optuna_engine.ledger import StudyStop
from automl.engines.optuna_engine.policy import DEFAULT_POLICY, WorkerPolicy
from automl.engines.optuna_engine.progress import Progress
from automl.engines.optuna_engine.recovery import lost
from automl.events import EventLog

__all__ = ["end_remote"]


def end_remote(remote: RemoteWorkers, study: optuna.Study, stop: StudyStop, progress: Progress, events: EventLog,
               policy: WorkerPolicy = DEFAULT_POLICY) -> None:
    """Wait until the search is done (the remote workers decide by the same rule), then for their last trials
    (cut at the trials' deadline), then cancel what still runs.

    Queued workers are cancelled first (they would only start after the search); one whose trial lost its
    heartbeat is marked crashed at once (its machine is gone: nothing would answer a cancellation).
    """
    while remote.active() and stop.reason(study.trials) is None and not stop.all_claimed(study.trials):
        time.sleep(1.0)
        progress.show()
    remote.cancel(remote.pending())
    until = max(stop.trial_deadline(), time.monotonic()) + policy.remote_grace_seconds
    winding_down = False
    while (active := remote.active()) and time.monotonic() < until:
        dead = active & lost(study)
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
        events.warn("search", f"{len(active)} remote worker(s) still running {policy.remote_grace_seconds:g}s after "
                              "the trials' deadline; cancelling them")
        remote.cancel(active)
    progress.show()
    _report(remote, winding_down, events)


def _report(remote: RemoteWorkers, winding_down: bool, events: EventLog) -> None:
    states = remote.states()
    fine = ("Completed", "Cancelled", "Running") if winding_down else ("Completed", "Cancelled")
    (events.add if all(s in fine for s in states.values()) else events.warn)(
        "search", "remote workers: " + ", ".join(f"{name} {state}" for name, state in sorted(states.items()))
        + (" (the running ones end by themselves: every trial is told)" if "Running" in states.values() else ""))
