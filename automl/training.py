"""Training Keras networks fast, behind a small scikit-learn-like estimator.

Keras' ``fit`` spends most of a small-data epoch in its data adapter and callback
machinery (TOOLCHAIN.md). Here training runs as one compiled graph per network that
trains a given range of steps (:mod:`automl.steps`: batches gathered from tensors on the
device, or stored images streamed from disk). Calls are sized in steps, so that
each takes about :data:`CHUNK_SECONDS` whatever an epoch costs, and the deadline is
checked between them; every :data:`EPOCH_CHUNK` epochs we score the validation rows,
report to a pruner and keep the best weights. TensorFlow is imported lazily:
importing this module is cheap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from automl import steps
from automl.bodies import BODIES, initial_weights, linear_start, numeric_inputs, predict_views, tta_views
from automl.errors import FailedTrialError
from automl.image_store import ImageRows, in_batches

__all__ = ["KerasNetwork", "EPOCH_CHUNK", "SCHEDULE_EPOCHS", "label_smoothing"]

#: Epochs between validations: the granularity of early stopping and pruning.
EPOCH_CHUNK = 5
#: Early stopping patience, in chunks of epochs.
PATIENCE_CHUNKS = 4
#: Seconds one compiled call should take at most: a deadline binds within about this, plus one step.
CHUNK_SECONDS = 1.0
#: A cosine schedule (``lr_schedule="cosine"``) anneals the learning rate to zero over this many epochs, whatever
#: the epochs planned: a refit of a trial's best epoch count then sees the learning rates the trial saw.
SCHEDULE_EPOCHS = 100
#: An MLP's gradients are scaled down to this global norm when larger (Keras' ``global_clipnorm``; a population
#: member's are, by its own norm): one bad batch at a high learning rate no longer throws a network far off.
GRADIENT_CLIP_NORM = 1.0
#: Images a CNN predicts at a time (with five test-time views of 64x64 images, 32 filters: ~800 MB of activations).
PREDICT_IMAGES = 256
#: A fit's own held-out rows (``KerasNetwork.validation_share``): at most this many (the search scores its trials
#: on as many), and none below the least that says anything about an epoch.
MAX_HELD_OUT, MIN_HELD_OUT = 10_000, 30


def _tf():
    import tensorflow as tf

    return tf


@dataclass
class KerasNetwork:
    """A Keras network (``family`` "mlp" or "cnn") with scikit-learn's ``fit``/``predict_proba`` shape.

    ``task`` is ``binary``, ``multiclass``, ``image`` or ``regression``; ``params`` come from the family's space in
    :mod:`automl.spaces`. With validation data, training stops early and keeps the best epoch (``best_epoch_``);
    without, it trains ``epochs`` epochs. Regression targets are standardized for training and mapped back on
    predict. On large tables the caller samples the rows it trains on before preprocessing (``Candidate.max_rows``,
    see :func:`automl.evaluation.cross_validate`).
    """

    params: dict[str, Any]
    task: str
    epochs: int = 100
    seed: int = 0
    n_classes: int = 2
    family: str = "mlp"
    model_: Any = field(default=None, repr=False)
    best_epoch_: int = 0
    history_: list[tuple[int, float]] = field(default_factory=list, repr=False)
    y_mean_: float = 0.0
    y_std_: float = 1.0
    _forward: Any = field(default=None, repr=False)
    #: True when a deadline stopped training before its planned epochs.
    cut_short_: bool = False
    #: Training steps (batches) the last ``fit`` ran.
    n_steps_: int = 0
    #: Share of the training rows a ``fit`` without validation data holds out to stop early on and keep the
    #: best epoch by (their loss): a refit for a fixed epoch count at a high learning rate can end far past its
    #: best. 0: train the ``epochs`` given.
    validation_share: float = 0.0
    #: The last ``n_codes`` input columns are category codes (``make_preprocessor(kind="network")``): an MLP embeds
    #: them (``categorical_embedding="embedding"``) or drops them and reads the one-hot columns before them.
    n_codes: int = 0
    #: Each code column's levels (its largest code in the rows ``fit`` was given, plus one).
    code_levels_: list[int] = field(default_factory=list)
    #: A folder :meth:`save` wrote, whose network ``fit`` loads instead of training: a search
    #: trial's own model, under a holdout trained on rows of the protocol's training part already.
    pretrained: str | None = None
    #: The whole network's weights at its GLM start (``linear_start``, when a fit validated it): see
    #: :meth:`swap_start`.
    start_weights_: list[Any] | None = field(default=None, repr=False)
    #: Train in the graph of the latest fit of this shape (:func:`automl.steps.reused_steps`): a CV's folds.
    reuse_graph: bool = False

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_forward": None}  # a tf.function does not pickle

    @property
    def _head(self) -> str:
        return "multiclass" if self.task == "image" else self.task

    # -- building -----------------------------------------------------------------
    @property
    def members(self) -> int:
        """Networks packed in this one (``ensemble_size``, 1 for a plain MLP or a CNN)."""
        return int(self.params.get("ensemble_size", 1)) if self.family == "mlp" else 1

    def _build(self, x: np.ndarray, y: np.ndarray | None = None,
               given: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[Any, Any, np.ndarray]:
        """The network, the part of it that trains, and the rows that part trains on.

        With quantile or robust scaling the network is the fixed scaler followed by the part that trains: the
        scaler transforms the training rows once here rather than at every step. A packed ensemble's part that
        trains outputs every member's prediction (each member has its own loss); the network their mean. With a
        GLM start (:meth:`_start`) the part that trains reads each row's GLM logits after its features.
        """
        import keras

        from automl.layers import SplitLast

        keras.utils.set_random_seed(self.seed)
        scaler = embedder = None
        if self.family == "mlp":  # codes are not numbers: they pass the numeric layers, last, to their own
            scaler, embedder = numeric_inputs(x, self.params.get("input_scaling", "standard"),
                                               self.params.get("numeric_embedding", "none"), skip=self.n_codes)
        start, raw_shape = self._start(x, y, given), tuple(x.shape[1:])
        features = x if scaler is None else np.asarray(scaler(x))
        if start is not None:  # the GLM's logits of the rows, on their unscaled features as GLM_1 reads them
            features = np.concatenate([features, x[:, :x.shape[1] - self.n_codes] @ start[0] + start[1]], axis=1)
        inputs = keras.Input(tuple(features.shape[1:]))
        h, offset = (inputs, None) if start is None else SplitLast(self._units)(inputs)
        h = h if embedder is None else embedder(h)
        if self.n_codes:
            from automl.layers import CategoryEmbeddings

            h = CategoryEmbeddings(self.code_levels_, self.params.get("categorical_embedding", "onehot"))(h)
        h = BODIES[self.family](keras, h, self.params)
        outputs, head = self._outputs(keras, h, offset)
        if self.members > 1:  # a packed ensemble: its members' outputs train; their mean predicts
            from automl.layers import MemberMean

            trained, network = keras.Model(inputs, outputs), keras.Model(inputs, MemberMean()(outputs))
        else:
            network = trained = keras.Model(inputs, outputs)
        if self.family == "mlp":
            initial_weights(keras, self.params, self.seed, network, embedder, head, start is not None)
        if scaler is None and start is None:
            return network, trained, features
        raw = keras.Input(raw_shape)
        h = raw if scaler is None else scaler(raw)
        if start is not None:
            h = keras.layers.Concatenate()([h, linear_start(keras, raw, *start, self.n_codes)])
        return keras.Model(raw, network(h)), trained, features

    @property
    def _units(self) -> int:
        return self.n_classes if self._head == "multiclass" else 1

    def _start(self, x: np.ndarray, y: np.ndarray | None,
               given: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray] | None:
        """With ``linear_start``, the kernel and bias of the GLM start (:func:`automl.bodies.start_glm`) of the
        training rows ``x``, or of every row ``given`` where the network held some out to stop early; else None.

        Every row given, as GLM_1's fold model sees them: the network's row then does not fall below GLM_1's for
        the rows it held out. The start's held-out score is the more optimistic for it, so an epoch must beat it
        by more to replace it: conservative, as it should be.
        """
        from automl.bodies import start_glm

        if self.family != "mlp" or not self.params.get("linear_start") or y is None:
            return None
        x, y = given or (x, y)
        return start_glm(x, self._targets(y).ravel() if self.task == "regression" else y, self._head,
                         self._units, self.n_codes)

    def _outputs(self, keras: Any, h: Any, offset: Any) -> tuple[Any, Any]:
        """The output layer's activations on ``h`` (each member's, for a packed ensemble), its logits added to
        ``offset``'s (a GLM start's, or None), and the layer."""
        units = self._units
        activation = {"binary": "sigmoid", "multiclass": "softmax", "regression": None}[self._head]
        if self.members > 1:
            from automl.layers import PackedDense

            head = PackedDense(self.members, units)
        else:  # the activation inside the layer where it can be: Keras' losses then read its logits, more exactly
            head = keras.layers.Dense(units, activation=None if offset is not None else activation,
                                      dtype="float32")
        outputs = head(h)
        if offset is not None:
            outputs = keras.layers.Add()([outputs, offset if self.members == 1 else
                                          keras.layers.Reshape((1, units))(offset)])
        if offset is not None or self.members > 1:
            outputs = keras.layers.Activation(activation, dtype="float32")(outputs)
        return outputs, head

    def _optimizer(self, steps_per_epoch: int) -> Any:
        import keras

        lr = float(self.params["learning_rate"])
        if self.params.get("lr_schedule") == "cosine":
            # A CNN anneals over the epochs this fit plans (a refit of a trial's best epoch count too: one whole
            # cycle, as image models train); an MLP over SCHEDULE_EPOCHS, the learning rates its trial saw.
            epochs = self.epochs if self.family == "cnn" else SCHEDULE_EPOCHS
            lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=epochs * steps_per_epoch)
        # A packed ensemble's global norm counts its k independent members: √k times one member's, about.
        name = self.params["optimizer"]
        clip = GRADIENT_CLIP_NORM * math.sqrt(self.members) if self.family == "mlp" else None
        if name == "sgd":
            optimizer = keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, global_clipnorm=clip)
        else:
            optimizer = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
                         "rmsprop": keras.optimizers.RMSprop}[name](lr, global_clipnorm=clip)
        if keras.config.dtype_policy().name == "mixed_float16":  # automl.devices.configure set it (a capable GPU)
            # float16 gradients underflow: the loss is scaled up before them and they are unscaled before the step
            # (dynamically; a step with an overflow is skipped), in the compiled loop as in Keras' fit.
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer

    def _loss(self) -> Callable:
        import keras

        smoothing, k = label_smoothing(self.params, self.task), self.members
        if self._head == "multiclass" and smoothing:  # the sparse loss has no smoothing: on one-hot targets
            dense, depth = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing), self.n_classes
            loss = lambda y, p: dense(keras.ops.one_hot(y, depth), p)  # noqa: E731
        else:
            loss = {"binary": keras.losses.BinaryCrossentropy(label_smoothing=smoothing),
                    "multiclass": keras.losses.SparseCategoricalCrossentropy(),
                    "regression": keras.losses.MeanSquaredError()}[self._head]
        if k == 1:
            return loss
        # Each member's loss on the same targets, summed: a member's gradient is what it would be alone (its L2
        # too), so the learning rates of the space mean what they mean for one network. The targets are reshaped
        # whatever rank they come in (Keras' fit under a strategy expands them to the outputs' rank first).
        shape = (-1, 1) if self._head == "multiclass" else (-1, 1, 1)
        return lambda y, p: k * loss(keras.ops.repeat(keras.ops.reshape(y, shape), k, axis=1), p)

    def _targets(self, y: np.ndarray) -> np.ndarray:
        if self.task == "regression":
            return ((y - self.y_mean_) / self.y_std_).astype("float32").reshape(-1, 1)
        if self.task == "binary":
            return y.astype("float32").reshape(-1, 1)
        return y.astype("int32")

    # -- training -----------------------------------------------------------------
    def _trainer(self, tf: Any, model: Any, network: Any, x: np.ndarray, y: np.ndarray,
                 built_from: tuple[Any, ...]) -> tuple[Callable[[int, int], float], int, Any, Any]:
        """``train(first, count)`` running steps ``first`` to ``first + count`` of ``network`` (``model``'s part
        that trains, on the rows ``x``), steps per epoch, and the network and its part that train: ``model``'s, or a
        copy in a graph traced before (``reuse_graph``; ``built_from``: :meth:`_build`'s arguments for ``model``)."""
        targets, batch_size, seed = self._targets(y), int(self.params["batch_size"]), self.seed
        make_optimizer, loss_fn = lambda: self._optimizer(-(-len(x) // min(batch_size, len(x)))), self._loss()
        # MirroredStrategy / TPUStrategy: Keras' fit splits the batches; stored images stream from disk.
        way = steps.distributed_steps if tf.distribute.has_strategy() else \
            steps.streamed_steps if isinstance(x, ImageRows) else steps.compiled_steps
        if self.reuse_graph and way is steps.compiled_steps:
            key = (self.params, self.task, self.n_classes, self.family, self.epochs)
            build = lambda: self._build(*built_from)[:2]  # noqa: E731
            return steps.reused_steps(key, model, build, make_optimizer, tf, loss_fn, x, targets, batch_size, seed)
        train, per_epoch, *_ = way(tf, network, make_optimizer(), loss_fn, x, targets, batch_size, seed)
        return train, per_epoch, model, network

    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None = None,
            monitor: Callable[[np.ndarray], float] | None = None, report: Callable[[float, int], None] | None = None,
            deadline: float | None = None) -> KerasNetwork:
        """Train on ``x``/``y``; ``monitor(proba_val)`` scores ``x_val`` (higher is better).

        ``report(score, epoch)`` is called after each validation, every :data:`EPOCH_CHUNK` epochs (a pruner may
        raise from it). Training stops at ``deadline`` (a ``time.monotonic()`` value), at most a call of
        :data:`CHUNK_SECONDS` later, keeping the best weights so far and setting ``cut_short_``. Raises
        :class:`FailedTrialError` if the loss diverges.
        """
        if self.pretrained is not None:
            return self._load_pretrained()
        tf = _tf()
        x, y = x if isinstance(x, ImageRows) else np.asarray(x, dtype="float32"), np.asarray(y)
        if self.n_codes:  # from every row given: a level only in the held-out rows below still has its vector
            self.code_levels_ = [int(n) + 1 for n in x[:, x.shape[1] - self.n_codes:].max(axis=0)]
        given = None
        if x_val is None and self.validation_share > 0:
            given = (x, y)
            x, y, x_val, monitor = self._held_out(x, y)
        if self.task == "regression":
            self.y_mean_, self.y_std_ = float(np.mean(y)), float(np.std(y) or 1.0)
        # Scalers fitted on the rows it trains on; a GLM start on every row given (when it holds some out itself).
        own, network, features = self._build(x, y, given)
        self._forward, self.cut_short_, self.history_, self.best_epoch_, self.start_weights_ = None, False, [], 0, None
        train, per_epoch, self.model_, network = self._trainer(tf, own, network, features, y, (x, y, given))
        validate = x_val is not None and monitor is not None
        pacer = _Pacer(train, per_epoch, deadline, self._validation_steps(x_val, len(features)) if validate else 0.0)
        total, rhythm = self.epochs * per_epoch, EPOCH_CHUNK * per_epoch
        best, best_weights, stale, done, epoch = -math.inf, None, 0, 0, 0
        if validate and self.params.get("linear_start") and self.family == "mlp":
            best, best_weights = self._score_start(network, x_val, monitor)
        while done < total:
            done = pacer.train_until(done, min(total, (done // rhythm + 1) * rhythm))
            self.cut_short_ = done < total and pacer.past_deadline()
            epoch = -(-done // per_epoch)  # a call cut short by the deadline counts its partial epoch
            if validate:
                started = time.monotonic()
                score = monitor(self.predict_proba(x_val))
                pacer.validation_seconds = time.monotonic() - started
                self.history_.append((epoch, score))
                # A tie keeps the later epoch (more training, the same score: on a few hundred images an error
                # rate ties often), and does not reset the patience.
                stale = 0 if score > best else stale + 1
                if score >= best:
                    best, best_weights, self.best_epoch_ = score, network.get_weights(), epoch
                if report is not None:
                    report(score, epoch)
            if self.cut_short_ or stale >= PATIENCE_CHUNKS:
                break
        self.n_steps_ = done
        if best_weights is not None:
            network.set_weights(best_weights)
        else:
            self.best_epoch_ = epoch
        if self.model_ is not own:  # trained in a copy (reuse_graph): the weights come home
            own.set_weights(self.model_.get_weights())
            self.model_, self._forward = own, None
        return self

    def _score_start(self, network: Any, x_val: np.ndarray, monitor: Callable) -> tuple[float, list[Any]]:
        """The GLM start's held-out score (epoch 0) and weights: a model, kept where no epoch after it does better."""
        score = monitor(self.predict_proba(x_val))
        self.history_.append((0, score))
        self.start_weights_ = self.model_.get_weights()
        return score, network.get_weights()

    def swap_start(self) -> None:
        """Swap the network's weights with those of its GLM start (``start_weights_``): a second swap undoes the
        first. Cross-validation scores the start out of fold this way and keeps it where it does better
        (:func:`automl.evaluation.cross_validate`)."""
        current = self.model_.get_weights()
        self.model_.set_weights(self.start_weights_)
        self.start_weights_ = current

    def _validation_steps(self, x_val: Any, rows: int) -> float:
        """A validation's cost in training steps: a forward pass (about a third of a step's work) over
        ``x_val``'s rows, once per test-time view, in batches of the training's size."""
        return len(x_val) * predict_views(self.params, self.family) / (3 * min(int(self.params["batch_size"]), rows))

    def _held_out(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any, Any]:
        """``validation_share`` of the rows (the search's stratified split, at most :data:`MAX_HELD_OUT` and none
        when fewer than :data:`MIN_HELD_OUT`) held out, and a monitor of their loss (the registry's log loss or
        MSE, negated: higher is better): the training rows, their targets, the held-out rows and the monitor
        (None, None when too few rows)."""
        from automl.evaluation import holdout_split
        from automl.metrics import get

        n_val = min(int(len(x) * self.validation_share), MAX_HELD_OUT)
        if n_val < MIN_HELD_OUT:
            return x, y, None, None
        fit, val = holdout_split(y, self.task, n_val, self.seed)
        loss, y_val = get("mse" if self.task == "regression" else "logloss", self.task), y[val]
        return x[fit], y[fit], x[val], lambda proba: -loss.fn(y_val, proba)

    # -- predicting ---------------------------------------------------------------
    def _raw(self, x: np.ndarray | ImageRows) -> np.ndarray:
        # A CNN's activations (times its test-time views) outweigh its images: it predicts PREDICT_IMAGES at a time.
        if self.family == "cnn" and (isinstance(x, ImageRows) or len(x) > PREDICT_IMAGES):
            return np.concatenate([self._raw(batch) for batch in in_batches(x, PREDICT_IMAGES)])
        tf = _tf()
        x = tf.convert_to_tensor(np.asarray(x, dtype="float32"))
        # predict() sets up a data adapter per call and eager calls cost ~2 ms: one graph for every
        # batch size instead, traced here once, so that no call ever retraces.
        if self._forward is None:
            spec = tf.TensorSpec([None, *x.shape[1:]], tf.float32)
            tta, flip = self.family == "cnn" and bool(self.params.get("tta")), "flip" in self.params.get(
                "augmentation", "")

            def forward(batch: Any) -> Any:
                views = tta_views(tf, batch, flip) if tta else [batch]
                return tf.add_n([self.model_(view, training=False) for view in views]) / len(views)

            self._forward = tf.function(forward).get_concrete_function(spec)
        out = np.asarray(self._forward(x), dtype="float64")
        if not np.all(np.isfinite(out)):
            raise FailedTrialError("the network predicts NaN or infinite values")
        return out

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (n, n_classes); for regression, the predicted values (n,)."""
        out = self._raw(x)
        if self.task == "binary":
            p = np.clip(out[:, 0], 0.0, 1.0)
            return np.column_stack([1.0 - p, p])
        if self._head == "multiclass":
            return out / out.sum(axis=1, keepdims=True)  # float32 softmax sums to 1 only roughly
        return out[:, 0] * self.y_std_ + self.y_mean_

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class indices, or values for regression."""
        out = self.predict_proba(x)
        return out if self.task == "regression" else out.argmax(axis=1)

    # -- persistence (used by automl.export) ----------------------------------------
    def state(self) -> dict[str, Any]:
        """JSON-serialisable state besides the Keras weights file."""
        return {"params": self.params, "task": self.task, "epochs": self.epochs, "seed": self.seed,
                "n_classes": self.n_classes, "family": self.family, "best_epoch": self.best_epoch_,
                "y_mean": self.y_mean_, "y_std": self.y_std_, "n_codes": self.n_codes,
                "code_levels": self.code_levels_}

    def save(self, folder: Path) -> None:
        """Write the network to ``folder/model.keras`` and its :meth:`state` to ``folder/network.json``: what
        :meth:`load` reads (an exported fold, a search trial's own model)."""
        import json

        from automl.io import atomic_write_text

        self.model_.save(folder / "model.keras")
        atomic_write_text(folder / "network.json", json.dumps(self.state(), indent=1))

    @classmethod
    def load(cls, folder: Path) -> KerasNetwork:
        """The network :meth:`save` wrote to ``folder``."""
        import json

        import keras

        import automl.layers  # noqa: F401  registers the layers a network may hold, for loading

        return cls.from_state(json.loads((folder / "network.json").read_text()),
                              keras.models.load_model(folder / "model.keras", compile=False))

    def _load_pretrained(self) -> KerasNetwork:
        loaded = KerasNetwork.load(Path(self.pretrained))
        self.model_, self.best_epoch_, self.epochs = loaded.model_, loaded.best_epoch_, loaded.epochs
        self.y_mean_, self.y_std_, self.code_levels_ = loaded.y_mean_, loaded.y_std_, loaded.code_levels_
        self._forward, self.cut_short_, self.history_ = None, False, []
        return self

    @classmethod
    def from_state(cls, state: dict[str, Any], keras_model: Any) -> KerasNetwork:
        est = cls(state["params"], state["task"], state["epochs"], state["seed"], state["n_classes"],
                  state.get("family", "mlp"))
        est.model_, est.best_epoch_ = keras_model, state["best_epoch"]
        est.y_mean_, est.y_std_ = state["y_mean"], state["y_std"]
        est.n_codes, est.code_levels_ = state.get("n_codes", 0), state.get("code_levels", [])
        return est


def label_smoothing(params: dict[str, Any], task: str) -> float:
    """The label smoothing a configuration trains with: its ``label_smoothing`` for classification, else 0."""
    return float(params.get("label_smoothing") or 0.0) if task != "regression" else 0.0


class _Pacer:
    """Runs a trainer in calls sized in steps to take about :data:`CHUNK_SECONDS` and to end near the deadline.

    Training ends early enough for the validation that follows it to end by the deadline too: it keeps the
    seconds the latest validation took (``validation_seconds``), or before any, ``validation_steps`` training
    steps' worth (a forward pass over the validation rows) at the pace of the calls after the first (which also
    traces the graph: its pace would keep minutes).
    """

    def __init__(self, train: Callable[[int, int], float], steps_per_epoch: int, deadline: float | None,
                 validation_steps: float = 0.0):
        self.train, self.steps_per_epoch, self.deadline = train, steps_per_epoch, deadline
        self.seconds_per_step: float | None = None  # measured on the latest call
        self.validation_steps, self.validation_seconds, self.calls = validation_steps, None, 0

    def _training_deadline(self) -> float:
        assert self.deadline is not None
        if self.validation_seconds is not None:
            return self.deadline - self.validation_seconds
        steady_pace = self.seconds_per_step if self.calls > 1 and self.seconds_per_step else 0.0
        return self.deadline - steady_pace * self.validation_steps

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self._training_deadline()

    def _steps(self, most: int) -> int:
        if self.seconds_per_step is None:
            return 1  # the first call also sets the graph up: time a single step
        seconds = CHUNK_SECONDS if self.deadline is None else min(CHUNK_SECONDS,
                                                                  self._training_deadline() - time.monotonic())
        return max(1, min(most, int(seconds / self.seconds_per_step)))

    def train_until(self, done: int, goal: int) -> int:
        """Train from step ``done`` to ``goal``, or fewer when the deadline comes; return the step reached."""
        while True:
            count = self._steps(goal - done)
            started = time.monotonic()
            loss = self.train(done, count)
            self.seconds_per_step, self.calls = (time.monotonic() - started) / count, self.calls + 1
            done += count
            if not math.isfinite(loss):
                raise FailedTrialError(f"training loss became {loss} at epoch {-(-done // self.steps_per_epoch)}; "
                                       "the learning rate is probably too high")
            if done >= goal or self.past_deadline():
                return done
