"""Explanations: out-of-fold permutation importance of a bagged model.

A :class:`~automl.bagging.BaggedModel` holds one fold model per cross-validation
fold, and fold model ``i`` never saw fold ``i``'s held-out rows. Permuting a raw
input column in those rows and scoring fold model ``i`` on them measures what the
column is worth on unseen data, with no refit and no held-back rows.

Not :func:`sklearn.inspection.permutation_importance`: it scores one estimator on
one frame and cannot stop at a deadline; here every fold has its own model and
rows, and a deadline must leave a usable partial result.

The cost does not grow with the table: at most about ``MAX_ROWS`` held-out rows are
scored in all, a seeded sample of each fold's rows in proportion to its size,
stratified by class for classification.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import product
from time import monotonic
from typing import Any

import numpy as np
import pandas as pd

from automl.bagging import predict_raw
from automl.metrics import Metric

__all__ = ["permutation_importance", "row_permutation"]

Predict = Callable[[pd.DataFrame], np.ndarray]

#: Held-out rows scored in all, over every fold: the cost stays bounded however large the table.
MAX_ROWS = 5_000
#: Cells scored in one prediction call: shuffled copies of a fold's rows, one copy per feature.
MAX_BATCH_CELLS = 2_000_000


def row_permutation(seed: int, repeat: int, fold: int, n_rows: int) -> np.ndarray:
    """The shuffle of fold ``fold``'s held-out rows in repeat ``repeat``, shared by every feature.

    Seeded by ``(seed, repeat, fold)`` alone, so a result does not depend on how far an
    earlier call got before its deadline.
    """
    return np.random.default_rng((seed, repeat, fold)).permutation(n_rows)


def permutation_importance(model: Any, x: pd.DataFrame, y: np.ndarray,
                           folds: list[tuple[np.ndarray, np.ndarray]], metric: Metric, task: str,
                           n_repeats: int = 5, seed: int = 0, deadline: float | None = None,
                           max_rows: int = MAX_ROWS) -> pd.DataFrame:
    """Out-of-fold permutation importance of each of ``model.schema.features``.

    For fold ``i``, fold model ``model.folds[i]`` predicts fold ``i``'s held-out rows with
    one raw column of ``x`` shuffled (so a one-hot group moves together); the importance
    is the drop in ``metric`` against the unshuffled rows (positive: the feature helps),
    averaged over folds and repeats. A stacked ensemble predicts fold ``i``'s rows with its
    metalearner on its bases' fold ``i`` models, so that no model scores rows it trained on (the
    metalearner learnt from every row's out-of-fold predictions, as it does for the board).

    Each fold scores a seeded, class-stratified sample of its held-out rows, about
    ``max_rows`` over all folds together (every class keeps at least one row).
    ``deadline`` (a ``time.monotonic()`` value) is checked before each (repeat, fold), which starts only if
    the last one's time fits, and between batches of features within one: past it, the result uses what was
    computed, with NaN for a feature never scored.
    Returns columns ``feature, importance, importance_std``, most important first;
    ``attrs["evaluations"]`` counts the (repeat, fold) passes and ``attrs["complete"]``
    says whether all of them ran.
    """
    features = _checked_features(model, x, n_repeats, max_rows)
    predictors = _fold_predictors(model, folds, task)
    held_out = sum(len(test) for _, test in folds)
    scored = [_row_sample(test, y, task, max(1, max_rows * len(test) // max(held_out, 1)), (seed, i))
               for i, (_, test) in enumerate(folds)]
    drops: dict[str, list[float]] = {f: [] for f in features}
    baselines: dict[int, float] = {}
    copy_seconds: dict[int, float] = {}  # fold i's prediction of its rows, once: what each shuffled copy costs
    passes = list(product(range(n_repeats), range(len(folds))))
    evaluations, last_pass = 0, 0.0
    for repeat, i in passes:
        # A pass is not started unless one as long as the last fits: on 200k rows a pass through an ensemble
        # with a 1,100-round GBM took 16 s, and three passes started before the deadline ended 20 s after it.
        if deadline is not None and monotonic() + last_pass >= deadline:
            break
        started = monotonic()
        test = scored[i]
        rows, y_test = x.iloc[test][features], y[test]
        if i not in baselines:
            baselines[i] = metric.fn(y_test, predictors[i](rows))
            copy_seconds[i] = monotonic() - started
        order = row_permutation(seed, repeat, i, len(test))
        done = 0
        for feature, score in _shuffled_scores(rows, y_test, order, predictors[i], metric, deadline,
                                               copy_seconds[i]):
            drops[feature].append(metric.sign() * (baselines[i] - score))
            done += 1
        evaluations += done == len(features)  # a pass the deadline cut short does not count as one
        last_pass = monotonic() - started
    return _importance_frame(features, drops, evaluations, len(passes))


def _checked_features(model: Any, x: pd.DataFrame, n_repeats: int, max_rows: int) -> list[str]:
    """``model.schema.features``, once the arguments are valid and ``x`` has every one of them."""
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be at least 1, but got {n_repeats=}")
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, but got {max_rows=}")
    features = list(model.schema.features)
    missing = [f for f in features if f not in x.columns]
    if missing:
        raise ValueError(f"x lacks the model's feature column(s) {missing}; pass the frame it was trained on")
    return features


def _importance_frame(features: list[str], drops: dict[str, list[float]], evaluations: int,
                      passes: int) -> pd.DataFrame:
    """Each feature's mean and spread of its score drops, most important first (NaN: never scored)."""
    frame = pd.DataFrame({
        "feature": features,
        "importance": [float(np.mean(drops[f])) if drops[f] else np.nan for f in features],
        "importance_std": [float(np.std(drops[f])) if drops[f] else np.nan for f in features],
    })
    frame = frame.sort_values("importance", ascending=False, na_position="last", kind="mergesort")
    frame = frame.reset_index(drop=True)
    frame.attrs.update(evaluations=evaluations, complete=evaluations == passes)
    return frame


def _shuffled_scores(rows: pd.DataFrame, y: np.ndarray, order: np.ndarray, predict: Any, metric: Metric,
                     deadline: float | None = None, copy_seconds: float = 0.0) -> Iterator[tuple[str, float]]:
    """``(feature, metric)`` with each column of ``rows`` shuffled by ``order`` in turn; with a ``deadline``,
    only as many copies of ``copy_seconds`` each (predicting ``rows`` once) as fit before it."""
    features, size = list(rows.columns), max(1, MAX_BATCH_CELLS // max(rows.size, 1))
    while features:
        if deadline is not None:
            # A batch is one call that cannot stop: on diamonds one of 9 copies through a 9-model ensemble
            # took 33 s, 29 s past the run's deadline. So it holds the copies that fit, and none if one does not.
            fits = (deadline - monotonic()) // copy_seconds if copy_seconds > 0 else size
            if fits < 1:
                return
            size = min(size, int(fits))
        batch, features = features[:size], features[size:]
        # One call per batch of shuffled copies: per-call overhead dwarfs the rows' cost.
        copies = []
        for feature in batch:
            shuffled = rows.copy()
            shuffled[feature] = rows[feature].iloc[order].set_axis(rows.index)
            copies.append(shuffled)
        pred = predict(pd.concat(copies, ignore_index=True))
        for k, feature in enumerate(batch):
            yield feature, metric.fn(y, pred[k * len(rows):(k + 1) * len(rows)])


def _row_sample(test: np.ndarray, y: np.ndarray, task: str, size: int, seed: tuple[int, int]) -> np.ndarray:
    """About ``size`` of the rows ``test`` (all if fewer), sorted; per class in proportion when classifying."""
    if len(test) <= size:
        return test
    rng = np.random.default_rng(seed)
    if task == "regression":
        return np.sort(rng.choice(test, size, replace=False))
    classes = [test[y[test] == c] for c in np.unique(y[test])]
    return np.sort(np.concatenate([rng.choice(rows, max(1, size * len(rows) // len(test)), replace=False)
                                   for rows in classes]))


def _fold_predictors(model: Any, folds: list[tuple[np.ndarray, np.ndarray]], task: str) -> list[Predict]:
    """Fold ``i``'s own fold model; for a stacked ensemble, its metalearner on its bases' fold ``i`` models;
    the whole model when it has neither."""
    if hasattr(model, "bases") and hasattr(model, "combine"):
        bases = [_fold_predictors(b, folds, task) for b in model.bases]

        def stacked(i: int) -> Predict:
            return lambda frame: model.combine(frame, [base[i](frame) for base in bases])

        return [stacked(i) for i in range(len(folds))]
    fold_models = getattr(model, "folds", None)
    if fold_models is None:
        return [model.scored_proba] * len(folds)
    if len(fold_models) != len(folds):
        raise ValueError(f"model {getattr(model, 'model_id', model)!r} has {len(fold_models)} fold models but "
                         f"got {len(folds)} folds; pass the folds it was cross-validated on")

    def predictor(fold_model: Any) -> Predict:
        return lambda frame: predict_raw(fold_model.estimator, fold_model.preprocessor.transform(frame), task)

    return [predictor(f) for f in fold_models]
