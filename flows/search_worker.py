"""Search workers as Prefect flow runs on a work pool, sharing the run's study in PostgreSQL.

``search_worker_flow`` is the deployment ``search-worker/automl-search`` of ``prefect.yaml``
(work pool ``automl-search``; a GPU pool is just another deployment of it). A run with
``--fan-out N`` (``fan_out`` in a flow's options) opens its study, then submits N flow runs
of that deployment (:func:`fan_out`); each runs ``python -m automl.worker`` on whatever
machine the pool's worker is on, until the search's clock says stop. The run's search waits
for their last trials and cancels what still runs (:class:`FlowRunWorkers`), so no flow run
is left Running and no finished trial is left out of the leaderboard.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from automl.config import RunConfig
from automl.errors import InputError
from automl.state import RunState

__all__ = ["search_worker_flow", "check_fan_out", "fan_out", "FlowRunWorkers", "CANCEL_SECONDS"]

#: Seconds a cancelled flow run gets to end; one whose worker does not answer (its machine is gone) is marked Crashed.
CANCEL_SECONDS = 20.0


@flow(name="search-worker", validate_parameters=True)
def search_worker_flow(study: str, storage: str, index: int = 1, threads: int | None = None) -> int:
    """Run trials of the search ``study`` in ``storage`` (a database URL) until the search is done.

    ``index`` makes this worker's sampler distinct (seed + index); ``threads`` caps TensorFlow's
    threads. Trials run in ``python -m automl.worker`` child processes, each replaced after
    ``WorkerPolicy.trials_per_process`` trials (as the run's local workers are); the trials carry this flow run's
    name. Returns the number of worker processes that ran.
    """
    from prefect.runtime import flow_run

    from automl.engines.optuna_engine import DEFAULT_POLICY, WorkerExit

    logger = get_run_logger()
    command = [sys.executable, "-m", "automl.worker", "--study", study, "--storage", storage, "--index", str(index),
               "--label", str(flow_run.name), "--trials", str(DEFAULT_POLICY.trials_per_process),
               "--supervised"]  # a child whose flow run process died stops at its next epoch
    if threads:
        command += ["--threads", str(threads)]
    processes = 0
    while True:
        processes += 1
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        last = next((line for line in reversed(done.stdout.splitlines()) if line.strip()), "no output")
        if done.returncode == WorkerExit.DONE:
            logger.info("the search is done (%d worker process(es))", processes)
            return processes
        if done.returncode != WorkerExit.RECYCLE:
            raise RuntimeError(f"python -m automl.worker exited with code {done.returncode}: {last}")


def check_fan_out(config: RunConfig) -> Any:
    """The deployment that ``config``'s fan-out submits to (None without fan-out); InputError if it is not there."""
    if not config.search.fan_out:
        return None
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    name = config.search.fan_out_deployment
    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise InputError(f"--fan-out: no deployment {name!r} on the Prefect API at {PREFECT_API_URL.value()}; "
                             "create it with `prefect --no-prompt deploy --name automl-search` from the checkout "
                             "root, or give --fan-out-deployment") from None


@task(name="fan-out", task_run_name="fan-out-{state.config.project}", cache_policy=NO_CACHE)
def fan_out(state: RunState, deployment: Any) -> int:
    """Submit the search-worker flow runs, once the run's study is open; keep them in ``state.remote``."""
    settings = state.config.search
    if deployment is None or state.workers is None:  # no fan-out, or no search (the budget is too short)
        return 0
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    first = settings.n_workers  # local workers sample with seed + 0 … n_workers - 1; none with --workers 0
    runs = {}
    for index in range(first, first + settings.fan_out):
        name = f"{state.config.project}-search-{index}"
        run = run_deployment(settings.fan_out_deployment, timeout=0, flow_run_name=name, tags=["automl"],
                             parameters={"study": state.study_name, "storage": settings.storage, "index": index})
        runs[name] = run.id
    state.remote = FlowRunWorkers(runs)
    pool = deployment.work_pool_name
    state.events.add("search", f"fan-out: {len(runs)} flow runs of {settings.fan_out_deployment} submitted to work "
                               f"pool {pool}: {', '.join(runs)}")
    with get_client(sync_client=True) as client:
        if not any(w.status.value == "ONLINE" for w in client.read_workers_for_work_pool(pool)):
            state.events.warn("search", f"fan-out: work pool {pool} has no online worker; start one with "
                                        f"`prefect worker start --pool {pool}`")
    return len(runs)


class FlowRunWorkers:
    """One search's worker flow runs, as the search engine's :class:`automl.engines.RemoteWorkers`."""

    def __init__(self, runs: dict[str, UUID]) -> None:
        self.runs = runs

    def _states(self) -> dict[str, Any]:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            return {name: client.read_flow_run(run_id).state for name, run_id in self.runs.items()}

    def active(self) -> set[str]:
        return {name for name, state in self._states().items() if state is None or not state.is_final()}

    def pending(self) -> set[str]:
        return {name for name, state in self._states().items() if state is not None and state.is_scheduled()}

    def states(self) -> dict[str, str]:
        return {name: state.name if state else "unknown" for name, state in self._states().items()}

    def crashed(self, names: set[str], why: str) -> None:
        from prefect.client.orchestration import get_client
        from prefect.states import Crashed

        with get_client(sync_client=True) as client:
            for name in names:
                client.set_flow_run_state(self.runs[name], Crashed(message=why), force=True)

    def cancel(self, names: set[str]) -> None:
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelled, Cancelling

        asked = set()
        with get_client(sync_client=True) as client:
            for name, state in self._states().items():
                if name not in names or state is None or state.is_final():
                    continue
                if state.is_scheduled():  # no pool worker took it: nothing runs that could be told to stop
                    client.set_flow_run_state(self.runs[name], Cancelled(message="the search ended"), force=True)
                else:  # the pool's worker stops the flow run's processes and marks it Cancelled
                    client.set_flow_run_state(self.runs[name], Cancelling(message="the search ended"))
                    asked.add(name)
        deadline = time.monotonic() + CANCEL_SECONDS
        while asked and time.monotonic() < deadline:
            time.sleep(1.0)
            asked &= self.active()
        if asked:  # its pool worker is gone (a dead machine): say so instead of leaving it Cancelling
            self.crashed(asked, "its work pool worker did not answer the cancellation")
