"""The layers of a Keras network of each family, and the initial weights of an MLP.

:mod:`automl.training` builds its networks from these bodies; :mod:`automl.population_graph` starts each
member from exactly the weights :func:`mlp_initial_kernels` and :func:`periodic_initial_weights` draw, so that a
member trains as the one-at-a-time network of its seed. Keras comes in as an argument: importing this module is
cheap.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["BODIES", "TTA_SHIFTS", "initial_weights", "linear_start", "mlp_initial_kernels", "numeric_inputs",
           "periodic_initial_weights", "predict_views", "start_glm", "tta_views"]


def mlp_initial_kernels(params: dict[str, Any], n_features: int, n_outputs: int, seed: int) -> list[np.ndarray]:
    """Glorot-uniform kernels (Keras' default for Dense) of an MLP's hidden layers and output layer, from ``seed``.

    Drawn with numpy rather than Keras' seed generator, so that :mod:`automl.population` can
    start a member from exactly the weights this module's network starts from.
    """
    rng = np.random.default_rng(seed)
    units = int(params["units"])
    shapes = [(n_features, units)] + [(units, units)] * (int(params["n_layers"]) - 1) + [(units, n_outputs)]
    return [rng.uniform(-1.0, 1.0, shape).astype("float32") * np.float32(math.sqrt(6.0 / sum(shape)))
            for shape in shapes]


def periodic_initial_weights(embedder: Any, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Initial frequencies (c, k) ~ N(0, scale) and kernel (c, 2k, d) of a periodic embedding (``embedder``, an
    :class:`automl.layers.NumericInputs`), from ``seed``: Keras' initializers of that layer, drawn with numpy
    so that a population member starts from the same weights (as :func:`mlp_initial_kernels`)."""
    rng = np.random.default_rng([seed, 1])  # a stream apart from the dense kernels'
    c, k, d = len(embedder.columns), embedder.n_frequencies, embedder.d_embedding
    frequencies = rng.normal(0.0, embedder.scale, (c, k)).astype("float32")
    limit = math.sqrt(6.0 / (c * 2 * k + c * d))  # Keras' Glorot fans of a (c, 2k, d) kernel: c·2k in, c·d out
    return frequencies, rng.uniform(-limit, limit, (c, 2 * k, d)).astype("float32")


def _mlp_body(keras: Any, h: Any, p: dict[str, Any]) -> Any:
    """The hidden layers: (n, units), or (n, members, units) for a packed ensemble of ``ensemble_size``."""
    reg = keras.regularizers.L2(p["l2"]) if p.get("l2") else None
    k, units = int(p.get("ensemble_size", 1)), int(p["units"])
    for _ in range(int(p["n_layers"])):
        if k > 1:
            from automl.layers import PackedDense

            h = PackedDense(k, units, kernel_regularizer=reg)(h)
        else:
            h = keras.layers.Dense(units, kernel_regularizer=reg)(h)
        if p.get("batch_norm") and k > 1:  # statistics per member and unit, as each member alone would keep
            flat = keras.layers.BatchNormalization()(keras.layers.Reshape((k * units,))(h))
            h = keras.layers.Reshape((k, units))(flat)
        elif p.get("batch_norm"):
            h = keras.layers.BatchNormalization()(h)
        h = keras.layers.Activation(p["activation"])(h)
        if p.get("dropout"):
            h = keras.layers.Dropout(float(p["dropout"]))(h)
    return h


def _cnn_body(keras: Any, h: Any, p: dict[str, Any]) -> Any:
    reg = keras.regularizers.L2(p["l2"]) if p.get("l2") else None
    augmentation = p.get("augmentation", "none")
    if augmentation != "none":  # active only in training=True calls
        if "flip" in augmentation:
            h = keras.layers.RandomFlip("horizontal")(h)
        h = keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant")(h)
        if "rotate" in augmentation:
            h = keras.layers.RandomRotation(0.05, fill_mode="constant")(h)
    size = min(h.shape[1], h.shape[2])
    for block in range(int(p["n_blocks"])):
        h = _conv_block(keras, h, p, int(p["filters"]) * 2**block, reg)
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


def _conv_block(keras: Any, h: Any, p: dict[str, Any], filters: int, reg: Any) -> Any:
    """One block of ``p["block"]`` kind (``plain`` when absent: configurations searched before it existed)."""
    kind, size = p.get("block", "plain"), int(p["kernel_size"])

    def conv(x: Any, width: int = size) -> Any:
        layer = keras.layers.SeparableConv2D if kind == "separable" and x.shape[-1] > 1 else keras.layers.Conv2D
        regularizer = {"depthwise_regularizer": reg, "pointwise_regularizer": reg} \
            if layer is keras.layers.SeparableConv2D else {"kernel_regularizer": reg}
        x = layer(filters, width, padding="same", **regularizer)(x)
        # PyTorch's momentum (Keras' 0.99 is 0.01 there): on a few thousand images an epoch is a few dozen
        # steps, and Keras' moving statistics lagged so far that a residual net validated at chance for 10 epochs.
        return keras.layers.BatchNormalization(momentum=0.9)(x) if p.get("batch_norm") else x

    out = conv(h)
    if kind == "residual":  # conv, act, conv, plus the input (projected by a 1x1 convolution to the width)
        out = conv(keras.layers.Activation(p["activation"])(out))
        out = keras.layers.Add()([out, h if h.shape[-1] == filters else conv(h, 1)])
    return keras.layers.Activation(p["activation"])(out)


#: Test-time augmentation's views of an image: itself and its one-pixel shifts (rows, columns).
TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def tta_views(tf: Any, batch: Any, flip: bool) -> list[Any]:
    """Test-time augmentation: the images, shifted one pixel each way (the borders filled with zeros, as the
    training translations fill them), and mirrored where training flipped them."""
    height, width = int(batch.shape[1]), int(batch.shape[2])
    padded = tf.pad(batch, [[0, 0], [1, 1], [1, 1], [0, 0]])
    views = [padded[:, 1 + dy: 1 + dy + height, 1 + dx: 1 + dx + width, :] for dy, dx in TTA_SHIFTS]
    return views + [tf.reverse(batch, axis=[2])] if flip else views


def predict_views(params: dict[str, Any], family: str) -> int:
    """How many views of each image a network predicts on (:func:`tta_views`; 1 without test-time augmentation)."""
    if family != "cnn" or not params.get("tta"):
        return 1
    return len(TTA_SHIFTS) + ("flip" in params.get("augmentation", ""))


BODIES = {"mlp": _mlp_body, "cnn": _cnn_body}


#: Rows a network's starting GLM chooses its penalty on at most (then fitted with it on every row): the 3-fold path
#: took 5.2 s on 10,000 rows of mpls_stops' 95 columns and 0.8 s on 5,000, once per fold of a network's CV.
START_ROWS = 5_000


def _start_glm(x: np.ndarray, y: np.ndarray, kind: str) -> Any:
    """The GLM of ``x`` and ``y`` fitted as ``GLM_1`` is (ridge by generalised CV; logistic with its penalty chosen
    by 3-fold CV up to ``GLM_PATH_ROWS`` rows, the path on at most :data:`START_ROWS` of them, and ``GLM_1``'s
    fixed penalty above): the fitted ridge or scikit-learn model."""
    from automl.estimators import GLM_CS, GLM_PATH_ROWS, LinearModel

    glm = LinearModel(kind, Cs=GLM_CS)
    if kind == "binary" and START_ROWS < len(x) <= GLM_PATH_ROWS:
        rows = np.sort(np.random.default_rng(0).permutation(len(x))[:START_ROWS])
        chosen = LinearModel(kind, Cs=GLM_CS).fit(x[rows], y[rows]).model_  # LogisticRegressionCV, or one C
        glm = LinearModel(kind, C=float(np.ravel(chosen.C_ if hasattr(chosen, "C_") else chosen.C)[0]))
    glm.fit(x, y)
    return glm if kind == "regression" else glm.model_


def start_glm(x: np.ndarray, y: np.ndarray, task: str, units: int, skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The kernel (columns, ``units``) and bias of the GLM of all but the last ``skip`` columns of ``x`` and of
    ``y`` (:func:`_start_glm`; zeros where a class is missing from ``y``). Remembered by the rows
    (``automl.estimators.GLM_FITS``): a search's trials on one matrix share one fit (a 3-fold path of 5 penalties
    takes seconds on 10k rows of a few hundred columns), the population's members too, and a fold's network takes
    GLM_1's own fold model where GLM_1 was fitted on its rows in this process."""
    from automl.estimators import GLM_FITS, remember_glm, rows_key

    x = x[:, :x.shape[1] - skip]
    kind = "regression" if task == "regression" else "binary"
    key = (kind, *rows_key(x, y))
    kernel, bias = GLM_FITS[key] if key in GLM_FITS else remember_glm(key, _start_glm(x, y, kind), x.shape[1])
    if kernel.shape[1] != units:  # a class missing from these rows: start from zero rather than misplace one
        return np.zeros((x.shape[1], units), "float32"), np.zeros(units, "float32")
    return kernel, bias


def linear_start(keras: Any, raw: Any, kernel: np.ndarray, bias: np.ndarray, skip: int) -> Any:
    """A frozen dense layer from ``raw`` (all but its last ``skip`` columns, category codes) to the output's logits
    holding a GLM's ``kernel`` and ``bias`` (:func:`start_glm`). The network adds it to its MLP's output, which
    starts at zero: it starts as the GLM and learns what the GLM misses (the "wide" part of Cheng et al.'s wide &
    deep networks, fitted first). On small and wide tables networks from random weights ranked below the GLM
    (help_baseline, cross-validated AUC: 0.582, 0.620 with this start; caravan 0.728 and 0.740;
    diabetes-progression RMSE 54.29 and 54.01, the GLM's 54.04).
    """
    from automl.layers import CategoryEmbeddings

    # Frozen: the GLM keeps its penalty (trained along, its weights drifted toward an unpenalised fit: caravan's
    # cross-validated AUC 0.738 against 0.740 frozen, the GLM's 0.745).
    layer = keras.layers.Dense(kernel.shape[1], dtype="float32", name="linear_start", trainable=False)
    out = layer(CategoryEmbeddings([1] * skip, mode="onehot")(raw) if skip else raw)
    layer.set_weights([kernel, bias])
    return out


#: Rows sampled to tell numeric columns from two-valued ones (one-hot, missing indicators).
NUMERIC_SAMPLE = 20_000


def numeric_inputs(x: np.ndarray, scaling: str, embedding: str, skip: int = 0) -> tuple[Any, Any]:
    """The quantile or robust scaler and the periodic embedding (:class:`automl.layers.NumericInputs`) of ``x``'s
    numeric columns that ``scaling`` and ``embedding`` ask for, each None when not; the scaler fitted on ``x``.

    Numeric columns are those with more than two values, of all but the last ``skip`` (category codes): one-hot
    and missing-value indicator columns have two. The scaler puts the numeric columns first, so the embedding
    after it takes the first ones; the other columns follow in their order (the codes last).
    """
    if scaling == "standard" and embedding == "none":
        return None, None
    from automl.layers import NumericInputs, fit_quantiles, fit_robust

    sample = x[:: max(1, len(x) // NUMERIC_SAMPLE), : x.shape[1] - skip]
    low, high = sample.min(axis=0), sample.max(axis=0)
    columns = np.flatnonzero(((sample != low) & (sample != high)).any(axis=0)).tolist()
    if not columns:
        return None, None
    scaler = embedder = None
    if scaling == "quantile":
        scaler = NumericInputs(columns, x.shape[1], scaling="quantile")
        scaler.build(x.shape)
        scaler.set_quantiles(fit_quantiles(x[:, columns]))
    elif scaling == "robust":
        scaler = NumericInputs(columns, x.shape[1], scaling="robust")
        scaler.build(x.shape)
        scaler.set_robust(*fit_robust(x[:, columns]))
    if embedding == "periodic":
        embedder = NumericInputs(columns if scaler is None else list(range(len(columns))), x.shape[1],
                                 embedding="periodic")
        embedder.build(x.shape)
    return scaler, embedder


def initial_weights(keras: Any, params: dict[str, Any], seed: int, network: Any, embedder: Any, head: Any,
                    start: bool) -> None:
    """Set an MLP's initial weights to those a population member of ``seed`` has (a packed ensemble keeps its
    own); with a GLM ``start``, its output layer's at zero: the network starts as the GLM."""
    if int(params.get("ensemble_size", 1)) == 1:
        if embedder is not None:
            frequencies, kernel = periodic_initial_weights(embedder, seed)
            embedder.frequencies.assign(frequencies)
            embedder.kernel.assign(kernel)
        dense = [d for d in network.layers if isinstance(d, keras.layers.Dense)]
        width = int(dense[0].kernel.shape[0])  # the inputs' width after NumericInputs' embeddings
        for layer, kernel in zip(dense, mlp_initial_kernels(params, width, head.units, seed), strict=True):
            layer.kernel.assign(kernel)
    if start:
        head.kernel.assign(np.zeros(head.kernel.shape, "float32"))
