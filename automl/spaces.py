"""Search spaces: one engine-neutral definition per model family.

A space is a tuple of parameter specs. Engines render it (``suggest`` for Optuna
here; Keras Tuner renders the same tuple in its own engine module), so adding an
engine never touches this file and adding a family never touches the engines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Int", "Float", "Choice", "Param", "MLP_SPACE", "MLP_WARM_STARTS", "CNN_SPACE", "CNN_WARM_STARTS",
           "CNN_PHOTO_AUGMENTATION", "GBM_SPACE", "GBM_WARM_STARTS", "GBM_TARGET", "CATEGORICAL_EMBEDDING",
           "PORTFOLIO_FILE", "FAMILIES", "MAX_EPOCHS", "family_space", "suggest"]


@dataclass(frozen=True)
class Int:
    """An integer in ``[low, high]``."""

    name: str
    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class Float:
    """A float in ``[low, high]``, optionally sampled on a log scale."""

    name: str
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """One of a fixed tuple of values (str, int, float or bool)."""

    name: str
    choices: tuple[Any, ...]


Param = Int | Float | Choice

#: Upper bound on epochs; early stopping usually ends a trial well before it.
MAX_EPOCHS = 100

MLP_SPACE: tuple[Param, ...] = (
    Int("n_layers", 1, 3),
    Choice("units", (16, 32, 64, 128, 256)),
    Choice("activation", ("relu", "elu", "selu", "swish", "tanh")),
    Float("dropout", 0.0, 0.5),
    Choice("batch_norm", (False, True)),
    Float("l2", 1e-6, 1e-2, log=True),
    Float("learning_rate", 1e-4, 3e-2, log=True),
    Choice("optimizer", ("adam", "adamw", "rmsprop", "sgd")),
    Choice("batch_size", (16, 32, 64, 128)),
    # What the tabular deep-learning literature adds (automl.layers): numeric columns through their quantiles to
    # a normal (RealMLP, TabM) or robustly scaled and smoothly clipped (RealMLP), periodic embeddings of numeric
    # values (PLR), a cosine learning-rate schedule (annealed to zero over automl.training.SCHEDULE_EPOCHS), label
    # smoothing (classification; regression ignores it), and k copies of the network packed in one graph, their
    # predictions averaged (TabM's packed ensemble: less overfitting, better optimization).
    Choice("input_scaling", ("standard", "quantile", "robust")),
    Choice("numeric_embedding", ("none", "periodic")),
    Choice("lr_schedule", ("constant", "cosine")),
    Choice("label_smoothing", (0.0, 0.1)),
    Choice("ensemble_size", (1, 8, 32)),
    # Every network starts as the GLM and learns what it misses (automl.bodies.linear_start): cross-validation
    # then keeps the start wherever the trained part does not beat it out of fold (automl.evaluation), so no
    # network ranks below the GLM. Searched as (False, True), networks without it did: diabetes at 120 s, 45 of
    # 50 trials went without (a few hundred validation rows reward noise: 0.844 at best against 0.827 with it)
    # and their cross-validated AUC was 0.8313 and 0.8229, GLM_1's 0.8324. One value: trials.csv and the board
    # still name it, and KerasNetwork trains without it for the benchmarks that compare.
    Choice("linear_start", (True,)),
)

#: Searched beside MLP_SPACE when the table has categorical columns: their one-hot columns, or an entity embedding
#: of each column's codes (``automl.layers.CategoryEmbeddings``; levels unseen at fit share one vector).
CATEGORICAL_EMBEDDING = Choice("categorical_embedding", ("onehot", "embedding"))

_PLAIN = {"input_scaling": "standard", "numeric_embedding": "none", "lr_schedule": "constant", "label_smoothing": 0.0,
          "ensemble_size": 1, "linear_start": False}

#: Configurations that usually do well on small tabular data (the AutoKeras idea: a good start beats a random one
#: under a short budget): the search's warm starts before the portfolio (below), and the reference configurations
#: of the tests and benchmarks.
MLP_WARM_STARTS: tuple[dict[str, Any], ...] = (
    {"n_layers": 2, "units": 64, "activation": "relu", "dropout": 0.2, "batch_norm": False,
     "l2": 1e-4, "learning_rate": 1e-3, "optimizer": "adam", "batch_size": 32, **_PLAIN},
    {"n_layers": 1, "units": 32, "activation": "elu", "dropout": 0.1, "batch_norm": False,
     "l2": 1e-3, "learning_rate": 3e-3, "optimizer": "adam", "batch_size": 32, **_PLAIN},
    # The first with periodic embeddings: test AUC 0.917 against 0.903 on churn, 0.828 against 0.819 on Pima
    # (3 splits × 2 seeds each, the same early stopping; bench/README.md).
    {"n_layers": 2, "units": 64, "activation": "relu", "dropout": 0.2, "batch_norm": False,
     "l2": 1e-4, "learning_rate": 1e-3, "optimizer": "adam", "batch_size": 32,
     **_PLAIN, "numeric_embedding": "periodic"},
)

#: The zero-shot portfolio (``automl/portfolios/mlp.json``): configurations chosen offline on 38 public tables that
#: are not ours, as the greedy set whose best member does best across them (``bench/mlp_portfolio.py``; AutoGluon's
#: TabRepo portfolios and FLAML's zero-shot do the same). The MLP search starts from them, cheapest first: on a
#: large table the first network must rank early (the jobs' first network is the best one that fits its time).
PORTFOLIO_FILE = Path(__file__).parent / "portfolios" / "mlp.json"


def _portfolio() -> tuple[dict[str, Any], ...]:
    """The portfolio's configurations, each with every MLP_SPACE parameter (in the space's order) and its
    ``categorical_embedding`` last (dropped by :func:`family_space` on tables without categorical columns)."""
    configurations = json.loads(PORTFOLIO_FILE.read_text())["configurations"]
    params = (*MLP_SPACE, CATEGORICAL_EMBEDDING)
    # A value the space no longer offers takes the space's first (robust-periodic-packed-8 is chosen without the
    # GLM start and runs with it), each configuration once.
    chosen = [{p.name: c[p.name] if not isinstance(p, Choice) or c[p.name] in p.choices else p.choices[0]
               for p in params} for c in configurations]
    return _once(chosen)


def _once(configurations: list[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    """Each configuration once, in order (dicts do not hash)."""
    return tuple(c for i, c in enumerate(configurations) if c not in configurations[:i])


#: Convolutional networks for images. Pooling is applied only while the feature map
#: is at least 4 pixels wide (see ``automl.bodies``), so an 8x8 image is never
#: pooled away whatever ``n_blocks`` is drawn. ``block``: two plain convolutions' worth of layers in one
#: (``plain``), a residual block (two convolutions and a shortcut, as ResNet) or a depthwise-separable
#: convolution (as MobileNet and Xception: fewer multiply-adds per channel). ``tta``: the prediction is the mean
#: over the image and its one-pixel shifts (and mirror image, where training flipped), at every predict.
CNN_SPACE: tuple[Param, ...] = (
    Int("n_blocks", 1, 3),
    Choice("filters", (16, 32, 64)),
    Choice("kernel_size", (3, 5)),
    Choice("block", ("plain", "residual", "separable")),
    Choice("pooling", ("max", "avg", "none")),
    Choice("batch_norm", (False, True)),
    Float("dropout", 0.0, 0.5),
    Choice("dense_units", (0, 64, 128)),
    Choice("augmentation", ("none", "translate", "translate+rotate")),
    Choice("activation", ("relu", "elu", "swish")),
    Float("l2", 1e-6, 1e-3, log=True),
    Float("learning_rate", 1e-4, 1e-2, log=True),
    Choice("optimizer", ("adam", "adamw", "rmsprop", "sgd")),
    Choice("batch_size", (32, 64, 128)),
    Choice("lr_schedule", ("constant", "cosine")),
    Choice("label_smoothing", (0.0, 0.1)),
    Choice("tta", (False, True)),
)

#: Photos (colour images) may be mirrored; digits and other grey images may not (a mirrored 2 is no digit).
CNN_PHOTO_AUGMENTATION = Choice("augmentation", ("none", "translate", "translate+rotate", "translate+flip"))

#: The strong default first (the AutoKeras idea: a good start beats a random one under a short budget): three
#: batch-normalised blocks, translations, a cosine schedule annealed to zero over the fit's epochs and label
#: smoothing. 5-fold CV on the 8x8 digits, 100 epochs: mean per-class error 0.0011 and 0.0039 (two seeds), where
#: the old warm start (two blocks, no augmentation, a constant learning rate, 40 epochs) had 0.0235 and the SVM
#: 0.0089. Test-time augmentation: 0.985 against 0.983 holdout accuracy on 5,000 MNIST digits (the same trial's
#: model). Then a residual network.
CNN_WARM_STARTS: tuple[dict[str, Any], ...] = (
    {"n_blocks": 3, "filters": 32, "kernel_size": 3, "block": "plain", "pooling": "max", "batch_norm": True,
     "dropout": 0.25, "dense_units": 128, "augmentation": "translate", "activation": "relu", "l2": 1e-5,
     "learning_rate": 2e-3, "optimizer": "adam", "batch_size": 32, "lr_schedule": "cosine", "label_smoothing": 0.1,
     "tta": True},
    {"n_blocks": 2, "filters": 32, "kernel_size": 3, "block": "residual", "pooling": "max", "batch_norm": True,
     "dropout": 0.25, "dense_units": 0, "augmentation": "translate", "activation": "relu", "l2": 1e-5,
     "learning_rate": 2e-3, "optimizer": "adam", "batch_size": 64, "lr_schedule": "cosine", "label_smoothing": 0.1,
     "tta": True},
)

#: LightGBM's gradient boosting (``automl.estimators.train_boosted``): what FLAML's and H2O's GBM grids search.
#: ``patience`` is the early-stopping rounds on the search's validation rows; a trial's "epochs" are rounds in
#: steps of ``automl.estimators.ROUNDS_PER_EPOCH`` (Hyperband's resource, for both engines).
GBM_SPACE: tuple[Param, ...] = (
    Float("learning_rate", 0.01, 0.3, log=True),
    Int("num_leaves", 4, 256, log=True),
    Int("min_child_samples", 2, 200, log=True),
    Float("feature_fraction", 0.3, 1.0),
    Float("bagging_fraction", 0.5, 1.0),
    Float("lambda_l1", 1e-8, 10.0, log=True),
    Float("lambda_l2", 1e-8, 10.0, log=True),
    Choice("extra_trees", (False, True)),
    Choice("patience", (20, 50, 100)),
)

#: Unlike the reference models' portfolio (``automl.models.GBM_PORTFOLIO``): fast, small trees, a strong L2.
GBM_WARM_STARTS: tuple[dict[str, Any], ...] = (
    {"learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 10, "feature_fraction": 0.7,
     "bagging_fraction": 0.8, "lambda_l1": 1e-8, "lambda_l2": 1.0, "extra_trees": False, "patience": 50},
)

#: Searched beside GBM_SPACE when the regression target is skewed and ≥ 0 (prices, counts, durations; see
#: ``automl.models.SKEWED_PORTFOLIO``): the scale the loss sees: the values, ``log1p`` of them (predictions mapped
#: back), or a Tweedie loss with its log link. Every trial is scored on the original scale.
GBM_TARGET = Choice("target", ("raw", "log", "tweedie"))

#: Model families by name: (space, warm starts). Tabular tasks search "mlp" and "gbm", images "cnn".
FAMILIES: dict[str, tuple[tuple[Param, ...], tuple[dict[str, Any], ...]]] = {
    "mlp": (MLP_SPACE, _portfolio()),
    "cnn": (CNN_SPACE, CNN_WARM_STARTS),
    "gbm": (GBM_SPACE, GBM_WARM_STARTS),
}


#: A GBM leaf holds at least ``min_child_samples`` rows: at most this share of the search's training rows, so that
#: a tree can split at all (help_baseline, 228 rows: 12 of 107 trials drew 128-181 and scored a constant's 0.5 AUC).
MIN_CHILD_SHARE = 1 / 3


def family_space(family: str, skewed_target: bool = False, categorical: bool = False,
                 photos: bool = False, rows: int | None = None) -> tuple[tuple[Param, ...], tuple[dict[str, Any], ...]]:
    """``FAMILIES[family]``; for "gbm" on a skewed target ≥ 0, with :data:`GBM_TARGET` searched too and a
    Tweedie warm start beside the plain one (on diamonds Tweedie was the best scale, see SKEWED_PORTFOLIO); for
    "mlp", the portfolio as warm starts, with :data:`CATEGORICAL_EMBEDDING` searched too on a table with
    ``categorical`` columns (else the portfolio without it, each configuration once); for "cnn" on ``photos``
    (colour images), mirror images among the augmentations, and in the warm starts. ``rows``: the search's
    training rows, which bound a GBM leaf's least rows (:data:`MIN_CHILD_SHARE`)."""
    space, warm_starts = FAMILIES[family]
    if family == "gbm" and rows is not None:
        high = min(200, max(16, int(rows * MIN_CHILD_SHARE)))  # 16: the warm starts stay inside
        space = tuple(Int(p.name, p.low, high, p.log) if p.name == "min_child_samples" else p for p in space)
    if family == "cnn" and photos:
        flipped = tuple({**w, "augmentation": "translate+flip"} if w["augmentation"] == "translate" else w
                        for w in warm_starts)
        return tuple(CNN_PHOTO_AUGMENTATION if p.name == "augmentation" else p for p in space), flipped
    if family == "mlp" and categorical:
        return (*space, CATEGORICAL_EMBEDDING), warm_starts
    if family == "mlp":
        plain = [{k: v for k, v in w.items() if k != CATEGORICAL_EMBEDDING.name} for w in warm_starts]
        return space, _once(plain)
    if family != "gbm" or not skewed_target:
        return space, warm_starts
    return ((*space, GBM_TARGET),
            tuple({**w, "target": scale} for scale in ("raw", "tweedie") for w in warm_starts))


def suggest(space: tuple[Param, ...], trial: Any) -> dict[str, Any]:
    """Render ``space`` for an Optuna trial and return the sampled parameters."""
    params: dict[str, Any] = {}
    for p in space:
        if isinstance(p, Int):
            params[p.name] = trial.suggest_int(p.name, p.low, p.high, log=p.log)
        elif isinstance(p, Float):
            params[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
        else:
            params[p.name] = trial.suggest_categorical(p.name, list(p.choices))
    return params
