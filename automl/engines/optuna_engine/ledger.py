"""The trial vocabulary: the attributes a trial carries, the standing they give it in the search, and the stop
rule read from a study's trials. Attribute values are those studies were written with: old studies resume."""

from __future__ import annotations

from enum import Enum, StrEnum
from typing import TYPE_CHECKING

from automl.engines.base import SearchJob, TrialRecord
from automl.engines.optuna_engine.storage import retried_numbers
from automl.engines.stop import Finished, StopRule

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from automl.budget import Budget

__all__ = ["Attr", "StudyAttr", "Standing", "Ledger", "StudyStop", "claiming", "record", "seconds", "worker_name"]


class Attr(StrEnum):
    """A trial's user attributes."""

    #: ``host:pid`` of the process that runs it.
    WORKER = "worker"
    #: A remote worker's name (its Prefect flow run); empty for local processes.
    LABEL = "worker_label"
    ERROR = "error"
    BEST_EPOCH = "best_epoch"
    #: Its own training time (a population member's share of its round): what a refit of it would cost.
    TRAIN_SECONDS = "train_seconds"
    #: The size of the population it trained in.
    POPULATION = "population"
    #: Its process died: it was failed and its configuration queued again.
    INTERRUPTED = "interrupted"
    #: The number of the interrupted trial whose configuration it runs again.
    RETRY_OF = "retry_of"
    #: A parallel worker started it after others had claimed the last of ``--max-models``, or a round handed it
    #: back to the queue: it trained nothing.
    SURPLUS = "surplus"
    #: The number of an earlier trial with its configuration: it trained nothing.
    DUPLICATE_OF = "duplicate_of"
    #: The deadline stopped this population member before it was trained enough to rank (told pruned).
    CUT = "cut_by_deadline"


class StudyAttr(StrEnum):
    """A study's user attributes."""

    #: What must not change when the study is resumed (:attr:`automl.engines.SearchJob.identity`).
    IDENTITY = "identity"
    #: What a worker process rebuilds the search data from (:attr:`automl.engines.SearchJob.spec`).
    SPEC = "spec"


class Standing(Enum):
    """What a trial is to the search."""

    #: A result, or a claim on one of ``--max-models`` while it waits or runs.
    COUNTED = "counted"
    #: Its process died and its configuration runs again: listed with its error, not counted.
    INTERRUPTED = "interrupted"
    #: Surplus: trained nothing, neither listed nor counted.
    SURPLUS = "surplus"
    #: A repeat of an earlier configuration: trained nothing, neither listed nor counted.
    DUPLICATE = "duplicate"


class Ledger:
    """A study's trials, read once, each with its standing."""

    def __init__(self, trials: list[FrozenTrial]) -> None:
        retried = retried_numbers(trials)
        self.trials = trials
        self.standing = {t.number: _standing(t, retried) for t in trials}

    def counted(self) -> list[FrozenTrial]:
        """Trials that count toward ``--max-models``, in any state."""
        return [t for t in self.trials if self.standing[t.number] is Standing.COUNTED]

    def claimed(self) -> list[FrozenTrial]:
        """Counted trials that run or ran (not queued)."""
        return [t for t in self.counted() if t.state.name != "WAITING"]

    def results(self) -> list[FrozenTrial]:
        """Counted trials that finished."""
        return [t for t in self.counted() if t.state.is_finished()]

    def listed(self) -> list[FrozenTrial]:
        """Finished trials for ``trials.csv``: results and interrupted ones."""
        return [t for t in self.trials if t.state.is_finished()
                and self.standing[t.number] in (Standing.COUNTED, Standing.INTERRUPTED)]

    def finished(self) -> list[Finished]:
        """Every finished trial as the stop rule reads it."""
        return [Finished(t.state.name, seconds(t) if t.duration else None, self.standing[t.number] is Standing.COUNTED,
                         self.standing[t.number] is Standing.DUPLICATE) for t in self.trials if t.state.is_finished()]


def _standing(trial: FrozenTrial, retried: set[int]) -> Standing:
    if trial.user_attrs.get(Attr.SURPLUS):
        return Standing.SURPLUS
    if Attr.DUPLICATE_OF in trial.user_attrs:
        return Standing.DUPLICATE
    if trial.state.name == "FAIL" and (bool(trial.user_attrs.get(Attr.INTERRUPTED)) or trial.number in retried):
        return Standing.INTERRUPTED
    return Standing.COUNTED


class StudyStop:
    """The engines' :class:`~automl.engines.stop.StopRule`, read from a study's trials: every worker decides alike."""

    def __init__(self, budget: Budget, job: SearchJob) -> None:
        self.rule, self.budget, self.max_trials = StopRule(budget, job), budget, job.config.search.max_models

    def reason(self, trials: list[FrozenTrial], ahead: float = 0.0) -> str | None:
        """Why to stop now (or ``ahead`` seconds from now, as far as time goes), or None to go on."""
        return self.rule.reason(Ledger(trials).finished(), ahead)

    def trial_deadline(self) -> float:
        return self.rule.trial_deadline()

    def all_claimed(self, trials: list[FrozenTrial]) -> bool:
        """Every one of ``--max-models`` is finished or running somewhere."""
        return self.max_trials is not None and len(Ledger(trials).claimed()) >= self.max_trials


def claiming(study: optuna.Study) -> list[FrozenTrial]:
    """The study's trials that claim a configuration or a place in ``--max-models``: running or finished."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED,
                                                    TrialState.FAIL))


def seconds(trial: FrozenTrial) -> float:
    """What a finished trial cost: its own training time (a population member's share), else its duration."""
    if Attr.TRAIN_SECONDS in trial.user_attrs:
        return float(trial.user_attrs[Attr.TRAIN_SECONDS])
    return trial.duration.total_seconds() if trial.duration else float("nan")


def worker_name(trial: FrozenTrial) -> str:
    return str(trial.user_attrs.get(Attr.LABEL) or trial.user_attrs.get(Attr.WORKER, ""))


def record(trial: FrozenTrial, retried_as: int | None = None) -> TrialRecord:
    """``trial`` as ``trials.csv`` lists it."""
    error = trial.user_attrs.get(Attr.ERROR, "")
    if not error and retried_as is not None:  # failed by Optuna's heartbeat check, which records no reason
        error = f"interrupted: its worker stopped sending heartbeats; retried as trial {retried_as}"
    return TrialRecord(trial.number, trial.state.name, float("nan") if trial.value is None else trial.value,
                       int(trial.user_attrs.get(Attr.BEST_EPOCH, 0)), round(seconds(trial), 3), dict(trial.params),
                       error, worker_name(trial))
