"""The time budget: one clock for the whole run, and the rule for when to stop searching."""

from __future__ import annotations

import math
import pickle
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Budget", "search_should_stop", "search_deadline", "model_deadline", "FINISH_SECONDS", "REPORT_SECONDS",
           "CAP_TOLERANCE_SECONDS", "EXIT_SECONDS", "measure_slowness", "probe_seconds"]

#: Seconds kept back for writing the leaderboard, exporting models, explaining the leader and the report.
FINISH_SECONDS = 10.0
#: Seconds of those reserved for drawing the report after the feature importances.
REPORT_SECONDS = 4.0
#: Of the end's seconds, those that do not scale with the machine's speed: the flow's last tasks, the Prefect API's
#: answers and the interpreter's exit took 0.8-2.3 s after "run took" on the suite's 12 tables at 30 s and 120 s
#: (2026-12-07).
EXIT_SECONDS = 1.6
#: :func:`probe_seconds` on the machine where the end's seconds (REPORT_SECONDS, ``automl.jobs.OUTPUT_SECONDS``)
#: and TensorFlow's import (``automl.search.IMPORT_SECONDS``) were measured: 2.3-2.5 ms on a machine 2.3 times as
#: fast in a 10M-step loop (0.70-0.79 s against 1.8 s), beside a TensorFlow import at niceness 15 too.
PROBE_REFERENCE_SECONDS = 0.0056
#: A machine's slowness stays within these bounds: one probe on a machine busy for a moment must not make the end
#: look free or take the run's time.
MIN_SLOWNESS, MAX_SLOWNESS = 0.25, 4.0
#: How far past ``--max-runtime-secs-per-model`` a model may end: trainers look at their deadline between steps
#: (a LightGBM round, a chunk of L-BFGS iterations or of trees, a network's call of about a second), and a
#: fold's scoring follows its training. The README states it.
CAP_TOLERANCE_SECONDS = 2.0


@dataclass
class Budget:
    """``seconds`` of wall time counted from ``started`` (a ``clock()`` reading)."""

    seconds: float
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=-1.0)
    #: This machine's time for fixed work over the reference machine's (:func:`measure_slowness`; 1.0 unmeasured).
    slowness: float = 1.0

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock()

    @classmethod
    def since_wall_time(cls, seconds: float, started_at: float, slowness: float = 1.0) -> Budget:
        """A budget whose clock started at ``started_at`` (``time.time()``), e.g. at CLI start."""
        return cls(seconds, started=time.monotonic() - max(0.0, time.time() - started_at), slowness=slowness)

    @property
    def deadline(self) -> float:
        return self.started + self.seconds

    def elapsed(self) -> float:
        return self.clock() - self.started

    def left(self) -> float:
        return max(0.0, self.deadline - self.clock())

    def end_seconds(self, reference: float) -> float:
        """A part of the run's end that took ``reference`` seconds on the reference machine, on this one: its
        :data:`EXIT_SECONDS` as they were, the rest at this machine's pace."""
        return min(reference, EXIT_SECONDS) + self.slowness * max(reference - EXIT_SECONDS, 0.0)


def probe_seconds(repeats: int = 15) -> float:
    """The best of ``repeats`` timings of a fixed piece of interpreter work (build, pickle and read back 5,000
    small records: the kind of work the outputs do), ~2.5 ms on a 2026 server core. Short and many: the best of
    three of 20,000 records read 0.5-1.0 of the reference from one run to the next on one machine (a worker
    importing TensorFlow beside it), the best of 15 of 5,000 within 10 %."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        rows = [{"i": i, "s": str(i), "f": i * 0.5} for i in range(5_000)]
        pickle.loads(pickle.dumps(rows))
        best = min(best, time.perf_counter() - start)
    return best


def measure_slowness(probe: Callable[[], float] = probe_seconds) -> float:
    """This machine's time for :func:`probe_seconds`' work over the reference machine's, within bounds: the
    run's end and TensorFlow's import are estimated from it (a machine 2.3 times as fast had ended every 30 s run
    at 84-95 % of its budget, keeping for the end 1.6 times what it took)."""
    return min(MAX_SLOWNESS, max(MIN_SLOWNESS, probe() / PROBE_REFERENCE_SECONDS))


def search_should_stop(budget: Budget, trial_seconds: list[float], refit_trials: float, finish_seconds: float,
                       keep_share: float = 0.0, trial_share: float = 1.0) -> bool:
    """Stop the search when the time left no longer covers one more trial plus what must follow.

    What follows is ``refit_trials`` trainings of about a trial's length each (the
    cross-validated refit of the best configuration) and ``finish_seconds`` for
    writing outputs; at least ``keep_share`` of the whole budget is kept for them
    too, so that longer budgets can refit more than one configuration. A trial's
    length is the median of completed trials (the first one pays for warm-up); only ``trial_share`` of one must
    fit where a trial cut at the search's deadline is kept.
    """
    typical = statistics.median(trial_seconds) if trial_seconds else 0.0
    needed = typical * (trial_share + refit_trials) + finish_seconds
    return budget.left() < max(needed, keep_share * budget.seconds)


def search_deadline(budget: Budget, finish_seconds: float, keep_share: float) -> float:
    """When every search trial ends, even one started just before the search stopped.

    The share kept for refits and outputs (see :func:`search_should_stop`) is never
    spent on trials: a worker whose long trial began late would otherwise hold the
    search open and leave no time to refit the best configuration.
    """
    return budget.deadline - max(finish_seconds, keep_share * budget.seconds)


def model_deadline(deadline: float, cap: float | None, clock: Callable[[], float] = time.monotonic) -> float:
    """When a model starting now must end: ``deadline``, or sooner when ``cap`` (``--max-runtime-secs-per-model``)
    seconds from now come first."""
    return deadline if cap is None else min(deadline, clock() + cap)
