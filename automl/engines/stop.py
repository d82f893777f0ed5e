"""When a search stops: one rule for every engine, read from the finished trials alone, so that every worker of a
study decides alike. An engine states its trials as :class:`Finished` values; the rule needs nothing else."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from automl.budget import search_deadline, search_should_stop
from automl.engines.base import MAX_CONSECUTIVE_FAILURES, SearchJob

if TYPE_CHECKING:
    from automl.budget import Budget
    from automl.events import EventLog

__all__ = ["Finished", "StopRule", "MAX_REPEATS", "announce"]

#: Stop when the sampler repeats itself this often in a row (a small space, fully explored).
MAX_REPEATS = 25


@dataclass(frozen=True)
class Finished:
    """A finished trial as the stop rule reads it."""

    #: "COMPLETE", "PRUNED" or "FAIL".
    state: str
    #: Its own training time; None where it has none (only completed ones say how long a refit takes).
    seconds: float | None
    #: It counts toward ``--max-models`` (a retried, surplus or repeated trial does not).
    counts: bool = True
    #: It repeated an earlier configuration and trained nothing.
    repeat: bool = False


class StopRule:
    """When the search is done: ``--max-models`` trials finished, the sampler only repeats itself, trials keep
    failing, or the time left no longer covers one more trial and what follows the search.

    ``overhead()``: seconds the next trial waits before it trains, beyond the rule's own (Keras Tuner's Gaussian
    process took 1-15 s a proposal on 2 busy cores, longer than a diabetes trial).
    """

    def __init__(self, budget: Budget, job: SearchJob, overhead: Callable[[], float] = lambda: 0.0) -> None:
        self.budget, self.max_trials, self.policy, self.overhead = budget, job.config.search.max_models, job.stop, \
            overhead

    def reason(self, finished: Sequence[Finished], ahead: float = 0.0) -> str | None:
        """Why to stop now (or ``ahead`` seconds from now, as far as time goes), or None to go on."""
        counted = [t for t in finished if t.counts]
        if self.max_trials is not None and len(counted) >= self.max_trials:
            return f"{self.max_trials} trials done"
        tail = [t.repeat for t in finished][-MAX_REPEATS:]
        if len(tail) == MAX_REPEATS and all(tail):
            return f"the sampler proposed {MAX_REPEATS} configurations in a row that already ran: the space is spent"
        tail = [t.state for t in counted[-MAX_CONSECUTIVE_FAILURES:]]
        if len(tail) == MAX_CONSECUTIVE_FAILURES and set(tail) == {"FAIL"}:
            return f"{MAX_CONSECUTIVE_FAILURES} trials in a row failed; see the error column of trials.csv"
        durations = [t.seconds for t in counted if t.state == "COMPLETE" and t.seconds is not None]
        budget = self.budget if not ahead else replace(self.budget, clock=lambda: self.budget.clock() + ahead)
        if budget.left() <= 0 or search_should_stop(budget, durations, self.policy.refit_trials,
                                                    self.policy.finish_seconds + self.overhead(),
                                                    self.policy.keep_share, self.policy.trial_share):
            return "time budget"
        return None

    def trial_deadline(self) -> float:
        """When trials end: the search never spends the time kept for refits and outputs."""
        return search_deadline(self.budget, self.policy.finish_seconds, self.policy.keep_share)


def announce(events: EventLog, reason: str | None) -> None:
    """The search's last line: why it stopped (a warning when trials kept failing)."""
    (events.warn if reason and "failed" in reason else events.add)("search", f"search stopped: "
                                                                            f"{reason or 'time budget'}")
