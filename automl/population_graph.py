"""The population's compiled graph: each slot's variables, one forward pass, and every member's optimizer.

What differs between the members of a :class:`automl.population.PopulationMLP` lives in variables indexed
by slot (padded widths and masked depths, per-member activations, batch norm, dropout, L2, label smoothing,
learning rates and update rules, see the module :mod:`automl.population`), so that a new member starts in a
freed slot without tracing again. TensorFlow comes in as an argument: importing this module is cheap.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from automl import training
from automl.bodies import mlp_initial_kernels, periodic_initial_weights

if TYPE_CHECKING:
    from automl.population import PopulationMLP

__all__ = ["PopulationGraph", "ACTIVATIONS", "OPTIMIZERS", "MAX_DEPTH", "VALIDATION_ROWS", "JIT_MIN_SIZE"]

ACTIVATIONS = ("relu", "elu", "selu", "swish", "tanh")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
#: The deepest network of the MLP space: a roomy graph has this many layers (and a round's cost model counts them).
MAX_DEPTH = 3
#: Validation rows scored per call: bounds the (P, rows, width) activations on large tables.
VALIDATION_ROWS = 8192
#: With periodic embeddings, at most this many floats in a call's (P, rows, columns, 2k) features.
_EMBEDDING_FLOATS = 1 << 24
#: Populations of at least this many members compile their step with XLA: on this CPU it was no faster at
#: P ≤ 32 (a call costs ~3 ms more) and 18 % faster at P = 128; on a GPU, where populations reach 256, it fuses
#: the members' small kernels.
JIT_MIN_SIZE = 64
# Keras' defaults, so that a member trains like the one-at-a-time trainer.
_BETA_1, _BETA_2, _EPSILON, _WEIGHT_DECAY, _RHO, _MOMENTUM = 0.9, 0.999, 1e-7, 0.004, 0.9, 0.9
_BN_EPSILON, _BN_MOMENTUM = 1e-3, 0.99


#: A graph's variables with one row per slot (see PopulationGraph.subset), and its lists of them.
_SLOT_VARIABLES = ("units_mask", "layer_on", "bn_on", "cosine", "activation", "optimizer", "dropout", "l2", "lr",
                   "smoothing", "seeds", "born", "age", "active", "losses")
_SLOT_LISTS = ("kernels", "biases", "gammas", "betas", "moving_mean", "moving_var", "slots_m", "slots_v", "embedding")


class PopulationGraph:
    """The population's variables and compiled calls: a training range of steps, and a forward pass.

    Each slot holds a member; what differs between members lives in variables indexed by
    slot, so that :meth:`place` can start a new member in a slot without tracing again.
    A ``roomy`` graph has every structural option of the space (depth, activations, batch
    norm, dropout, smoothing), so that any member of its width fits; otherwise it has
    those of its members. ``embedder`` (the single trainer's periodic
    :class:`automl.layers.NumericInputs`, or None) gives the embedding's columns and sizes:
    each slot then has its own frequencies, kernel and bias, trained with the rest.
    """

    def __init__(self, tf: Any, pop: PopulationMLP, n_features: int, embedder: Any = None,
                 roomy: bool = False) -> None:
        self.tf, self.pop, self.embedder = tf, pop, embedder
        if embedder is not None:  # the first hidden layer takes the embedded numeric columns, then the others
            n_features = len(embedder.columns) * embedder.d_embedding + len(embedder.others)
        members, size = pop.members, pop.size
        self.depth = max([int(p["n_layers"]) for p in members] + [MAX_DEPTH if roomy else 0])
        self.width = max(int(p["units"]) for p in members)
        self.use_bn = roomy or any(p.get("batch_norm") for p in members)
        self.use_dropout = roomy or any(p.get("dropout") for p in members)
        self.use_smoothing = (roomy and pop.task != "regression") or any(training.label_smoothing(p, pop.task)
                                                                        for p in members)
        self.activations = list(ACTIVATIONS) if roomy else sorted({p["activation"] for p in members},
                                                                  key=ACTIVATIONS.index)
        self.n_features, self.size = n_features, size
        f32 = tf.float32
        variable = lambda shape, dtype=f32: tf.Variable(tf.zeros(shape, dtype), trainable=False)  # noqa: E731
        # Per slot: its member's options (set by place), its own step count (Adam's bias correction and the
        # cosine schedule count a member's steps, not the population's) and the epoch it started at.
        self.units_mask = variable([size, self.width])
        self.layer_on = variable([size, self.depth], tf.bool)
        self.bn_on, self.cosine = variable([size], tf.bool), variable([size], tf.bool)
        self.activation, self.optimizer = variable([size], tf.int32), variable([size], tf.int32)
        self.dropout, self.l2, self.lr, self.smoothing = (variable([size]) for _ in range(4))
        self.seeds, self.born, self.age = variable([size], tf.int32), variable([size], tf.int32), variable([size])
        self.schedule_steps = 1.0  # training.SCHEDULE_EPOCHS epochs in steps, set by trainer()
        self.active = tf.Variable(tf.ones([size], tf.bool), trainable=False)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)  # the population's steps (dropout's seed)
        shapes = [(n_features, self.width)] + [(self.width, self.width)] * (self.depth - 1) \
            + [(self.width, pop.n_outputs)]
        self.kernels = [tf.Variable(tf.zeros([size, *s])) for s in shapes]  # hidden layers, then the output layer
        self.biases = [tf.Variable(tf.zeros([size, s[1]])) for s in shapes]
        self.gammas = [tf.Variable(tf.ones([size, self.width])) for _ in range(self.depth)]
        self.betas = [tf.Variable(tf.zeros([size, self.width])) for _ in range(self.depth)]
        self.moving_mean = [variable([size, self.width]) for _ in range(self.depth)]
        self.moving_var = [tf.Variable(tf.ones([size, self.width]), trainable=False) for _ in range(self.depth)]
        # A periodic embedding's frequencies (P, c, k), kernel (P, c, 2k, d) and bias (P, c, d).
        self.embedding = [] if embedder is None else [
            tf.Variable(tf.zeros([size, *w.shape])) for w in (embedder.frequencies, embedder.kernel, embedder.bias)]
        self.weights = self.kernels + self.biases + (self.gammas + self.betas if self.use_bn else []) + self.embedding
        self.slots_m = [tf.Variable(tf.zeros_like(w)) for w in self.weights]
        self.slots_v = [tf.Variable(tf.zeros_like(w)) for w in self.weights]
        self.losses = tf.Variable(tf.zeros([size], f32), trainable=False)
        self._predict, self._rows = None, None  # the compiled forward pass; the training rows as tensors
        for slot, (params, seed) in enumerate(zip(members, pop.seeds, strict=True)):
            self.place(slot, params, seed, 0)

    def place(self, slot: int, params: dict[str, Any], seed: int, epoch: int) -> None:
        """Start a member in ``slot`` at ``epoch``: its options, and the initial weights KerasNetwork starts from
        (placed in the padded tensors) with fresh optimizer state."""
        pop, units, layers = self.pop, int(params["units"]), int(params["n_layers"])
        if units > self.width or layers > self.depth or params["activation"] not in self.activations:
            raise ValueError(f"a member of width {units}, depth {layers} and activation {params['activation']} does "
                             f"not fit a population of width {self.width} and depth {self.depth}")
        values = [(self.units_mask, np.arange(self.width) < units), (self.layer_on, np.arange(self.depth) < layers),
                  (self.bn_on, bool(params.get("batch_norm"))), (self.cosine, params.get("lr_schedule") == "cosine"),
                  (self.activation, self.activations.index(params["activation"])),
                  (self.optimizer, OPTIMIZERS.index(params["optimizer"])),
                  (self.dropout, float(params.get("dropout") or 0.0)),
                  (self.l2, float(params["l2"]) if params.get("l2") else 0.0),
                  (self.lr, float(params["learning_rate"])),
                  (self.smoothing, training.label_smoothing(params, pop.task)),
                  (self.seeds, seed), (self.born, epoch), (self.age, 0.0), (self.losses, 0.0), (self.active, True)]
        for variable, value in values:
            variable[slot].assign(np.asarray(value, dtype=variable.dtype.as_numpy_dtype))
        kernels = mlp_initial_kernels(params, self.n_features, pop.n_outputs, seed)
        for j, variable in enumerate(self.kernels):
            padded = np.zeros(variable.shape[1:], "float32")
            kernel = kernels[-1] if j == self.depth else kernels[j] if j < layers else None
            if j == self.depth and pop.linear:  # the output layer starts at zero: the member starts as the GLM
                kernel = None
            if kernel is not None:  # layers past the member's depth stay zero: unused
                padded[:kernel.shape[0], :kernel.shape[1]] = kernel
            variable[slot].assign(padded)
        if self.embedding:  # the frequencies and kernel; the bias starts at zero (below)
            for variable, value in zip(self.embedding, periodic_initial_weights(self.embedder, seed),
                                       strict=False):
                variable[slot].assign(value)
        for variable in self.biases + self.betas + self.moving_mean + self.slots_m + self.slots_v + self.embedding[2:]:
            variable[slot].assign(np.zeros(variable.shape[1:], "float32"))
        for variable in self.gammas + self.moving_var:
            variable[slot].assign(np.ones(variable.shape[1:], "float32"))

    def subset(self, keep: list[int]) -> PopulationGraph:
        """A graph of the members in slots ``keep`` alone, their state carried over: when most members have
        ended, the rest train at the cost of a smaller population (after one more trace, ~1 s on a CPU)."""
        tf, new = self.tf, copy.copy(self)
        index = tf.constant(keep)
        for name in _SLOT_VARIABLES:
            setattr(new, name, tf.Variable(tf.gather(getattr(self, name), index), trainable=False))
        for name in _SLOT_LISTS:
            setattr(new, name, [tf.Variable(tf.gather(v, index)) for v in getattr(self, name)])
        new.weights = new.kernels + new.biases + (new.gammas + new.betas if new.use_bn else []) + new.embedding
        new.step = tf.Variable(self.step.numpy(), trainable=False)
        new.size, new._predict = len(keep), None
        return new

    # -- the network ------------------------------------------------------------------
    def _member(self, values: Any, like: Any) -> Any:
        """A per-member vector shaped to broadcast against ``like`` (population axis first)."""
        return self.tf.reshape(values, [-1] + [1] * (len(like.shape) - 1))

    def _activate(self, z: Any) -> Any:
        tf = self.tf
        funcs = {"relu": tf.nn.relu, "elu": tf.nn.elu, "selu": tf.nn.selu, "swish": tf.nn.silu, "tanh": tf.nn.tanh}
        out = funcs[self.activations[0]](z)
        for k, name in enumerate(self.activations[1:], start=1):
            out = tf.where(self._member(self.activation == k, z), funcs[name](z), out)
        return out

    def forward(self, x: Any, training_: bool, shared_input: bool = False) -> Any:
        """Raw outputs (logits, or standardized values) of every member: (P, rows, outputs).

        ``x`` is (P, rows, features), or (rows, features) for every member with ``shared_input``.
        """
        tf, h = self.tf, self._embed(x, shared_input)
        for layer in range(self.depth):
            first = layer == 0 and shared_input and not self.embedding
            z = tf.einsum("bi,piu->pbu" if first else "pbi,piu->pbu", h, self.kernels[layer])
            z += self.biases[layer][:, None, :]
            if self.use_bn:
                z = tf.where(self._member(self.bn_on, z), self._normalize(z, layer, training_), z)
            a = self._activate(z)
            if training_ and self.use_dropout:
                rate = self._member(self.dropout, a)
                seed = tf.stack([tf.cast(self.step, tf.int32), layer])
                keep = tf.random.stateless_uniform(tf.shape(a), seed=seed) >= rate
                a = tf.where(keep, a / (1.0 - rate), 0.0)
            a *= self.units_mask[:, None, :]
            h = a if layer == 0 else tf.where(self._member(self.layer_on[:, layer], a), a, h)
        return tf.einsum("pbi,pio->pbo", h, self.kernels[-1]) + self.biases[-1][:, None, :]

    def _embed(self, x: Any, shared_input: bool) -> Any:
        """``x`` with each member's periodic embedding of the numeric columns (as NumericInputs computes it),
        then the other columns: (P, rows, inputs); ``x`` itself without embeddings."""
        if not self.embedding:
            return x
        tf, e = self.tf, self.embedder
        frequencies, kernel, bias = self.embedding
        # As int32 constants: an empty list of other columns (every input numeric) would convert to float32.
        v = tf.gather(x, tf.constant(e.columns, tf.int32), axis=-1)
        others = tf.gather(x, tf.constant(e.others, tf.int32), axis=-1)
        if shared_input:
            v, others = v[None], tf.broadcast_to(others[None], [self.size, *tf.unstack(tf.shape(others))])
        angles = 2.0 * math.pi * v[..., None] * frequencies[:, None]  # (P, rows, c, k)
        features = tf.concat([tf.sin(angles), tf.cos(angles)], axis=-1)
        h = tf.nn.relu(tf.einsum("pnck,pckd->pncd", features, kernel) + bias[:, None])
        h = tf.reshape(h, [self.size, tf.shape(h)[1], len(e.columns) * e.d_embedding])
        return tf.concat([h, others], axis=-1) if e.others else h

    def _normalize(self, z: Any, layer: int, training_: bool) -> Any:
        tf = self.tf
        if training_:
            mean, var = tf.nn.moments(z, axes=[1])
            on = self._member(tf.logical_and(self.bn_on, self.active), mean)
            self.moving_mean[layer].assign(tf.where(on, self.moving_mean[layer] * _BN_MOMENTUM
                                                    + mean * (1.0 - _BN_MOMENTUM), self.moving_mean[layer]))
            self.moving_var[layer].assign(tf.where(on, self.moving_var[layer] * _BN_MOMENTUM
                                                   + var * (1.0 - _BN_MOMENTUM), self.moving_var[layer]))
        else:
            mean, var = self.moving_mean[layer], self.moving_var[layer]
        return tf.nn.batch_normalization(z, mean[:, None, :], var[:, None, :], self.betas[layer][:, None, :],
                                         self.gammas[layer][:, None, :], _BN_EPSILON)

    def _member_losses(self, y: Any, out: Any) -> Any:
        """Each member's training loss on its batch, L2 penalty included: (P,)."""
        tf, task = self.tf, self.pop.task
        smoothing = self.smoothing[:, None, None]  # Keras' label smoothing, per member
        if task == "binary":
            labels = y * (1.0 - smoothing) + 0.5 * smoothing
            per_row = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=out)[..., 0]
        elif task == "multiclass" and self.use_smoothing:
            labels = tf.one_hot(y, self.pop.n_outputs) * (1.0 - smoothing) + smoothing / self.pop.n_outputs
            per_row = tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=out)
        elif task == "multiclass":
            per_row = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=out)
        else:
            per_row = tf.square(out - y)[..., 0]
        loss = tf.reduce_mean(per_row, axis=1)
        penalty = tf.add_n([tf.reduce_sum(tf.square(k), axis=[1, 2]) for k in self.kernels[:-1]])
        return loss + self.l2 * penalty

    # -- the optimizers ---------------------------------------------------------------
    def _coefficients(self) -> dict[str, Any]:
        """Per-member coefficients of one update rule that is Adam, AdamW, RMSprop or SGD+Nesterov by its values.

        ``m = c1·m + c2·g``, ``v = c3·v + c4·g²``, ``w = w·(1 − decay) − rate·(c5·m + c6·g) / (√(v + e1) + e2)``.
        One rule with per-member values costs a third of running the three rules and
        choosing. SGD's momentum holds gradients scaled by the learning rate of their step,
        as Keras keeps it (under a schedule the rates differ from step to step), so its
        rate is 1. A frozen member gets rate 0 and decay 0: its weights no longer change.
        """
        tf = self.tf
        t = self.age
        kind = self.optimizer
        adam, adamw, rms = kind == 0, kind == 1, kind == 2
        adam_like = tf.logical_or(adam, adamw)
        pick = lambda a, r, s: tf.where(adam_like, a, tf.where(rms, r, s))  # noqa: E731
        one, zero = tf.ones_like(self.lr), tf.zeros_like(self.lr)
        on = tf.cast(self.active, tf.float32)
        alpha = tf.sqrt(1.0 - tf.pow(_BETA_2, t)) / (1.0 - tf.pow(_BETA_1, t))
        # Keras' CosineDecay at the step before this one's increment (the optimizer's ``iterations``).
        annealed = 0.5 * (1.0 + tf.cos(math.pi * tf.minimum((t - 1.0) / self.schedule_steps, 1.0)))
        lr = self.lr * tf.where(self.cosine, annealed, 1.0)
        return {"c1": pick(_BETA_1 * one, zero, _MOMENTUM * one), "c2": pick((1.0 - _BETA_1) * one, zero, lr),
                "c3": pick(_BETA_2 * one, _RHO * one, zero),
                "c4": pick((1.0 - _BETA_2) * one, (1.0 - _RHO) * one, zero),
                "c5": pick(one, zero, _MOMENTUM * one), "c6": pick(zero, one, lr),
                "e1": pick(zero, _EPSILON * one, one), "e2": pick(_EPSILON * one, zero, zero),
                "rate": on * pick(lr * alpha, lr, one),
                "decay": on * tf.where(adamw, _WEIGHT_DECAY * lr, 0.0)}

    def _apply(self, grads: list[Any]) -> None:
        """One step of each member's optimizer (Keras' rules and defaults), its gradients clipped to its own
        global norm as Keras' ``global_clipnorm`` does (:data:`automl.training.GRADIENT_CLIP_NORM`)."""
        tf = self.tf
        squares = tf.add_n([tf.reduce_sum(tf.square(g), axis=list(range(1, len(g.shape)))) for g in grads])
        clip = training.GRADIENT_CLIP_NORM
        scale = clip / tf.maximum(tf.sqrt(squares), clip)  # (P,): 1 for a member within the norm
        grads = [g * self._member(scale, g) for g in grads]
        self.step.assign_add(1)
        self.age.assign_add(tf.cast(self.active, tf.float32))
        coefficients = self._coefficients()
        shaped: dict[int, dict[str, Any]] = {}
        for w, g, m, v in zip(self.weights, grads, self.slots_m, self.slots_v, strict=True):
            c = shaped.setdefault(len(w.shape), {k: self._member(value, w) for k, value in coefficients.items()})
            m.assign(c["c1"] * m + c["c2"] * g)
            v.assign(c["c3"] * v + c["c4"] * tf.square(g))
            step = (c["c5"] * m + c["c6"] * g) / (tf.sqrt(v + c["e1"]) + c["e2"])
            w.assign(w * (1.0 - c["decay"]) - c["rate"] * step)

    # -- calls ----------------------------------------------------------------------
    def trainer(self, x: np.ndarray, y: np.ndarray,
                offsets: np.ndarray | None = None) -> tuple[Callable[[int, int], float], int]:
        """``train(first, count)`` running steps ``first`` to ``first + count`` for every member; steps per epoch.
        ``offsets`` (rows, outputs), a GLM start's logits, add to every member's.

        Member i's epoch e (counted from the epoch it started at) takes its batches in the stateless
        shuffle seeded ``(seed_i, e)``, as :func:`automl.steps.compiled_steps` does for a single network.
        """
        tf = self.tf
        n = int(x.shape[0])
        batch_size = min(self.pop.batch_size, n)
        steps = -(-n // batch_size)
        self.schedule_steps = float(training.SCHEDULE_EPOCHS * steps)
        if self._rows is None:  # once per population: a smaller graph (subset) shares them
            self._rows = (tf.constant(x), tf.constant(y), None if offsets is None else tf.constant(offsets))
        xs, ys, os = self._rows
        order = tf.Variable(tf.zeros([self.size, n], tf.int32), trainable=False)

        def shuffle(epoch: Any) -> Any:  # each member's epoch counts from the one it started at
            return tf.map_fn(lambda s: tf.random.experimental.stateless_shuffle(tf.range(n), seed=s),
                             tf.stack([self.seeds, epoch - self.born], axis=1))

        def step_on(xb: Any, yb: Any, ob: Any) -> None:
            with tf.GradientTape() as tape:
                out = self.forward(xb, True)
                losses = self._member_losses(yb, out if ob is None else out + ob)
                # Members are independent: the sum's gradient for a member's weights is its own loss's.
                total = tf.reduce_sum(tf.where(self.active, losses, 0.0))
            self._apply(tape.gradient(total, self.weights, unconnected_gradients=tf.UnconnectedGradients.ZERO))
            self.losses.assign(tf.where(self.active, losses, self.losses))

        one_step = tf.function(step_on, jit_compile=self.size >= JIT_MIN_SIZE)

        def run(first: Any, count: Any) -> Any:
            for step in tf.range(first, first + count):
                epoch, s = step // steps, step % steps
                if s == 0:
                    order.assign(shuffle(epoch))
                idx = order[:, s * batch_size: tf.minimum((s + 1) * batch_size, n)]
                one_step(tf.gather(xs, idx), tf.gather(ys, idx), None if os is None else tf.gather(os, idx))
            return tf.constant(0.0)

        spec = tf.TensorSpec([], tf.int32)
        graph = tf.function(run).get_concrete_function(spec, spec)

        def train(first: int, count: int) -> float:
            graph(tf.constant(first, tf.int32), tf.constant(count, tf.int32))
            return 0.0  # losses are checked per member after each chunk (fit)

        return train, steps

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Every member's raw outputs on ``x``: (P, rows, outputs), in row chunks of :data:`VALIDATION_ROWS`."""
        tf = self.tf
        if self._predict is None:
            spec = tf.TensorSpec([None, x.shape[1]], tf.float32)
            forward = tf.function(lambda rows: self.forward(rows, False, shared_input=True))
            self._predict = forward.get_concrete_function(spec)
        rows = VALIDATION_ROWS
        if self.embedding:  # the (P, rows, c, 2k) features of the embedding bound the rows of a call
            rows = max(64, min(rows, _EMBEDDING_FLOATS // (self.size * int(np.prod(self.embedding[1].shape[1:3])))))
        parts = [self._predict(tf.constant(x[i:i + rows])).numpy() for i in range(0, len(x), rows)]
        return np.concatenate(parts, axis=1)

    def last_losses(self) -> np.ndarray:
        return self.losses.numpy()

    def freeze(self, i: int) -> None:
        self.active[i].assign(False)
