"""The run's local worker processes: started early, recycled after their share of trials, restarted when they
die (their trial retried), killed when they hang past the deadline."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from automl import warm
from automl.devices import usable_cores
from automl.engines.base import SearchJob
from automl.engines.optuna_engine.ledger import Attr, StudyStop
from automl.engines.optuna_engine.policy import DEFAULT_POLICY, WorkerExit, WorkerPolicy
from automl.engines.optuna_engine.progress import Progress
from automl.engines.optuna_engine.recovery import retry_interrupted
from automl.events import EventLog

__all__ = ["Pool"]


class Pool:
    """The job's worker processes: started, recycled and restarted until the search is done."""

    def __init__(self, study: optuna.Study, job: SearchJob, events: EventLog,
                 policy: WorkerPolicy = DEFAULT_POLICY) -> None:
        settings = job.config.search
        self.study, self.events, self.size, self.created = study, events, settings.processes, datetime.now()
        self.policy = policy
        # A background worker leaves the run's process a core of its own: the cores are never oversubscribed.
        threads = max(1, (usable_cores() - int(settings.background)) // max(self.size, 1))
        # python -m automl.worker's arguments (a warm worker takes them on its standard input).
        self.arguments = ["--study", job.study_name, "--threads", str(threads),
                          "--storage", settings.storage or str(job.storage_dir / "study.journal"), "--supervised"]
        self.logs = job.storage_dir / "workers"
        self.procs: dict[int, subprocess.Popen] = {}
        self.started: dict[int, datetime] = {}  # pid -> when it was started, until its first trial shows
        self.startup = 0.0  # seconds from starting a worker to its first trial (TensorFlow import, data)
        self.threads = threads
        self._supervised = threading.Event()  # set when supervise() takes over from the keep-alive thread
        self._keeper: threading.Thread | None = None
        self.stop: StudyStop | None = None

    def start(self, slot: int, trials: int | None = None) -> None:
        trials = self.policy.trials_per_process if trials is None else trials
        # Worker output (TensorFlow's start-up chatter, tracebacks) goes to a log file, not the user's terminal.
        self.logs.mkdir(parents=True, exist_ok=True)
        arguments = [*self.arguments, "--trials", str(trials), "--index", str(slot)]
        # A worker warm since the run began (TensorFlow imported) takes its orders; else one starts cold.
        if (proc := warm.take(arguments, self.logs / f"worker-{slot}.log")) is None:
            with open(self.logs / f"worker-{slot}.log", "ab") as log:
                proc = subprocess.Popen([sys.executable, "-m", "automl.worker", *arguments], stdout=log,
                                        stderr=subprocess.STDOUT)
        self.procs[slot] = proc
        self.started[self.procs[slot].pid] = datetime.now()  # the clock of Optuna's datetime_start

    def start_all(self, stop: StudyStop) -> None:
        self.stop = stop
        if stop.reason(self.study.trials) is not None:
            return
        for slot in range(self.size):
            # Stagger the first recycling, so that workers do not all restart (and idle) at once.
            self.start(slot, max(1, self.policy.trials_per_process * (slot + 1) // self.size))
        self.events.add("search", f"{len(self.procs)} worker processes started, {self.threads} TensorFlow "
                                  f"thread(s) each; logs in {self.logs}")
        self._keeper = threading.Thread(target=self._keep_alive, args=(stop,), daemon=True)
        self._keeper.start()

    def running(self) -> bool:
        """The search goes on: a worker process is alive, or the stop rule says go on (a recycled worker is
        about to be replaced). Without local workers (``--workers 0``), remote ones decide: assumed running."""
        return self.size == 0 or any(proc.poll() is None for proc in self.procs.values()) or (
            self.stop is not None and self.stop.reason(self.study.trials) is None)

    def supervise(self, stop: StudyStop, progress: Progress) -> str | None:
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

    def _keep_alive(self, stop: StudyStop) -> None:
        """Until :meth:`supervise` runs, replace the workers that recycle themselves (or die) meanwhile: while the
        reference models and the GBM search trained, recycled workers had stayed gone (Pima at 120 s: no network
        trained from 40 s to 70 s, 147 % CPU in the search instead of ~195 %)."""
        while not self._supervised.wait(1.0):
            self._check(stop)

    def _check(self, stop: StudyStop) -> None:
        """One look at the workers: kill the hung ones past the deadline, retry and replace the exited ones."""
        trials = self.study.trials
        reason = stop.reason(trials)
        self._note_startup(trials)
        for slot, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                # At the deadline a worker still starting up has nothing to finish; one in a trial
                # gets the grace (its trial ends at the deadline), after which it hangs.
                late = self.policy.grace_seconds if proc.pid not in self.started else 0.0
                if stop.budget.left() <= 0 and time.monotonic() > stop.budget.deadline + late:
                    proc.kill()
                continue
            del self.procs[slot]
            never_ran = self.started.pop(proc.pid, None) is not None
            if never_ran and stop.budget.left() <= 0:
                continue  # stopped at the deadline before its first trial: nothing to retry or replace
            self._after_exit(slot, proc, code, reason is None and stop.reason(trials, ahead=self.startup) is None)

    def _note_startup(self, trials: list[FrozenTrial]) -> None:
        if self.started:
            # From the trials' own start times: workers may run trials long before this supervisor first looks
            # (they start while the reference models train), and that wait is no part of their start-up.
            first: dict[str, datetime] = {}
            for t in trials:
                owner = t.user_attrs.get(Attr.WORKER)
                if owner is not None and t.datetime_start is not None:
                    first[owner] = min(first.get(owner, t.datetime_start), t.datetime_start)
            for pid in [p for p in self.started if f"{socket.gethostname()}:{p}" in first]:
                began = first[f"{socket.gethostname()}:{pid}"]
                self.startup = max(self.startup, (began - self.started.pop(pid)).total_seconds())

    def _after_exit(self, slot: int, proc: subprocess.Popen, code: int, replace_fits: bool) -> None:
        """Retry a dead worker's trial; replace a recycled or dead one if a new one is ready in time."""
        if code not in (WorkerExit.DONE, WorkerExit.RECYCLE):
            self.events.warn("search", f"worker {proc.pid} exited with code {code} ({_last_line(self.logs, slot)}); "
                                       "retrying its trial")
            owner = f"{socket.gethostname()}:{proc.pid}"
            retry_interrupted(self.study, lambda t, o=owner: t.user_attrs.get(Attr.WORKER) == o, self.events)
        if code == WorkerExit.BAD_INPUT:  # the worker could not load the data: a replacement would fail alike
            self.events.warn("search", f"worker {proc.pid} could not start: {_last_line(self.logs, slot)}")
        elif code != WorkerExit.DONE:
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
