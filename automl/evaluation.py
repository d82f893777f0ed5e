"""The one evaluation protocol: k-fold cross-validation with out-of-fold predictions.

Every leaderboard row goes through :func:`cross_validate` on the same folds, with
preprocessing fitted on each fold's training rows only (no leakage).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from automl.metrics import score_all
from automl.models import BaggedModel, Candidate, FoldModel, predict_raw
from automl.preprocess import Schema, make_preprocessor

__all__ = ["Evaluated", "make_folds", "holdout_split", "cross_validate", "take_rows"]


def take_rows(x: pd.DataFrame | np.ndarray, rows: np.ndarray) -> pd.DataFrame | np.ndarray:
    """Rows of a table (by position) or of an image array."""
    return x.iloc[rows] if isinstance(x, pd.DataFrame) else x[rows]


@dataclass
class Evaluated:
    """A cross-validated model: the exported bag, its out-of-fold predictions and timings."""

    model: BaggedModel
    oof: np.ndarray
    training_time_ms: float
    predict_time_per_row_ms: float


def make_folds(y: np.ndarray, task: str, nfolds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds for classification, plain shuffled folds for regression."""
    splitter = KFold(nfolds, shuffle=True, random_state=seed) if task == "regression" \
        else StratifiedKFold(nfolds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def holdout_split(y: np.ndarray, task: str, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation row indices for search trials (stratified when classifying)."""
    rows = np.arange(len(y))
    stratify = None if task == "regression" else y
    train, val = train_test_split(rows, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(val)


def cross_validate(candidate: Candidate, x: pd.DataFrame | np.ndarray, y: np.ndarray, schema: Schema,
                   folds: list[tuple[np.ndarray, np.ndarray]]) -> Evaluated:
    """Fit ``candidate`` on each fold's training rows; predict its held-out rows."""
    n_out = len(schema.classes) if schema.task != "regression" else 0
    oof = np.zeros((len(y), n_out)) if n_out else np.zeros(len(y))
    fold_models, train_s, predict_s = [], 0.0, 0.0
    for train, test in folds:
        start = time.perf_counter()
        pre = make_preprocessor(schema).fit(take_rows(x, train))
        est = candidate.make().fit(pre.transform(take_rows(x, train)), y[train], **candidate.fit_kwargs)
        mid = time.perf_counter()
        oof[test] = predict_raw(est, pre.transform(take_rows(x, test)), schema.task)
        predict_s += time.perf_counter() - mid
        train_s += mid - start
        fold_models.append(FoldModel(pre, est))
    model = BaggedModel(candidate.model_id, candidate.algo, schema, fold_models, candidate.params,
                        score_all(schema.task, y, oof))
    return Evaluated(model, oof, 1000 * train_s, 1000 * predict_s / len(y))
