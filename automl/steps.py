"""How batches reach a network: a function ``train(first, count)`` that runs optimizer steps ``first`` to
``first + count`` (:class:`automl.training.KerasNetwork` paces the calls and validates between them).

- :func:`compiled_steps`: the rows live on the device as tensors; one graph, traced once, shuffles each epoch and
  gathers its batches (Keras' ``fit`` spends most of a small-data epoch in its data adapter: TOOLCHAIN.md).
  :func:`reused_steps` trains the next network of the same shape (a cross-validation's next fold) in that graph.
- :func:`streamed_steps`: stored images (:class:`~automl.image_store.ImageRows`) are read from disk a batch at a
  time by a ``tf.data`` pipeline that reads ahead; memory holds a few batches, never the images.
- :func:`distributed_steps`: under a distribution strategy, Keras' ``fit`` splits the batches over the devices.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from automl.image_store import ImageRows

__all__ = ["compiled_steps", "reused_steps", "streamed_steps", "distributed_steps", "read_batches", "gradient_step",
           "PREFETCH_BATCHES"]

#: Batches of stored images read ahead of the one training (a background thread of ``tf.data``).
PREFETCH_BATCHES = 4


def distributed_steps(tf: Any, model: Any, optimizer: Any, loss_fn: Any, x: np.ndarray | ImageRows,
                       y: np.ndarray, batch_size: int, seed: int) -> tuple[Callable[[int, int], float], int]:
    """Under a distribution strategy: ``fit`` on a cached dataset (stored images: read from disk), one call per
    range of steps.

    Each call draws its batches from a fresh shuffle of the rows, so a range that ends
    inside an epoch leaves the rest of that epoch's order unused.
    """
    model.compile(optimizer=optimizer, loss=loss_fn)
    if isinstance(x, ImageRows):
        data = read_batches(tf, x, y, batch_size, seed)
    else:
        data = tf.data.Dataset.from_tensor_slices((x, y)).cache().shuffle(len(x), reshuffle_each_iteration=True)
        data = data.batch(batch_size).repeat().prefetch(2)

    def train(first: int, count: int) -> float:
        history = model.fit(data, epochs=1, steps_per_epoch=count, verbose=0, shuffle=False)
        return float(history.history["loss"][-1])

    return train, -(-len(x) // batch_size)


def read_batches(tf: Any, x: ImageRows, y: np.ndarray, batch_size: int, seed: int) -> Any:
    """An endless ``tf.data`` stream of ``(images, targets)`` batches read from disk: epoch ``e`` in a shuffle
    seeded by ``(seed, e)``, :data:`PREFETCH_BATCHES` read ahead while the network trains."""
    n = len(x)
    batch_size, steps = min(batch_size, n), -(-n // min(batch_size, n))

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for epoch in itertools.count():
            order = np.random.default_rng([seed, epoch]).permutation(n)
            for step in range(steps):
                rows = order[step * batch_size:(step + 1) * batch_size]
                yield np.asarray(x.read(rows), dtype="float32"), y[rows]

    spec = (tf.TensorSpec([None, *x.shape[1:]], tf.float32), tf.TensorSpec([None, *y.shape[1:]], tf.as_dtype(y.dtype)))
    return tf.data.Dataset.from_generator(batches, output_signature=spec).prefetch(PREFETCH_BATCHES)


def gradient_step(tf: Any, model: Any, optimizer: Any, loss_fn: Any) -> Callable[[Any, Any], Any]:
    """``step(xb, yb)``: one optimizer step on a batch; returns its loss."""
    weights = model.trainable_variables

    def step(xb: Any, yb: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
            if model.losses:
                loss += tf.add_n(model.losses)
            # The loss itself, unless the optimizer scales it (mixed precision, see _optimizer).
            scaled = optimizer.scale_loss(loss)
        optimizer.apply_gradients(zip(tape.gradient(scaled, weights), weights, strict=True))
        return loss

    return step


def streamed_steps(tf: Any, model: Any, optimizer: Any, loss_fn: Any, x: ImageRows, y: np.ndarray,
                   batch_size: int, seed: int) -> tuple[Callable[[int, int], float], int]:
    """Training on stored images (:class:`ImageRows`): batches come from disk through :func:`read_batches`, and
    one graph, traced once, takes ``count`` of them from the stream and trains on each; memory holds a few
    batches, never the images.

    The steps are taken in order: ``train(first, count)`` goes on from where the last call ended.
    """
    optimizer.build(model.trainable_variables)
    stream, position = iter(read_batches(tf, x, y, batch_size, seed)), [0]
    train_on = gradient_step(tf, model, optimizer, loss_fn)

    def run(count: Any) -> Any:
        loss = tf.constant(0.0)
        for _ in tf.range(count):
            loss = train_on(*next(stream))
        return loss

    graph = tf.function(run).get_concrete_function(tf.TensorSpec([], tf.int32))

    def train(first: int, count: int) -> float:
        if first != position[0]:
            raise ValueError(f"streamed training goes on from step {position[0]}, but got {first=}")
        position[0] += count
        return float(graph(tf.constant(count, tf.int32)))

    return train, -(-len(x) // min(batch_size, len(x)))


def compiled_steps(tf: Any, model: Any, optimizer: Any, loss_fn: Any, x: np.ndarray, y: np.ndarray,
                    batch_size: int, seed: int) -> tuple[Callable[[int, int], float], int, Callable[..., None]]:
    """A graph, traced once, that trains steps ``first`` to ``first + count`` and returns the last batch loss; the
    steps per epoch; and ``load(x, y)``, which gives the graph other rows of the same width and the optimizer its
    first state again (:func:`reused_steps`).

    Epoch ``e`` takes its batches in a stateless shuffle seeded by ``(seed, e)``: the
    result does not depend on how the steps are split into calls.
    """
    n = int(x.shape[0])
    batch_size = min(batch_size, n)
    steps = -(-n // batch_size)
    # Variables of any row count, read as they are at each call: ``load`` puts another fold's rows in them.
    xs, ys, order = (tf.Variable(v, trainable=False, shape=tf.TensorShape([None, *v.shape[1:]]))
                     for v in (x, y, np.arange(n, dtype="int32")))
    optimizer.build(model.trainable_variables)
    first_state = [v.numpy() for v in optimizer.variables]  # iterations 0, zero moments, the learning rate
    train_on = gradient_step(tf, model, optimizer, loss_fn)

    def run(first: Any, count: Any) -> Any:
        rows = tf.shape(xs)[0]
        per_epoch = (rows + batch_size - 1) // batch_size
        loss = tf.constant(0.0)
        for step in tf.range(first, first + count):
            epoch, s = step // per_epoch, step % per_epoch
            if s == 0:
                order.assign(tf.random.experimental.stateless_shuffle(tf.range(rows), seed=tf.stack([seed, epoch])))
            idx = order[s * batch_size: tf.minimum((s + 1) * batch_size, rows)]
            loss = train_on(tf.gather(xs, idx), tf.gather(ys, idx))
        return loss

    # A concrete function: one trace per network, never counted by TensorFlow as a retrace.
    graph = tf.function(run).get_concrete_function(tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32))

    def train(first: int, count: int) -> float:
        return float(graph(tf.constant(first, tf.int32), tf.constant(count, tf.int32)))

    def load(x: np.ndarray, y: np.ndarray) -> None:
        xs.assign(x)
        ys.assign(y)
        order.assign(np.arange(len(x), dtype="int32"))
        for variable, value in zip(optimizer.variables, first_state, strict=True):
            variable.assign(value)

    return train, steps, load


#: The latest graph :func:`reused_steps` traced, per thread: (its key, the network that trains in it and its part
#: that trains, ``train``, ``load``). One: the folds of one cross-validation follow each other.
_REUSABLE: dict[int, tuple[str, Any, Any, Callable[[int, int], float], Callable[..., None]]] = {}


def reused_steps(key: Any, model: Any, build: Callable[[], tuple[Any, Any]], make_optimizer: Callable[[], Any],
                 tf: Any, loss_fn: Any, x: np.ndarray, y: np.ndarray, batch_size: int,
                 seed: int) -> tuple[Callable[[int, int], float], int, Any, Any]:
    """:func:`compiled_steps` for ``model``, trained in a copy of it: the copy that the latest graph of the same key
    trains, ``model``'s variables and the rows loaded into it, so nothing is traced again; else a new copy
    (``build()``: the network and its part that trains, built again) and its graph, kept for the next fit of that
    key. ``key``: what the loss and the optimizer depend on (the network's structure, the steps per epoch and the
    batch size are added). Returns ``train``, the steps per epoch, and the copy and its part that trains; the
    caller copies the trained weights back into ``model``. A fold trained so predicts exactly as one traced anew.

    Tracing the training graph took 0.7–0.85 s of a 1.2–1.8 s fit of the default network on a fold of churn
    (4,000 rows, 5 epochs): a cross-validation fits each of its 5 folds in a network of one shape.
    """
    import threading

    thread, batch_size = threading.get_ident(), min(batch_size, len(x))
    key = repr((key, -(-len(x) // batch_size), batch_size, seed, _structure(model)))
    if thread in _REUSABLE and _REUSABLE[thread][0] == key:
        _, copy, trained, train, load = _REUSABLE[thread]
        load(x, y)
    else:
        _REUSABLE.pop(thread, None)  # the rows of the graph before it go with it
        copy, trained = build()
        train, _, load = compiled_steps(tf, trained, make_optimizer(), loss_fn, x, y, batch_size, seed)
        _REUSABLE[thread] = (key, copy, trained, train, load)
    for mine, its in zip(copy.variables, model.variables, strict=True):  # its dropout's seeds too: as if untraced
        mine.assign(its)
    return train, -(-len(x) // batch_size), copy, trained


def _structure(model: Any) -> list[Any]:
    """What a graph of ``model`` holds beyond its weights' values: each layer's class and weights' shapes, and the
    columns a numeric layer reads (a fold's constant column is left out of its scaler), nested models' too."""
    found = []
    for layer in model.layers:
        found.append((type(layer).__name__, getattr(layer, "columns", None), [tuple(w.shape) for w in layer.weights]))
        found.extend(_structure(layer) if hasattr(layer, "layers") else [])
    return found
