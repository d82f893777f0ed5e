"""Keras layers for table networks: numeric scalings, embeddings of numbers and categories, packed ensembles.

What the tabular deep-learning literature found to help MLPs on tables: a quantile (Gaussian-rank) transform
of each numeric input, as RealMLP and TabM use; RealMLP's robust scaling with smooth clipping; periodic
embeddings of each numeric value (Gorishniy et al. 2022, "On Embeddings for Numerical Features in Tabular Deep
Learning": PLR, sin/cos of learned frequencies, then a linear map and a ReLU, per feature); entity embeddings
of categorical columns (Guo & Berkhahn 2016, :class:`CategoryEmbeddings`); and k MLPs packed in one network
whose predictions are averaged (TabM's "packed" ensemble, Gorishniy et al. 2024: :class:`PackedDense`,
:class:`MemberMean`). All live inside the network, so a saved ``model.keras`` carries them and predicts alone
in a fresh process. Importing this module imports Keras (it registers the layers for
loading): :mod:`automl.training` and :mod:`automl.export` import it only when they need it.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

__all__ = ["NumericInputs", "PackedDense", "MemberMean", "CategoryEmbeddings", "SplitLast", "embedding_width",
           "fit_quantiles", "fit_robust", "smooth_clip", "N_QUANTILES",
           "SMOOTH_CLIP"]

#: Quantiles kept per column (scikit-learn's QuantileTransformer default).
N_QUANTILES = 1000
#: scikit-learn's bounds threshold: values this close to a column's extreme quantiles, and ranks this close
#: to 0 or 1, map to the bounds.
_BOUND = 1e-7
#: The bounds, in standard deviations: scikit-learn's ``norm.ppf(1 - 1e-7)``.
_CLIP = 5.1993375
#: RealMLP's smooth clipping bound: ``x / sqrt(1 + (x / 3)^2)`` is about ``x`` near 0 and tends to ±3.
SMOOTH_CLIP = 3.0


def fit_quantiles(x: np.ndarray) -> np.ndarray:
    """Each column's quantiles (``N_QUANTILES`` or fewer, one column per input column), by scikit-learn."""
    from sklearn.preprocessing import QuantileTransformer

    qt = QuantileTransformer(n_quantiles=min(N_QUANTILES, len(x)), output_distribution="normal",
                             subsample=100_000, random_state=0).fit(x)
    return qt.quantiles_.astype("float32")


def fit_robust(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RealMLP's robust scaling of each column of ``x`` (the training rows): its median, and the factor
    ``1 / (q75 - q25)``, else ``2 / (max - min)`` where the quartiles tie, else 0 (a constant column)."""
    q25, median, q75 = np.quantile(x, [0.25, 0.5, 0.75], axis=0)
    spread, width = q75 - q25, x.max(axis=0) - x.min(axis=0)
    with np.errstate(divide="ignore"):
        factor = np.where(spread > 0, 1.0 / spread, np.where(width > 0, 2.0 / width, 0.0))
    return median.astype("float32"), factor.astype("float32")


def smooth_clip(v: Any) -> Any:
    """RealMLP's smooth clipping of scaled values to (-:data:`SMOOTH_CLIP`, :data:`SMOOTH_CLIP`): outliers stop
    dominating a layer's inputs without the kink of a hard clip."""
    return v / ops.sqrt(1.0 + ops.square(v / SMOOTH_CLIP))


def _interp(x: Any, xp: Any, fp: Any) -> Any:
    """Row-wise ``np.interp``: x (c, n) against non-decreasing xp (c, q) and values fp (q,).

    As numpy does, a value equal to tied points takes the last one's value.
    """
    import tensorflow as tf  # searchsorted over rows without a (c, n, q) array; the project runs Keras on TF

    q = xp.shape[1]
    right = ops.clip(tf.searchsorted(xp, x, side="right"), 1, q - 1)
    x0, x1 = ops.take_along_axis(xp, right - 1, axis=1), ops.take_along_axis(xp, right, axis=1)
    t = ops.clip(ops.where(x1 > x0, (x - x0) / ops.maximum(x1 - x0, 1e-30), ops.ones_like(x)), 0.0, 1.0)
    f0, f1 = ops.take(fp, right - 1), ops.take(fp, right)
    return f0 + t * (f1 - f0)


@keras.saving.register_keras_serializable(package="automl")
class NumericInputs(keras.layers.Layer):
    """Transforms the numeric ``columns`` of a dense feature matrix; the other columns pass through.

    ``scaling="quantile"``: each numeric column goes through its training quantiles to a standard normal
    (scikit-learn's ``QuantileTransformer(output_distribution="normal")``, its interpolation averaged over
    ties as there); set the quantiles with :meth:`set_quantiles` before training. ``scaling="robust"``: each
    numeric column is centred on its training median, multiplied by its factor (:func:`fit_robust`, set with
    :meth:`set_robust`) and smoothly clipped (:func:`smooth_clip`). ``embedding="periodic"``:
    each numeric value ``v`` becomes ``relu(W_j [sin(2π c_j v), cos(2π c_j v)] + b_j)``, ``n_frequencies``
    learned frequencies ``c_j`` ~ N(0, ``scale``) and ``d_embedding`` outputs per column ``j`` (PLR). Output:
    the numeric part first, then the other columns in their order.
    """

    def __init__(self, columns: list[int], n_inputs: int, scaling: str = "standard", embedding: str = "none",
                 n_frequencies: int = 16, d_embedding: int = 16, scale: float = 0.1, **kwargs: Any):
        super().__init__(**kwargs)
        self.columns, self.n_inputs = [int(c) for c in columns], int(n_inputs)
        numeric = set(self.columns)
        self.others = [c for c in range(self.n_inputs) if c not in numeric]
        self.scaling, self.embedding = scaling, embedding
        self.n_frequencies, self.d_embedding, self.scale = int(n_frequencies), int(d_embedding), float(scale)

    def build(self, input_shape: Any) -> None:
        c = len(self.columns)
        if self.scaling == "quantile":
            self.quantiles = self.add_weight(shape=(c, N_QUANTILES), initializer="zeros", trainable=False,
                                             name="quantiles")
            self.n_levels = self.add_weight(shape=(), initializer="zeros", trainable=False, name="n_levels")
        if self.scaling == "robust":
            self.center = self.add_weight(shape=(c,), initializer="zeros", trainable=False, name="center")
            self.factor = self.add_weight(shape=(c,), initializer="ones", trainable=False, name="factor")
        if self.embedding == "periodic":
            k, d = self.n_frequencies, self.d_embedding
            self.frequencies = self.add_weight(shape=(c, k), name="frequencies",
                                               initializer=keras.initializers.RandomNormal(0.0, self.scale))
            self.kernel = self.add_weight(shape=(c, 2 * k, d), initializer="glorot_uniform", name="kernel")
            self.bias = self.add_weight(shape=(c, d), initializer="zeros", name="bias")

    def set_quantiles(self, quantiles: np.ndarray) -> None:
        """Quantiles from :func:`fit_quantiles` on the training rows' numeric columns (q, c)."""
        q = quantiles.shape[0]
        # Padded with the last quantile: the interpolation below then maps the padding to the top level.
        padded = np.concatenate([quantiles.T, np.repeat(quantiles.T[:, -1:], N_QUANTILES - q, axis=1)], axis=1)
        self.quantiles.assign(padded.astype("float32"))
        self.n_levels.assign(float(q))

    def set_robust(self, center: np.ndarray, factor: np.ndarray) -> None:
        """Medians and factors from :func:`fit_robust` on the training rows' numeric columns."""
        self.center.assign(center.astype("float32"))
        self.factor.assign(factor.astype("float32"))

    def _quantile_normal(self, v: Any) -> Any:
        """(n, c) values to standard-normal scores through the stored quantiles."""
        levels = ops.minimum(ops.arange(N_QUANTILES, dtype="float32") / ops.maximum(self.n_levels - 1, 1.0), 1.0)
        xt, xp = ops.transpose(v), self.quantiles
        # The mean of the interpolation from below and from above, as scikit-learn does: a value repeated over
        # many quantiles (an integer column) lands mid-way through them.
        rank = 0.5 * (_interp(xt, xp, levels) - _interp(-xt, -ops.flip(xp, axis=1), -ops.flip(levels, axis=0)))
        normal = math.sqrt(2.0) * ops.erfinv(2.0 * ops.clip(rank, _BOUND, 1.0 - _BOUND) - 1.0)
        normal = ops.clip(normal, -_CLIP, _CLIP)
        # scikit-learn's bounds test, in float32 as it runs on our float32 features; ranks 0 and 1 are the bounds
        # too (float32 erfinv is inexact next to them).
        low, high = (xt - _BOUND < xp[:, :1]) | (rank <= 0.0), (xt + _BOUND > xp[:, -1:]) | (rank >= 1.0)
        normal = ops.where(low, -_CLIP, ops.where(high, _CLIP, normal))
        return ops.transpose(normal)

    def call(self, x: Any) -> Any:
        v = ops.take(x, self.columns, axis=1)
        if self.scaling == "quantile":
            v = self._quantile_normal(v)
        elif self.scaling == "robust":
            v = smooth_clip((v - self.center) * self.factor)
        if self.embedding == "periodic":
            angles = 2.0 * math.pi * v[:, :, None] * self.frequencies[None]
            features = ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)
            v = ops.relu(ops.einsum("nck,ckd->ncd", features, self.kernel) + self.bias)
            v = ops.reshape(v, (-1, len(self.columns) * self.d_embedding))
        return ops.concatenate([v, ops.take(x, self.others, axis=1)], axis=1) if self.others else v

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        width = len(self.columns) * (self.d_embedding if self.embedding == "periodic" else 1)
        return (input_shape[0], width + len(self.others))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "columns": self.columns, "n_inputs": self.n_inputs, "scaling": self.scaling,
                "embedding": self.embedding, "n_frequencies": self.n_frequencies, "d_embedding": self.d_embedding,
                "scale": self.scale}


@keras.saving.register_keras_serializable(package="automl")
class PackedDense(keras.layers.Layer):
    """``members`` dense layers side by side, one per member of a packed ensemble: (n, f) inputs (every member
    the same) or (n, members, f) (each its own) to (n, members, units), each member with its own kernel and bias.

    The kernels are one (members, f, units) weight, so a step of k members is one batched matmul, not k small
    ones: TabM's "packed" ensemble of independent MLPs.
    """

    def __init__(self, members: int, units: int, kernel_regularizer: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.members, self.units = int(members), int(units)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape: Any) -> None:
        self.kernel = self.add_weight(shape=(self.members, int(input_shape[-1]), self.units), name="kernel",
                                      initializer=_PerMemberGlorot(), regularizer=self.kernel_regularizer)
        self.bias = self.add_weight(shape=(self.members, self.units), initializer="zeros", name="bias")

    def call(self, x: Any) -> Any:
        shared = len(x.shape) == 2
        return ops.einsum("nf,kfu->nku" if shared else "nkf,kfu->nku", x, self.kernel) + self.bias

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (input_shape[0], self.members, self.units)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "members": self.members, "units": self.units,
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer)}


@keras.saving.register_keras_serializable(package="automl")
class _PerMemberGlorot(keras.initializers.Initializer):
    """Glorot-uniform per member of a (members, f, units) kernel: each member starts as a lone Dense would
    (Keras' Glorot on the 3-d shape would count the members in its fans and start them too small)."""

    def __call__(self, shape: Any, dtype: Any = None) -> Any:
        limit = math.sqrt(6.0 / (shape[-2] + shape[-1]))
        return keras.random.uniform(shape, -limit, limit, dtype=dtype)


@keras.saving.register_keras_serializable(package="automl")
class MemberMean(keras.layers.Layer):
    """The packed ensemble's prediction: the mean of its members' outputs, (n, members, d) to (n, d)."""

    def call(self, x: Any) -> Any:
        return ops.mean(x, axis=1)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (input_shape[0], input_shape[2])


#: An entity embedding's width at most: fastai's rule ``1.6 · levels^0.56``, capped.
MAX_EMBEDDING_WIDTH = 16


def embedding_width(levels: int) -> int:
    """Outputs of a categorical column's embedding, from its level count (fastai's rule, at most 16)."""
    return max(1, min(MAX_EMBEDDING_WIDTH, round(1.6 * levels**0.56)))


@keras.saving.register_keras_serializable(package="automl")
class SplitLast(keras.layers.Layer):
    """The columns before the last ``n``, and the last ``n``: a network's features, and the logits of its GLM start
    (``automl.bodies.linear_start``) that travel beside them."""

    def __init__(self, n: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.n = int(n)

    def call(self, x: Any) -> Any:
        cut = x.shape[-1] - self.n
        return x[:, :cut], x[:, cut:]

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (input_shape[0], input_shape[1] - self.n), (input_shape[0], self.n)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n": self.n}


@keras.saving.register_keras_serializable(package="automl")
class CategoryEmbeddings(keras.layers.Layer):
    """The last ``len(levels)`` input columns are category codes (``automl.encoders.CategoryCodes``: 0 for a
    level unseen at fit, so every unseen level maps to one shared vector); the columns before them pass through.

    ``mode="embedding"``: each code column becomes its own learned vector of :func:`embedding_width` of its levels,
    after the other columns. ``mode="onehot"``: the codes are dropped (the one-hot columns before them are what the
    network reads).
    """

    def __init__(self, levels: list[int], mode: str = "embedding", **kwargs: Any):
        super().__init__(**kwargs)
        self.levels, self.mode = [int(n) for n in levels], mode

    def build(self, input_shape: Any) -> None:
        if self.mode == "embedding":
            self.tables = [self.add_weight(shape=(n, embedding_width(n)), name=f"table_{j}",
                                           initializer=keras.initializers.RandomNormal(0.0, 0.05))
                           for j, n in enumerate(self.levels)]

    def call(self, x: Any) -> Any:
        c = len(self.levels)
        rest = x[:, : x.shape[-1] - c]
        if self.mode != "embedding":
            return rest
        codes = ops.cast(x[:, x.shape[-1] - c:], "int32")
        vectors = [ops.take(table, ops.clip(codes[:, j], 0, n - 1), axis=0)  # a code past the table: unseen
                   for j, (table, n) in enumerate(zip(self.tables, self.levels, strict=True))]
        return ops.concatenate([rest, *vectors], axis=1)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        added = sum(embedding_width(n) for n in self.levels) if self.mode == "embedding" else 0
        return (input_shape[0], input_shape[1] - len(self.levels) + added)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "levels": self.levels, "mode": self.mode}
