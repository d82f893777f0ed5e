"""Search engines: they sample configurations from a space and train trials under the budget.

Every engine module implements the :class:`Engine` protocol: ``search(job, data, budget,
events) -> list[TrialRecord]`` and ``param_importances(job)`` (None when it has none),
and declares ``SUPPORTS_WORKERS``. What a trial is (train a network on the search split,
score the validation rows), the stop rule's settings and the progress line are defined
once here, for every engine; no engine imports another.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from automl.config import ENGINES, RunConfig
from automl.devices import distributed

if TYPE_CHECKING:  # the CLI reads ENGINES for --help: keep this import free of numpy and scikit-learn
    import numpy as np

    from automl.budget import Budget
    from automl.events import EventLog
    from automl.metrics import Metric
    from automl.spaces import Param

__all__ = ["SearchData", "SearchJob", "StopPolicy", "TrialRecord", "Engine", "RemoteWorkers", "train_trial",
           "MemberOutcome", "train_population", "progress_line", "check_identity", "ENGINES",
           "MAX_CONSECUTIVE_FAILURES", "HYPERBAND_MIN_EPOCHS", "get_engine"]

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


def train_trial(params: dict[str, Any], data: SearchData, metric: Metric, seed: int,
                report: Callable[[float, int], None] | None, deadline: float | None,
                max_epochs: int, name: str = "trial") -> tuple[float, int]:
    """Train one configuration on the search split; return (validation metric, best epoch).

    A "gbm" configuration is boosted (:func:`automl.models.train_boosted`, no reports); a network's
    ``report(value, epoch)`` gets the validation metric after each chunk of epochs;
    with ``data.log_dir`` the same values go to TensorBoard under ``<log_dir>/<name>``.
    """
    if data.family == "gbm":
        from automl.models import train_boosted

        value, best_epoch = train_boosted(params, data, metric, seed, deadline, max_epochs)
    else:
        value, best_epoch = _train_network(params, data, metric, seed, report, deadline, max_epochs, name)
    if not math.isfinite(value):
        raise ValueError(f"validation {metric.name} is {value}")
    return value, best_epoch


def _train_network(params: dict[str, Any], data: SearchData, metric: Metric, seed: int,
                   report: Callable[[float, int], None] | None, deadline: float | None,
                   max_epochs: int, name: str) -> tuple[float, int]:
    import keras

    from automl.training import KerasNetwork

    net = KerasNetwork(params, data.task, epochs=max_epochs, seed=seed, n_classes=data.n_classes, family=data.family)
    sign = metric.sign()
    writer = _tensorboard_writer(data.log_dir, name, params)

    def on_chunk(score: float, epoch: int) -> None:
        if writer is not None:
            import tensorflow as tf

            with writer.as_default():
                tf.summary.scalar(f"validation_{metric.name}", sign * score, step=epoch)
        if report is not None:
            report(sign * score, epoch)

    try:
        net.fit(data.x_train, data.y_train, data.x_val, monitor=lambda pred: sign * metric.fn(data.y_val, pred),
                report=on_chunk, deadline=deadline)
        value = metric.fn(data.y_val, net.predict_proba(data.x_val))
    finally:
        if writer is not None:
            writer.close()
        # free_memory=False skips a gc.collect() that costs up to 0.6 s a trial (TOOLCHAIN.md). Not inside a mirrored
        # or TPU strategy's scope: clearing resets the graph that holds the scope, whose exit then fails.
        if not distributed():
            keras.backend.clear_session(free_memory=False)
    return value, net.best_epoch_


@dataclass
class MemberOutcome:
    """One trial trained as a member of a population (see :func:`train_population`)."""

    #: The validation metric at its best epoch; None when it failed or was pruned.
    value: float | None
    best_epoch: int
    #: Why it failed; empty otherwise.
    error: str = ""
    pruned: bool = False
    #: Its share of the population's training time (by epochs trained): what it would have cost alone, about.
    seconds: float = 0.0
    #: The deadline stopped it before :data:`HYPERBAND_MIN_EPOCHS` epochs: too little training to rank (told pruned).
    cut: bool = False


def train_population(members: list[dict[str, Any]], data: SearchData, metric: Metric, seeds: list[int],
                     report: Callable[[int, float, int], bool] | None, deadline: float | None,
                     max_epochs: int, refill: Callable[[], tuple[dict[str, Any], int] | None] | None = None,
                     done: Callable[[int, MemberOutcome], None] | None = None) -> list[MemberOutcome]:
    """Train MLP configurations sharing a batch size as one population (:class:`automl.population.PopulationMLP`).

    Member i trains as :func:`train_trial` would train it with ``seeds[i]``.
    ``report(i, value, epoch)`` gets member i's validation metric after each chunk of
    epochs and returns True to stop it (pruned). ``refill()`` gives further members (params
    and seed, numbered on from ``members``) as slots free; ``done(i, outcome)`` is called as
    each member ends. Returns every member's outcome.
    """
    from automl.population import ACTIVATIONS, OPTIMIZERS, MemberResult, PopulationMLP

    outcomes = [MemberOutcome(None, 0, _unsupported(p, ACTIVATIONS, OPTIMIZERS)) for p in members]
    ids = [i for i, outcome in enumerate(outcomes) if not outcome.error]  # the population's member k is ids[k]
    for i in (i for i, outcome in enumerate(outcomes) if outcome.error and done is not None):
        done(i, outcomes[i])
    sign = metric.sign()

    def ended(k: int, r: MemberResult) -> None:
        cut = r.cut and r.epochs < HYPERBAND_MIN_EPOCHS
        outcome = outcomes[ids[k]] = MemberOutcome(None, r.best_epoch, "", r.pruned or cut, round(r.seconds, 3), cut)
        if r.error:
            outcome.error = f"FailedTrialError: {r.error}"  # as the one-at-a-time trainer reports it
        elif not outcome.pruned:
            value = metric.fn(data.y_val, r.proba) if r.proba is not None else float("nan")
            if math.isfinite(value):
                outcome.value = value
            else:
                outcome.error = f"ValueError: validation {metric.name} is {value}"
        if done is not None:
            done(ids[k], outcome)

    def more() -> tuple[dict[str, Any], int] | None:
        while refill is not None and (member := refill()) is not None:
            outcomes.append(MemberOutcome(None, 0, _unsupported(member[0], ACTIVATIONS, OPTIMIZERS)))
            if not outcomes[-1].error:
                ids.append(len(outcomes) - 1)
                return member
            if done is not None:
                done(len(outcomes) - 1, outcomes[-1])
        return None

    chosen, their_seeds = [members[i] for i in ids], [seeds[i] for i in ids]
    while len(chosen) < len(members) and (member := more()) is not None:  # the slots of members that failed at once
        chosen.append(member[0])
        their_seeds.append(member[1])
    if chosen:
        pop = PopulationMLP(chosen, their_seeds, data.task, data.n_classes, max_epochs)
        pop.fit(data.x_train, data.y_train, data.x_val, monitor=lambda p: sign * metric.fn(data.y_val, p),
                report=None if report is None else lambda k, score, epoch: report(ids[k], sign * score, epoch),
                deadline=deadline, refill=more if refill is not None else None, done=ended)
    return outcomes


def _unsupported(params: dict[str, Any], activations: tuple[str, ...], optimizers: tuple[str, ...]) -> str:
    """Why a population cannot train ``params`` (as the trial's error), or an empty string."""
    for name, known in (("activation", activations), ("optimizer", optimizers)):
        if params[name] not in known:
            return f"ValueError: unknown {name} {params[name]!r}; use one of {', '.join(known)}"
    return ""


def get_engine(name: str) -> Engine:
    """The engine module called ``name``."""
    if name == "optuna":
        from automl.engines import optuna_engine

        return optuna_engine
    if name == "keras-tuner":
        from automl.engines import keras_tuner_engine

        return keras_tuner_engine
    raise ValueError(f"unknown engine {name!r}; use one of {', '.join(ENGINES)}")


def _tensorboard_writer(log_dir: str | None, name: str, params: dict[str, Any]) -> Any:
    """A TensorBoard writer for one trial, its hyperparameters written as text; None without ``log_dir``."""
    if log_dir is None:
        return None
    import json

    import tensorflow as tf

    writer = tf.summary.create_file_writer(f"{log_dir}/{name}")
    with writer.as_default():
        tf.summary.text("hyperparameters", json.dumps(params, sort_keys=True, default=str), step=0)
    return writer
