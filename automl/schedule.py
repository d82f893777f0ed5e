"""The run's one scheduler: every training job in one queue, run while its learned cost fits the budget.

A run's work is a queue of :class:`Job` values: the reference models (a portfolio order), batches of the GBM
search, cross-validations of the best searched configurations (GBM and networks), the ensembles and the refits.
The network search itself runs beside the queue in worker processes (``automl.search``), on the cores the queue
does not use. :class:`Scheduler` takes the queue's jobs by priority and starts one only when its estimate — the
job's own guess in seconds, corrected by how the family's earlier jobs did against theirs — fits before the time
kept for what must still follow (:meth:`Scheduler.kept`: the outputs and the required jobs still to come, each
at its estimate). A job that does not fit is skipped with its reason. While a job runs, its :class:`Pace` checks
each fold: a model whose first fold says the rest will not fit stops after that fold (a few seconds wasted, not
four folds) and may be queued again on fewer rows. The ledger (:class:`Ledger`) counts per family the jobs run
and skipped, the core-seconds spent and those wasted (spent on a job that ranked nothing); ``run.json`` and the
event log carry it.

Stages stay plain functions (``automl.reference``, ``automl.boosting``, ``automl.search``, ``automl.ensembles``,
``automl.refit``): :func:`automl.pipeline.run_stages` builds their jobs and hands this scheduler the clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from automl.budget import CAP_TOLERANCE_SECONDS, Budget

__all__ = ["Job", "Pace", "Ledger", "Scheduler", "JobCutShort", "process_cpu_seconds", "MIN_CORRECTION",
           "MAX_CORRECTION", "PACE_TOLERANCE", "CAP_SLACK_SECONDS"]

#: A family's correction (measured seconds over estimated) stays within these bounds: one job run beside a
#: busy worker, or a warm-up, must not make the family look free or unaffordable.
MIN_CORRECTION, MAX_CORRECTION = 0.2, 5.0
#: A fold that runs this much past its share of the job's time still counts as on pace: fold times vary
#: (the first fold pays for warm-up), and a job stopped for a near miss wastes its folds.
PACE_TOLERANCE = 1.25
#: The pace's slack, in seconds, for a job under ``--max-runtime-secs-per-model``: its folds' fits stop at their
#: shares of the cap, a little late (a chunk of iterations): a GLM at 1.3 s a fold of 1 s ends 1.5 s past a 5 s
#: cap, within the README's tolerance, and is ranked rather than stopped.
CAP_SLACK_SECONDS = CAP_TOLERANCE_SECONDS


class JobCutShort(RuntimeError):
    """A job stopped before it could rank anything: its first folds said the rest would not fit.

    ``projected`` is the job's whole cost at the pace measured, in seconds (what the family's estimates
    learn from); ``done`` of ``total`` folds had trained.
    """

    def __init__(self, message: str, projected: float, done: int, total: int) -> None:
        super().__init__(message)
        self.projected, self.done, self.total = projected, done, total


@dataclass
class Pace:
    """A running job's time: it started at ``start`` and must end by ``deadline`` (clock readings)."""

    name: str
    start: float
    deadline: float
    clock: Callable[[], float] = time.monotonic
    #: Seconds past the deadline a job may project and go on; None: :data:`PACE_TOLERANCE` of its time. Under
    #: ``--max-runtime-secs-per-model``: :data:`CAP_SLACK_SECONDS` (each fold's fit stops at its share anyway).
    slack: float | None = None
    #: The first fold pays for what the others reuse (a network's graph, traced once for all its folds): the pace
    #: is read from the folds after it. Projected from the first, diabetes' first network was stopped after its
    #: 1.9 s fold ("5 folds would take 10s"); its other folds take 0.5 s.
    costly_first_fold: bool = False
    _first_fold: float = field(default=0.0, init=False)

    def fold_deadline(self, k: int, n: int) -> float:
        """When fold ``k`` (0-based) of ``n``, starting now, must end: its share of the time left, so that one
        fold that trains until its deadline (boosting on a large table) leaves the others theirs, and a first
        fold that started late (TensorFlow's import before it) still gets its share."""
        now = self.clock()
        return now + max(self.deadline - now, 0.0) / (n - k)

    def check(self, done: int, total: int, seconds: float) -> None:
        """After ``done`` of ``total`` folds that took ``seconds``: raise :class:`JobCutShort` when the rest, at
        that pace, would end past the deadline (beyond its ``slack``)."""
        if done >= total or done <= 0:
            return
        if self.costly_first_fold and done == 1:
            self._first_fold = seconds
            return
        skip = 1 if self.costly_first_fold else 0
        projected = seconds + (seconds - self._first_fold) / (done - skip) * (total - done)
        slack = (PACE_TOLERANCE - 1) * (self.deadline - self.start) if self.slack is None else self.slack
        if self.start + projected > self.deadline + slack:
            raise JobCutShort(f"{self.name}: stopped after fold {done} of {total} ({seconds:.1f}s): {total} folds "
                              f"would take {projected:.0f}s, {self.deadline - self.start:.0f}s allowed",
                              projected, done, total)


@dataclass
class Job:
    """One unit of work: train and rank a model, run a batch of search trials, stack, refit.

    ``run(pace)`` does the work within ``pace.deadline`` and returns what it ranked (anything but None), or None
    when it ranked nothing (a failure, or a model the deadline cut). ``estimate`` is its own guess of the
    seconds it takes; :class:`Scheduler` corrects it by its family's record. ``required`` jobs (a family's first
    model) keep their estimated time from the jobs queued before them. ``retry(job, cut)`` may return a cheaper
    job (fewer rows) to queue when a :class:`JobCutShort` stopped this one.
    """

    name: str
    family: str
    priority: float
    #: Seconds, or a function of nothing that says them when asked (an estimate that waits for a measurement).
    estimate: float | Callable[[], float]
    run: Callable[[Pace], Any]
    required: bool = False
    cores: int = 1
    #: The longest this job may run (``--max-runtime-secs-per-model``), or None; its pace then has
    #: :data:`CAP_SLACK_SECONDS` of slack, not :data:`PACE_TOLERANCE`.
    cap: float | None = None
    #: Work before the job's time starts (TensorFlow's import before a network's first fit: seconds, once, that
    #: say nothing of the model's cost nor count against its cap).
    prepare: Callable[[], None] | None = None
    #: The seconds ``prepare`` will take (0 once done): the job starts only where they fit beside its estimate
    #: (a first network admitted at 1.2 s on a 47k-row table found -1 s left after TensorFlow's 5 s import).
    prepare_seconds: Callable[[], float] = lambda: 0.0
    #: Its pace's ``costly_first_fold`` (a network's cross-validation).
    costly_first_fold: bool = False
    retry: Callable[[Job, JobCutShort], Job | None] | None = None
    #: False while the job cannot start yet (a network's first model waits for the search's first trial); its
    #: time is kept meanwhile when it is ``required``.
    ready: Callable[[], bool] = lambda: True
    #: A job that works until the time it is given (a search batch): its estimate is that time, never
    #: corrected, and it teaches its family nothing; one that does not fit is dropped silently unless required
    #: (it was only filling time).
    elastic: bool = False
    #: Order among equal priorities: the order jobs were queued.
    order: int = 0


@dataclass
class FamilyLedger:
    """What one family's jobs did."""

    jobs: int = 0
    ranked: int = 0
    skipped: int = 0
    core_seconds: float = 0.0
    wasted_core_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"jobs": self.jobs, "ranked": self.ranked, "skipped": self.skipped,
                "core_seconds": round(self.core_seconds, 1), "wasted_core_seconds": round(self.wasted_core_seconds, 1)}


@dataclass
class Ledger:
    """Per family: jobs run, ranked and skipped, core-seconds spent and wasted; the reasons for each skip."""

    families: dict[str, FamilyLedger] = field(default_factory=dict)
    skips: list[str] = field(default_factory=list)

    def of(self, family: str) -> FamilyLedger:
        return self.families.setdefault(family, FamilyLedger())

    def add(self, family: str, seconds: float, cores: int, ranked: bool) -> None:
        entry = self.of(family)
        entry.jobs += 1
        entry.core_seconds += seconds * cores
        if ranked:
            entry.ranked += 1
        else:
            entry.wasted_core_seconds += seconds * cores

    def as_dict(self) -> dict[str, Any]:
        spent = sum(f.core_seconds for f in self.families.values())
        wasted = sum(f.wasted_core_seconds for f in self.families.values())
        return {"families": {k: v.as_dict() for k, v in sorted(self.families.items())},
                "core_seconds": round(spent, 1), "wasted_core_seconds": round(wasted, 1), "skips": list(self.skips)}


class Scheduler:
    """Run queued jobs by priority while their corrected estimates fit before the time kept for what follows.

    ``finish_seconds()`` is what the end of the run needs (asked each time: it grows with the board).
    ``log(level, message)`` receives the scheduler's decisions (``"info"``/``"warn"``); ``feed()`` is called
    before each choice, to queue the jobs that the results so far call for; while ``pending()``, an empty queue
    is waited on (fed every half second) rather than the end of the drain.
    """

    def __init__(self, budget: Budget, finish_seconds: Callable[[], float],
                 log: Callable[[str, str], None] | None = None, feed: Callable[[], None] | None = None,
                 pending: Callable[[], bool] = lambda: False) -> None:
        self.budget, self.finish_seconds = budget, finish_seconds
        self.log = log or (lambda level, message: None)
        self.feed = feed or (lambda: None)
        #: More jobs may come (a search in worker processes still runs): :meth:`drain` waits for them.
        self.pending = pending
        self.queue: list[Job] = []
        self.ledger = Ledger()
        self.corrections: dict[str, float] = {}
        self._count = 0

    @property
    def clock(self) -> Callable[[], float]:
        return self.budget.clock

    def add(self, job: Job) -> Job:
        """Queue ``job`` (after the jobs of equal priority already queued)."""
        self._count += 1
        job.order = self._count
        self.queue.append(job)
        return job

    def estimate(self, job: Job) -> float:
        """``job``'s seconds: its own estimate times its family's correction."""
        return _raw(job) * (1.0 if job.elastic else self.corrections.get(job.family, 1.0))

    def learn(self, family: str, estimated: float, measured: float) -> None:
        """Correct ``family``'s estimates from a job that took ``measured`` seconds against ``estimated`` (raw).
        The newest job weighs half: costs drift as the search moves to other configurations."""
        if estimated <= 0 or not math.isfinite(measured):
            return
        ratio = min(MAX_CORRECTION, max(MIN_CORRECTION, measured / estimated))
        old = self.corrections.get(family)
        self.corrections[family] = ratio if old is None else math.sqrt(old * ratio)

    def kept(self, job: Job | None = None, finish: float | None = None) -> float:
        """Seconds kept for what must follow ``job``: the outputs, and the other required jobs still queued
        (those ahead of it by priority have run or been skipped by the time it is asked), each with the pace's
        tolerance (a job stopped at its deadline ends a little after it). Where the required jobs do not all fit
        (a 30 s run), time is kept only for those that fit, in priority order: keeping it for all of them had left
        none for the first ("skipped GBM_1: estimated 5.3s, 0.0s usable" on churn at 30 s)."""
        finish = self.finish_seconds() if finish is None else finish
        room, kept = self.budget.deadline - self.clock() - finish, 0.0
        own = PACE_TOLERANCE * self.estimate(job) + job.prepare_seconds() if job is not None and job.required else 0.0
        for other in sorted((j for j in self.queue if j.required and j is not job), key=_key):
            if own and _key(job) < _key(other):  # job's turn comes first: the others keep what is left after it
                room, own = room - own, 0.0
            seconds = PACE_TOLERANCE * self.estimate(other)
            if seconds <= room:  # it can still run in its turn
                room -= seconds
                kept += seconds
        return finish + kept

    def usable(self, job: Job | None = None, finish: float | None = None) -> float:
        """Seconds ``job`` may use now: the time left less what is kept for what follows it (``finish``: the
        end's seconds when the caller has them already)."""
        return self.budget.deadline - self.clock() - self.kept(job, finish)

    def next_job(self) -> Job | None:
        """The first job by priority whose estimate fits the usable time; the jobs before it that did not fit
        are dropped with their reason (time only shrinks: they will not fit later either)."""
        finish = self.finish_seconds()  # the end's estimate reads the board: once per choice, not per job
        for job in sorted(self.queue, key=_key):
            if not job.ready():
                continue
            usable = self.usable(job, finish) - job.prepare_seconds()
            estimate = self.estimate(job)
            if job.cap is not None and estimate > job.cap + CAP_SLACK_SECONDS and job.retry is None:
                self.skip(job, f"estimated {estimate:.1f}s, over its {job.cap:g}s cap")
                continue
            if estimate <= usable or (self._first(job) and usable + finish > 0):
                self.queue.remove(job)
                return job
            if job.elastic and not job.required:
                self.queue.remove(job)
            else:
                self.skip(job, f"estimated {estimate:.1f}s, {max(usable, 0):.1f}s usable")
        return None

    def _first(self, job: Job) -> bool:
        """``job`` is required and nothing is ranked yet (a late start, a slow machine)."""
        return job.required and not any(f.ranked for f in self.ledger.families.values())

    def skip(self, job: Job, why: str) -> None:
        self.queue.remove(job)
        self.ledger.of(job.family).skipped += 1
        self.ledger.skips.append(f"{job.name}: {why}")
        self.log("warn", f"skipped {job.name} ({job.family}): {why}")

    def run_next(self) -> bool:
        """Run the next job that fits; False when none does."""
        self.feed()
        job = self.next_job()
        if job is None:
            return False
        self.run(job)
        return True

    def run(self, job: Job) -> Any:
        """Run ``job`` under its pace now; learn its family's cost; account its core-seconds."""
        started = self.clock()  # the ledger counts the preparation's core-seconds; the estimates and cap do not
        if job.prepare is not None:
            job.prepare()
        now = self.clock()
        estimate = self.estimate(job)
        # A job may run to the end of the usable time (it stops at its deadline keeping what it trained, or its
        # pace stops it after a fold), never into the time kept for what follows it.
        deadline = self.budget.deadline - self.kept(job)
        if self._first(job):  # a run must not end without a board: its first model may use the outputs' time
            deadline = max(deadline, min(now + estimate * PACE_TOLERANCE, self.budget.deadline - 1.0))
        capped = job.cap is not None and now + job.cap <= deadline
        if capped:
            deadline = now + job.cap
        pace = Pace(job.name, now, max(deadline, now), self.clock, CAP_SLACK_SECONDS if capped else None,
                    job.costly_first_fold)
        try:
            result = job.run(pace)
        except JobCutShort as cut:
            seconds = self.clock() - started
            self.ledger.add(job.family, seconds, job.cores, ranked=False)
            self.learn(job.family, _raw(job), cut.projected)
            self.log("warn", f"{cut}; {seconds:.1f}s wasted")
            again = job.retry(job, cut) if job.retry is not None else None
            if again is not None:
                self.add(again)
            return None
        except Exception as exc:  # one failing job must not sink the run; input the user must fix still does
            from automl.errors import InputError

            if isinstance(exc, InputError):
                raise
            self.ledger.add(job.family, self.clock() - started, job.cores, ranked=False)
            self.log("warn", f"{job.name} failed: {type(exc).__name__}: {exc}")
            return None
        self.ledger.add(job.family, self.clock() - started, job.cores, ranked=result is not None)
        if result is not None and not job.elastic:
            self.learn(job.family, _raw(job), self.clock() - now)
        return result

    def drain(self, wait: Callable[[float], None] = time.sleep) -> None:
        """Run jobs until none fits; while only jobs that are not ready yet are queued, ``wait`` for them as
        long as they could still fit. What is still queued at the end is skipped."""
        while True:
            if self.run_next():
                continue
            if any(j.ready() for j in self.queue):  # ready since it was passed over (a trial just ended): again
                continue
            waiting = [j for j in self.queue if not j.ready() and self.estimate(j) <= self.usable(j)]
            if not waiting and not (self.pending() and self.usable() > 0):
                break
            wait(0.5)
            self.feed()
        for job in list(self.queue):
            if job.elastic and not job.required:
                self.queue.remove(job)
            else:
                self.skip(job, "no time left" if job.ready() else "never ready (no input for it in time)")

    def cpu_percent(self, started_cpu: float) -> float:
        """This process's and its reaped children's CPU time since ``started_cpu`` over the wall time, in %."""
        return round(100.0 * (process_cpu_seconds() - started_cpu) / max(self.budget.elapsed(), 1e-9), 1)


def _raw(job: Job) -> float:
    return job.estimate() if callable(job.estimate) else job.estimate


def _key(job: Job) -> tuple[float, int]:
    return job.priority, job.order


def process_cpu_seconds() -> float:
    """User and system CPU seconds of this process and of its children that were waited for."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
