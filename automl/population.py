"""Population training: many MLP configurations trained at once, as one compiled graph.

A search trial of a small network spends almost all its time in per-step overhead, not
arithmetic (issue 13): stacking P configurations along a leading population axis shares
that overhead among P trials. Members share a batch size and their inputs (the engine
groups them so): quantile scaling or not (one input matrix), periodic embeddings of the
numeric columns or not (one graph; each member has its own embedding weights). Everything
else is per member:

- widths are padded to the population's widest layer, the padding masked to zero (its
  weights get no gradient and stay zero);
- depth is masked: a member with fewer layers passes its activations through the rest;
- activation, batch norm, dropout rate and L2 are chosen per member with ``tf.where``;
- Adam, AdamW, RMSprop and SGD (Keras' update rules and defaults) run side by side, each
  member's learning rate a tensor entry, constant or cosine-annealed; label smoothing per member;
- every member has its own initial weights and its own epoch shuffles, those of
  :class:`automl.training.KerasNetwork` with the same seed: without dropout, a member
  trains as the one-at-a-time trainer would (dropout masks come from another stream).

Every :data:`automl.training.EPOCH_CHUNK` epochs all members are scored on the validation
rows; a member whose score stalled, whose pruner said stop or whose loss diverged is
frozen (its updates masked) while the others go on. A frozen member's slot still costs its
share of every step, so the engine may give it to a new member at once (``refill``: the
slot's weights, optimizer state and step count start afresh, and the member trains as it
would alone); without new members, a population whose slots are half empty goes on as a
smaller graph. Only each member's best validation predictions are kept, not its weights:
a search trial's result is its score, and the refit trains the chosen configuration again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from automl import training
from automl.bodies import numeric_inputs
from automl.population_graph import ACTIVATIONS, MAX_DEPTH, OPTIMIZERS, VALIDATION_ROWS, PopulationGraph

__all__ = ["PopulationMLP", "MemberResult", "ACTIVATIONS", "OPTIMIZERS", "VALIDATION_ROWS", "choose_size",
           "trains_alone", "MAX_SIZE", "MAX_SIZE_GPU", "MIN_SIZE", "FLOPS_PER_THREAD", "FLOPS_PER_GPU"]

#: The options a population's members share, with their defaults: they decide its input matrix and graph (a GLM
#: start, ``linear_start``, is one fixed offset to every member's logits). A packed ensemble (``ensemble_size`` > 1)
#: is a population of its own, of copies of one configuration (:class:`automl.layers.PackedDense`), and a network
#: that embeds category codes has tables the population graph does not hold: these train alone
#: (:func:`trains_alone`), so a round shares those options too.
SHARED = {"input_scaling": "standard", "numeric_embedding": "none", "ensemble_size": 1,
          "categorical_embedding": "onehot", "linear_start": False}
#: A population of at least this many slots goes on as a smaller graph once half of them are empty (and no new
#: members come): each slot costs its share of every step whether its member trains or not.
COMPACT_MIN_SIZE = 4
#: Most members per round on a CPU: past ~32 a step costs linearly in P (bench/trial_speed.py), and a larger
#: round only delays what TPE learns from it. On a GPU, where a step of 256 small networks costs what one does:
MAX_SIZE, MAX_SIZE_GPU = 32, 256
#: Below this a population is no faster per trial than the one-at-a-time trainer (0.44 vs 0.48 s per 100-epoch
#: trial at P = 8 on Pima, bench/trial_speed.py): such a round trains its first trial alone.
MIN_SIZE = 8
#: The cost model of a round (measured with bench/trial_speed.py on 2 cores: 5.5 ms a step at P = 32 for the
#: 2x64 warm start at batch 32, 0.77 ms at P = 1): a fixed cost per step, and the members' matmuls at the
#: rate TensorFlow's batched matmuls reach per CPU thread (or on a GPU, conservatively).
STEP_SECONDS = 7e-4
FLOPS_PER_THREAD, FLOPS_PER_GPU = 3e9, 2e12
#: A round may take this share of the trials' time left: TPE learns between rounds, and a deadline cuts few short.
_ROUND_SHARE = 1 / 3
#: Epochs a member trains on average: early stopping and pruning end most before the maximum.
_EXPECTED_EPOCHS = 50
#: NumericInputs' default frequencies and outputs per column (k = d = 16): a periodic member's cost.
_EMBEDDING_WIDTH = 16


def choose_size(params: dict[str, Any], rows: int, n_features: int, seconds_left: float, flops: float,
                limit: int | None = None) -> int:
    """Members in a round with ``params``' batch size and width: as many as fit in a third of ``seconds_left``
    by the cost model (per step: ``STEP_SECONDS`` plus the members' matmuls at ``flops``), at most ``limit``
    (and :data:`MAX_SIZE`, or :data:`MAX_SIZE_GPU` when ``flops`` is a GPU's); 1 (train alone) when fewer
    than :data:`MIN_SIZE` fit, or when ``params`` trains alone (:func:`trains_alone`)."""
    if trains_alone(params):
        return 1
    steps, member_flops = _step_costs(params, rows, n_features)
    fits = int((seconds_left * _ROUND_SHARE / steps - STEP_SECONDS) * flops / member_flops)
    size = min(fits, limit or fits, MAX_SIZE_GPU if flops >= FLOPS_PER_GPU else MAX_SIZE)
    return size if size >= MIN_SIZE else 1


def _step_costs(params: dict[str, Any], rows: int, n_features: int) -> tuple[int, float]:
    """A member's steps in a round, and its floating-point operations per step (forward and backward)."""
    batch, width = min(int(params["batch_size"]), rows), int(params["units"])
    inputs, embedding = n_features, 0.0
    if params.get("numeric_embedding", "none") == "periodic":  # as if every column were numeric: an upper bound
        inputs, embedding = n_features * _EMBEDDING_WIDTH, n_features * (2 * _EMBEDDING_WIDTH + 1) * _EMBEDDING_WIDTH
    return (_EXPECTED_EPOCHS * -(-rows // batch),
            6.0 * batch * (embedding + inputs * width + (MAX_DEPTH - 1) * width * width + width))


def trains_alone(params: dict[str, Any]) -> bool:
    """Whether ``params`` trains alone, never in a population: a packed ensemble of several networks, or a
    network that embeds category codes."""
    return int(params.get("ensemble_size", 1)) > 1 or params.get("categorical_embedding") == "embedding"


@dataclass
class MemberResult:
    """One member's outcome: best monitored score, its epoch and validation predictions, or why it ended."""

    score: float = -math.inf
    best_epoch: int = 0
    proba: np.ndarray | None = None
    #: Non-empty when the member failed (its loss diverged): the trial is recorded as failed.
    error: str = ""
    #: True when ``report`` asked to stop it (the pruner).
    pruned: bool = False
    #: Epochs it trained before it stopped.
    epochs: int = 0
    #: The deadline ended its training (it was still learning).
    cut: bool = False
    #: Its share of the population's training time so far (by epochs trained): what it would have cost alone, about.
    seconds: float = 0.0


class PopulationMLP:
    """P MLP configurations (``members``, params of :data:`automl.spaces.MLP_SPACE`) sharing a batch size, an
    ``input_scaling`` and a ``numeric_embedding`` (the :data:`SHARED` options).

    ``seeds[i]`` is member i's seed; ``task`` and ``n_classes`` as in
    :class:`~automl.training.KerasNetwork`; each member trains at most ``epochs`` epochs.
    """

    def __init__(self, members: Sequence[dict[str, Any]], seeds: Sequence[int], task: str, n_classes: int = 2,
                 epochs: int = 100) -> None:
        sizes = {int(p["batch_size"]) for p in members}
        if len(sizes) != 1:
            raise ValueError(f"a population shares one batch size; got {sorted(sizes)}")
        inputs = {tuple(p.get(name, default) for name, default in SHARED.items()) for p in members}
        if len(inputs) != 1:
            raise ValueError(f"a population shares one {' and one '.join(SHARED)}; got {sorted(inputs)}")
        if any(trains_alone(p) for p in members):
            raise ValueError("a packed ensemble or a network embedding category codes trains alone, not in a "
                             "population")
        if len(members) != len(seeds) or not members:
            raise ValueError("one seed per member, and at least one member")
        self.members, self.seeds, self.task = list(members), list(seeds), task
        self.n_classes, self.epochs = n_classes, epochs
        self.batch_size = sizes.pop()
        shared = dict(zip(SHARED, inputs.pop(), strict=True))
        self.scaling, self.embedding = shared["input_scaling"], shared["numeric_embedding"]
        self.linear = bool(shared["linear_start"])
        self.n_outputs = n_classes if task == "multiclass" else 1
        self.y_mean_, self.y_std_ = 0.0, 1.0

    @property
    def size(self) -> int:
        return len(self.members)

    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, monitor: Callable[[np.ndarray], float],
            report: Callable[[int, float, int], bool] | None = None, deadline: float | None = None,
            refill: Callable[[], tuple[dict[str, Any], int] | None] | None = None,
            done: Callable[[int, MemberResult], None] | None = None) -> list[MemberResult]:
        """Train every member; ``monitor(proba_val)`` scores one member's validation predictions (higher is better).

        ``report(i, score, epoch)`` is called for member i after each validation; when it
        returns True the member stops (pruned). Training ends for all at ``deadline``
        (a ``time.monotonic()`` value), at most a call of ``CHUNK_SECONDS`` later.

        ``refill()``, when given, is asked for a new member (params and seed, or None) each time
        a member ends: it starts in the freed slot at once, so the population stays full
        instead of waiting for its slowest member (new members are numbered on from the
        initial ones; every structural option of the space is then built into the graph).
        ``done(i, result)`` is called as member i ends. Returns every member's result.
        """
        tf = training._tf()
        x, y, x_val = np.asarray(x, dtype="float32"), np.asarray(y), np.asarray(x_val, dtype="float32")
        if self.task == "regression":
            self.y_mean_, self.y_std_ = float(np.mean(y)), float(np.std(y) or 1.0)
        start = self._start(x, y, x_val, monitor)  # on the unscaled rows, as the single trainer's
        # The single trainer's scaler (fitted on the training rows) and embedding layout, from the same function.
        scaler, embedder = numeric_inputs(x, self.scaling, self.embedding)
        if scaler is not None:  # the scaler is fixed: every member sees the same scaled rows
            x, x_val = np.asarray(scaler(x)), np.asarray(scaler(x_val))
        net, targets = PopulationGraph(tf, self, x.shape[1], embedder, roomy=refill is not None), self._targets(y)
        run = _Training(self, net, x, targets, deadline, refill, done, start)
        steps = 0
        while run.any_training():
            steps = run.train_chunk(steps)
            epoch = -(-steps // run.per_epoch)
            run.validate(x_val, epoch, monitor, report)
            if run.pacer.past_deadline():
                run.cut_all()
                break
            run.refill_empty_slots(epoch)
            run.compact()
        return run.results

    def _start(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray,
               monitor: Callable[[np.ndarray], float]) -> _Start | None:
        """With ``linear_start``, the GLM of the training rows (:func:`automl.bodies.start_glm`, as the single
        trainer fits it) as logits added to every member's, on the training and validation rows; scored as each
        member's epoch 0 (the MLPs' output layers start at zero: every member starts as the GLM)."""
        if not self.linear:
            return None
        from automl.bodies import start_glm

        kernel, bias = start_glm(x, self._targets(y).ravel() if self.task == "regression" else y, self.task,
                                 self.n_outputs)
        train, val = x @ kernel + bias, x_val @ kernel + bias
        proba = self._proba(val)
        return _Start(train, val, monitor(proba), proba)

    # The single trainer's target encoding (standardized values, (n, 1) floats or class indices).
    _targets = training.KerasNetwork._targets

    def _proba(self, logits: np.ndarray) -> np.ndarray | None:
        """What ``KerasNetwork.predict_proba`` returns, from one member's raw outputs; None if not finite."""
        out = logits.astype("float64")
        if not np.all(np.isfinite(out)):
            return None
        if self.task == "binary":
            p = 1.0 / (1.0 + np.exp(-out[:, 0]))
            return np.column_stack([1.0 - p, p])
        if self.task == "multiclass":
            e = np.exp(out - out.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        return out[:, 0] * self.y_std_ + self.y_mean_


@dataclass
class _Start:
    """A GLM start's logits on the training and validation rows, its validation score and predictions."""

    train: np.ndarray
    val: np.ndarray
    score: float
    proba: np.ndarray


class _Training:
    """One call of :meth:`PopulationMLP.fit`: the graph and its pacer, the member each slot trains (None once the
    slot is empty), the epoch it started at and its validations without progress, and every member's result."""

    def __init__(self, pop: PopulationMLP, net: PopulationGraph, x: np.ndarray, targets: np.ndarray,
                 deadline: float | None, refill: Callable[[], tuple[dict[str, Any], int] | None] | None,
                 done: Callable[[int, MemberResult], None] | None, start: _Start | None = None) -> None:
        self.pop, self.net, self.x, self.targets, self.deadline = pop, net, x, targets, deadline
        self.refill, self.done, self.start = refill, done, start
        self.offsets = None if start is None else start.train
        train, self.per_epoch = net.trainer(x, targets, self.offsets)
        self.pacer = training._Pacer(train, self.per_epoch, deadline)
        self.results = [self._result() for _ in pop.members]
        self.slots: list[int | None] = list(range(pop.size))
        self.born = [0] * pop.size
        self.stale = [0] * pop.size
        self.rhythm, self.started, self.member_epochs = training.EPOCH_CHUNK * self.per_epoch, time.monotonic(), 0

    def _result(self) -> MemberResult:
        """A new member's result: its GLM start's (epoch 0) where it has one."""
        start = self.start
        return MemberResult() if start is None else MemberResult(score=start.score, proba=start.proba)

    def any_training(self) -> bool:
        return any(i is not None for i in self.slots)

    def train_chunk(self, steps: int) -> int:
        """Train from step ``steps`` to the next validation (every EPOCH_CHUNK epochs, or a member's last epoch);
        the step reached."""
        last = min((self.born[k] + self.pop.epochs) * self.per_epoch for k, i in enumerate(self.slots)
                   if i is not None)
        return self.pacer.train_until(steps, min(last, (steps // self.rhythm + 1) * self.rhythm))

    def validate(self, x_val: np.ndarray, epoch: int, monitor: Callable[[np.ndarray], float],
                 report: Callable[[int, float, int], bool] | None) -> None:
        """Score each member at ``epoch``; end those that diverged, were pruned, stalled or reached their epochs."""
        losses, outputs = self.net.last_losses(), self.net.predict(x_val)
        if self.start is not None:
            outputs = outputs + self.start.val
        for slot, i in enumerate(self.slots):
            if i is None:
                continue
            result = self.results[i]
            result.epochs = epoch - self.born[slot]
            proba = self.pop._proba(outputs[slot])
            if not math.isfinite(float(losses[slot])) or proba is None:
                result.error = (f"training loss became {float(losses[slot])} at epoch {result.epochs}; the "
                                "learning rate is probably too high")
                self.end(slot)
                continue
            score = monitor(proba)
            self.stale[slot] = 0 if score > result.score else self.stale[slot] + 1
            if score >= result.score:  # a tie keeps the later epoch, as automl.training does
                result.score, result.best_epoch, result.proba = score, result.epochs, proba
            if report is not None and report(i, score, result.epochs):
                result.pruned = True
                self.end(slot)
            elif self.stale[slot] >= training.PATIENCE_CHUNKS or result.epochs >= self.pop.epochs:
                self.end(slot)

    def cut_all(self) -> None:
        """The deadline came: every member still training ends, cut short."""
        for slot, i in enumerate(self.slots):
            if i is not None:
                self.results[i].cut = True
                self.end(slot)

    def refill_empty_slots(self, epoch: int) -> None:
        """Start a new member from ``refill`` in each empty slot, until the engine has no more."""
        for slot in [k for k, i in enumerate(self.slots) if i is None] if self.refill is not None else []:
            member = self.refill()
            if member is None:
                self.refill = None  # the engine has no more: the population drains
                break
            self.pop.members.append(member[0])
            self.pop.seeds.append(member[1])
            self.results.append(self._result())
            self.slots[slot], self.born[slot], self.stale[slot] = len(self.results) - 1, epoch, 0
            self.net.place(slot, member[0], member[1], epoch)

    def compact(self) -> None:
        """Without new members, go on as a smaller graph once at most half of the slots still train."""
        keep = [k for k, i in enumerate(self.slots) if i is not None]
        if self.refill is None and len(self.slots) >= COMPACT_MIN_SIZE and 0 < len(keep) <= len(self.slots) // 2:
            # A slot of an ended member still costs its share of every step: train the rest as a smaller graph.
            self.net = self.net.subset(keep)
            self.pacer = training._Pacer(self.net.trainer(self.x, self.targets, self.offsets)[0], self.per_epoch,
                                         self.deadline)
            self.slots = [self.slots[k] for k in keep]
            self.born, self.stale = [self.born[k] for k in keep], [self.stale[k] for k in keep]

    def end(self, slot: int) -> None:
        """Member ``slot`` stops: its slot is frozen and emptied, its share of the time so far recorded."""
        self.net.freeze(slot)
        i, self.slots[slot] = self.slots[slot], None
        result = self.results[i]
        self.member_epochs += result.epochs
        result.seconds = result.epochs * (time.monotonic() - self.started) / max(self.member_epochs, 1)
        if self.done is not None:
            self.done(i, result)
