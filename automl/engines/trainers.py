"""What a trial is, for every engine: train one configuration (or a population of them) on the search split and
score its validation rows."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from automl.devices import distributed
from automl.engines.base import HYPERBAND_MIN_EPOCHS, SearchData

if TYPE_CHECKING:
    from automl.metrics import Metric

__all__ = ["train_trial", "MemberOutcome", "train_population"]


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

    net = KerasNetwork(params, data.task, epochs=max_epochs, seed=seed, n_classes=data.n_classes, family=data.family,
                       n_codes=data.n_codes)
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
        # The best validation's score: fit kept that epoch's weights (predicting the validation rows again would
        # cost a CNN with test-time views as much as that validation did, after the deadline).
        value = sign * max(score for _, score in net.history_) if net.history_ else \
            metric.fn(data.y_val, net.predict_proba(data.x_val))
        if data.model_dir is not None and math.isfinite(value):
            from automl.io import atomic_dir

            with atomic_dir(Path(data.model_dir) / name) as folder:  # whole or not at all: a worker may be killed
                net.save(folder)
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
        width = data.x_train.shape[1] - data.n_codes  # members read the one-hot columns, not the category codes
        pop.fit(data.x_train[:, :width], data.y_train, data.x_val[:, :width],
                monitor=lambda p: sign * metric.fn(data.y_val, p),
                report=None if report is None else lambda k, score, epoch: report(ids[k], sign * score, epoch),
                deadline=deadline, refill=more if refill is not None else None, done=ended)
    return outcomes


def _unsupported(params: dict[str, Any], activations: tuple[str, ...], optimizers: tuple[str, ...]) -> str:
    """Why a population cannot train ``params`` (as the trial's error), or an empty string."""
    for name, known in (("activation", activations), ("optimizer", optimizers)):
        if params[name] not in known:
            return f"ValueError: unknown {name} {params[name]!r}; use one of {', '.join(known)}"
    return ""


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
