"""Training Keras networks fast, behind a small scikit-learn-like estimator.

Keras' ``fit`` spends most of a small-data epoch in its data adapter and callback
machinery (TOOLCHAIN.md). Here a chunk of epochs runs as one ``tf.function``: each
epoch shuffles an index and takes batches with ``tf.gather`` from tensors that live
on the device. Between chunks we score the validation rows, report to a pruner,
keep the best weights, and check the deadline. TensorFlow is imported lazily:
importing this module is cheap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from automl.errors import FailedTrialError

__all__ = ["KerasNetwork", "EPOCH_CHUNK"]

#: Epochs per compiled call: the granularity of early stopping, pruning and deadlines.
EPOCH_CHUNK = 5
#: Early stopping patience, in chunks of epochs.
PATIENCE_CHUNKS = 4


def _tf():
    import tensorflow as tf

    return tf


@dataclass
class KerasNetwork:
    """A Keras network (``family`` "mlp" or "cnn") with scikit-learn's ``fit``/``predict_proba`` shape.

    ``task`` is ``binary``, ``multiclass``, ``image`` or ``regression``; ``params`` come
    from the family's space in :mod:`automl.spaces`. With validation data, training
    stops early and keeps the best epoch (``best_epoch_``); without, it trains
    ``epochs`` epochs. Regression targets are standardized for training and mapped
    back on predict.
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
    #: True when a deadline stopped training before its planned epochs (no validation data).
    cut_short_: bool = False

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_forward": None}  # a tf.function does not pickle

    @property
    def _head(self) -> str:
        return "multiclass" if self.task == "image" else self.task

    # -- building -----------------------------------------------------------------
    def _build(self, input_shape: tuple[int, ...]) -> Any:
        import keras

        keras.utils.set_random_seed(self.seed)
        inputs = keras.Input(input_shape)
        h = _BODIES[self.family](keras, inputs, self.params)
        units, activation = {"binary": (1, "sigmoid"), "multiclass": (self.n_classes, "softmax"),
                             "regression": (1, None)}[self._head]
        outputs = keras.layers.Dense(units, activation=activation, dtype="float32")(h)
        return keras.Model(inputs, outputs)

    def _optimizer(self) -> Any:
        import keras

        lr = float(self.params["learning_rate"])
        name = self.params["optimizer"]
        if name == "sgd":
            return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
        return {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
                "rmsprop": keras.optimizers.RMSprop}[name](lr)

    def _loss(self) -> Callable:
        import keras

        return {"binary": keras.losses.BinaryCrossentropy(),
                "multiclass": keras.losses.SparseCategoricalCrossentropy(),
                "regression": keras.losses.MeanSquaredError()}[self._head]

    def _targets(self, y: np.ndarray) -> np.ndarray:
        if self.task == "regression":
            return ((y - self.y_mean_) / self.y_std_).astype("float32").reshape(-1, 1)
        if self.task == "binary":
            return y.astype("float32").reshape(-1, 1)
        return y.astype("int32")

    # -- training -----------------------------------------------------------------
    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        x_val: np.ndarray | None = None,
        monitor: Callable[[np.ndarray], float] | None = None,
        report: Callable[[float, int], None] | None = None,
        deadline: float | None = None,
    ) -> KerasNetwork:
        """Train on ``x``/``y``; ``monitor(proba_val)`` scores ``x_val`` (higher is better).

        ``report(score, epoch)`` is called after each chunk (a pruner may raise from
        it). Training stops at ``deadline`` (a ``time.monotonic()`` value) keeping the
        best weights so far. Raises :class:`FailedTrialError` if the loss diverges.
        """
        tf = _tf()
        x = np.asarray(x, dtype="float32")
        if self.task == "regression":
            self.y_mean_, self.y_std_ = float(np.mean(y)), float(np.std(y) or 1.0)
        self.model_ = model = self._build(tuple(x.shape[1:]))
        self._forward = None
        optimizer = self._optimizer()
        targets, batch_size = self._targets(np.asarray(y)), int(self.params["batch_size"])
        if tf.distribute.has_strategy():  # MirroredStrategy / TPUStrategy: Keras' fit splits the batches
            run_epochs = _distributed_epochs(tf, model, optimizer, self._loss(), x, targets, batch_size)
        else:
            optimizer.build(model.trainable_variables)
            run_epochs = _compiled_epochs(tf, model, optimizer, self._loss(), x, targets, batch_size)
        self.history_, best, best_weights, stale = [], -math.inf, None, 0
        done = 0
        while done < self.epochs:
            chunk = min(EPOCH_CHUNK, self.epochs - done)
            loss = float(run_epochs(tf.constant(chunk)))
            done += chunk
            if not math.isfinite(loss):
                raise FailedTrialError(f"training loss became {loss} at epoch {done}; "
                                       "the learning rate is probably too high")
            past_deadline = deadline is not None and time.monotonic() >= deadline
            if x_val is None or monitor is None:
                if past_deadline and done < self.epochs:
                    self.cut_short_ = True  # the budget wins over the planned epoch count
                    break
                continue
            score = monitor(self.predict_proba(x_val))
            self.history_.append((done, score))
            if score > best:
                best, best_weights, self.best_epoch_, stale = score, model.get_weights(), done, 0
            else:
                stale += 1
            if report is not None:
                report(score, done)
            if stale >= PATIENCE_CHUNKS or past_deadline:
                break
        if best_weights is not None:
            model.set_weights(best_weights)
        else:
            self.best_epoch_ = done
        return self

    # -- predicting ---------------------------------------------------------------
    def _raw(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype="float32")
        # A compiled forward pass: predict() sets up a data adapter per call, eager calls cost ~2 ms.
        if self._forward is None:
            import tensorflow as tf

            self._forward = tf.function(lambda batch: self.model_(batch, training=False), reduce_retracing=True)
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
                "y_mean": self.y_mean_, "y_std": self.y_std_}

    @classmethod
    def from_state(cls, state: dict[str, Any], keras_model: Any) -> KerasNetwork:
        est = cls(state["params"], state["task"], state["epochs"], state["seed"], state["n_classes"],
                  state.get("family", "mlp"))
        est.model_, est.best_epoch_ = keras_model, state["best_epoch"]
        est.y_mean_, est.y_std_ = state["y_mean"], state["y_std"]
        return est


def _mlp_body(keras: Any, h: Any, p: dict[str, Any]) -> Any:
    reg = keras.regularizers.L2(p["l2"]) if p.get("l2") else None
    for _ in range(int(p["n_layers"])):
        h = keras.layers.Dense(int(p["units"]), kernel_regularizer=reg)(h)
        if p.get("batch_norm"):
            h = keras.layers.BatchNormalization()(h)
        h = keras.layers.Activation(p["activation"])(h)
        if p.get("dropout"):
            h = keras.layers.Dropout(float(p["dropout"]))(h)
    return h


def _cnn_body(keras: Any, h: Any, p: dict[str, Any]) -> Any:
    reg = keras.regularizers.L2(p["l2"]) if p.get("l2") else None
    if p.get("augmentation", "none") != "none":  # active only in training=True calls
        h = keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant")(h)
        if "rotate" in p["augmentation"]:
            h = keras.layers.RandomRotation(0.05, fill_mode="constant")(h)
    size = min(h.shape[1], h.shape[2])
    for block in range(int(p["n_blocks"])):
        h = keras.layers.Conv2D(int(p["filters"]) * 2**block, int(p["kernel_size"]), padding="same",
                                kernel_regularizer=reg)(h)
        if p.get("batch_norm"):
            h = keras.layers.BatchNormalization()(h)
        h = keras.layers.Activation(p["activation"])(h)
        # Pool only while the map stays at least 2 pixels wide: small images keep their detail.
        if p["pooling"] != "none" and size >= 4:
            pool = keras.layers.MaxPooling2D if p["pooling"] == "max" else keras.layers.AveragePooling2D
            h = pool(2)(h)
            size //= 2
    h = keras.layers.Flatten()(h)
    if p.get("dropout"):
        h = keras.layers.Dropout(float(p["dropout"]))(h)
    if int(p.get("dense_units", 0)):
        h = keras.layers.Dense(int(p["dense_units"]), activation=p["activation"], kernel_regularizer=reg)(h)
        if p.get("dropout"):
            h = keras.layers.Dropout(float(p["dropout"]))(h)
    return h


_BODIES = {"mlp": _mlp_body, "cnn": _cnn_body}


def _distributed_epochs(tf: Any, model: Any, optimizer: Any, loss_fn: Any, x: np.ndarray, y: np.ndarray,
                        batch_size: int) -> Any:
    """Under a distribution strategy: ``fit`` on a cached dataset, called once per chunk of epochs."""
    model.compile(optimizer=optimizer, loss=loss_fn)
    data = tf.data.Dataset.from_tensor_slices((x, y)).cache().shuffle(len(x), reshuffle_each_iteration=True)
    data = data.batch(batch_size).prefetch(2)

    def run(epochs: Any) -> Any:
        history = model.fit(data, epochs=int(epochs), verbose=0, shuffle=False)
        return history.history["loss"][-1]

    return run


def _compiled_epochs(tf: Any, model: Any, optimizer: Any, loss_fn: Any, x: np.ndarray, y: np.ndarray,
                     batch_size: int) -> Any:
    """One ``tf.function`` that trains ``epochs`` epochs and returns the last batch loss."""
    n = int(x.shape[0])
    batch_size = min(batch_size, n)
    steps = -(-n // batch_size)
    xs, ys = tf.constant(x), tf.constant(y)
    weights = model.trainable_variables

    @tf.function
    def run(epochs):
        loss = tf.constant(0.0)
        for _ in tf.range(epochs):
            order = tf.random.shuffle(tf.range(n))
            for s in tf.range(steps):
                idx = order[s * batch_size: tf.minimum((s + 1) * batch_size, n)]
                xb, yb = tf.gather(xs, idx), tf.gather(ys, idx)
                with tf.GradientTape() as tape:
                    loss = loss_fn(yb, model(xb, training=True))
                    if model.losses:
                        loss += tf.add_n(model.losses)
                optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))
        return loss

    return run
