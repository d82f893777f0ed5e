"""What every engine shares: the search job, its data, a trial's record, the engine protocol, the progress line.

Engines import from here (and from :mod:`automl.engines.trainers` and :mod:`automl.engines.stop`), never from
another engine nor from the ``automl.engines`` package itself, which re-exports these names for the stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from automl.config import RunConfig

if TYPE_CHECKING:  # the CLI reads ENGINES for --help: keep this import free of numpy and scikit-learn
    import numpy as np

    from automl.budget import Budget
    from automl.events import EventLog
    from automl.metrics import Metric
    from automl.spaces import Param

__all__ = ["SearchData", "SearchJob", "StopPolicy", "TrialRecord", "Engine", "RemoteWorkers", "progress_line",
           "check_identity", "MAX_CONSECUTIVE_FAILURES", "HYPERBAND_MIN_EPOCHS"]

#: Hyperband's shortest trial (both engines' ``min_resource``). A population member that the deadline stops
#: before this many epochs is told pruned, not complete: a round started late would otherwise rank a whole
#: population of barely trained networks.
HYPERBAND_MIN_EPOCHS = 10
#: Stop when this many trials in a row fail: the space or the data is broken, not the luck.
MAX_CONSECUTIVE_FAILURES = 10


@dataclass(frozen=True)
class StopPolicy:
    """What must fit after the search (see :func:`automl.budget.search_should_stop`)."""

    #: Trainings of about one trial's length that the refit of the best configuration costs.
    refit_trials: float
    #: Seconds kept for writing outputs.
    finish_seconds: float
    #: Share of the whole budget kept for refits and outputs.
    keep_share: float
    #: Share of a typical trial that must fit for another to start: 1, or less where a trial the search's deadline
    #: cuts is ranked as it is (a holdout run's CNN trials: their best epoch so far is a model).
    trial_share: float = 1.0


@dataclass(frozen=True)
class SearchJob:
    """What to search and where its study lives; the same value for every engine and worker."""

    config: RunConfig
    space: tuple[Param, ...]
    warm_starts: tuple[dict[str, Any], ...]
    metric: Metric
    study_name: str
    storage_dir: Path
    max_epochs: int
    stop: StopPolicy
    #: What must not change when a study is resumed (task, metric, direction, seed, protocol, space version).
    identity: dict[str, Any] = field(default_factory=dict)
    #: JSON that lets worker processes rebuild the search data; None when no worker process runs.
    spec: dict[str, Any] | None = None


class RemoteWorkers(Protocol):
    """Search workers that run elsewhere on the job's study, started by the orchestrator (Prefect flow runs
    on a work pool, ``flows/search_worker.py``); the engine waits for them and stops them with the search.
    A worker's name is the label on its trials."""

    def active(self) -> set[str]:
        """The workers still queued, starting or running."""
        ...

    def pending(self) -> set[str]:
        """The workers nothing has started yet (queued)."""
        ...

    def cancel(self, names: set[str]) -> None:
        """Stop these workers; returns once they ended (one that does not answer is marked crashed)."""
        ...

    def crashed(self, names: set[str], why: str) -> None:
        """Mark these workers crashed now (their trials stopped sending heartbeats: the machine is gone)."""
        ...

    def states(self) -> dict[str, str]:
        """Each worker's state, e.g. ``{"pima-search-1": "Completed"}``."""
        ...


class Engine(Protocol):
    """What the search stage asks of an engine module.

    Engines with ``SUPPORTS_WORKERS`` also have ``start(job, budget, events)``, which opens the
    study and starts worker processes before the search stage; its result goes to ``search`` as
    ``started``. They also wait for and stop ``remote`` workers (others get none).
    """

    SUPPORTS_WORKERS: bool

    def search(self, job: SearchJob, data: SearchData | None, budget: Budget, events: EventLog,
               started: Any = None, remote: RemoteWorkers | None = None) -> list[TrialRecord]: ...

    def param_importances(self, job: SearchJob) -> dict[str, float] | None: ...


def check_identity(study_name: str, known: dict[str, Any] | None, job: SearchJob) -> None:
    """Refuse to resume a study searched with other settings: its trials would mix with this run's."""
    from automl.errors import InputError

    changed = {k: (known.get(k), v) for k, v in job.identity.items() if known is not None and known.get(k) != v}
    if changed:
        what = "; ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise InputError(f"this project's study {study_name!r} was searched with other settings ({what}); "
                         "use a new --project or --output to search with these")


def progress_line(number: int, state: str, metric: Metric, value: float | None, best: float | None,
                  left: float, done: int | None = None, total: int | None = None) -> str:
    """``trial 7 (8 of 20) complete auc=0.8123, best 0.8301, 42s left``: one line for every engine."""
    count = f" ({done} of {total})" if done is not None and total is not None else ""
    return (f"trial {number}{count} {state.lower()}" + (f" {metric.name}={value:.4f}" if value is not None else "")
            + (f", best {best:.4f}" if best is not None else "") + f", {left:.0f}s left")


@dataclass
class SearchData:
    """The preprocessed search split: fit on ``x_train``, score on ``x_val``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    task: str
    n_classes: int
    family: str = "mlp"
    #: Where each trial writes TensorBoard logs (``<log_dir>/trial_<n>``), or None.
    log_dir: str | None = None
    #: The last ``n_codes`` columns are category codes (``make_preprocessor(kind="network")``).
    n_codes: int = 0
    #: Where each completed trial saves its network (``<model_dir>/trial_<n>/``, ``KerasNetwork.save``), or None: a
    #: holdout run ranks a CNN trial's own model rather than training it again (``automl.search``).
    model_dir: str | None = None


@dataclass
class TrialRecord:
    """One search trial as ``trials.csv`` shows it."""

    number: int
    state: str
    value: float
    best_epoch: int
    duration_s: float
    params: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    #: Who ran it: a remote worker's name (a Prefect flow run), else ``host:pid``; empty where unknown.
    worker: str = ""
    #: The family searched (``spaces.FAMILIES``): "mlp", "cnn" or "gbm"; empty until the search stage sets it.
    family: str = ""
