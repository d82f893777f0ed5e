"""How batches reach a network: a function ``train(first, count)`` that runs optimizer steps ``first`` to
``first + count`` (:class:`automl.training.KerasNetwork` paces the calls and validates between them).

- :func:`compiled_steps`: the rows live on the device as tensors; one graph, traced once, shuffles each epoch and
  gathers its batches (Keras' ``fit`` spends most of a small-data epoch in its data adapter: TOOLCHAIN.md).
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

__all__ = ["compiled_steps", "streamed_steps", "distributed_steps", "read_batches", "gradient_step",
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
                    batch_size: int, seed: int) -> tuple[Callable[[int, int], float], int]:
    """A graph, traced once, that trains steps ``first`` to ``first + count`` and returns the last batch loss.

    Epoch ``e`` takes its batches in a stateless shuffle seeded by ``(seed, e)``: the
    result does not depend on how the steps are split into calls.
    """
    n = int(x.shape[0])
    batch_size = min(batch_size, n)
    steps = -(-n // batch_size)
    xs, ys = tf.constant(x), tf.constant(y)
    order = tf.Variable(tf.range(n), trainable=False)
    optimizer.build(model.trainable_variables)
    train_on = gradient_step(tf, model, optimizer, loss_fn)

    def run(first: Any, count: Any) -> Any:
        loss = tf.constant(0.0)
        for step in tf.range(first, first + count):
            epoch, s = step // steps, step % steps
            if s == 0:
                order.assign(tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([seed, epoch])))
            idx = order[s * batch_size: tf.minimum((s + 1) * batch_size, n)]
            loss = train_on(tf.gather(xs, idx), tf.gather(ys, idx))
        return loss

    # A concrete function: one trace per network, never counted by TensorFlow as a retrace.
    graph = tf.function(run).get_concrete_function(tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32))

    def train(first: int, count: int) -> float:
        return float(graph(tf.constant(first, tf.int32), tf.constant(count, tf.int32)))

    return train, steps
