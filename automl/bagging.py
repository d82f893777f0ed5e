"""The model every leaderboard row exports, and what every exported model offers.

Every leaderboard row is a :class:`BaggedModel`: the k fold models of its
cross-validation, each with its own fitted preprocessing, averaged at predict time
(AutoGluon's bagging). Its out-of-fold score is therefore an honest estimate for
exactly what is exported, and no extra full-data refit eats the time budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from automl.errors import InputError
from automl.image_store import ImageRows
from automl.preprocess import Schema

__all__ = ["Model", "FoldModel", "BaggedModel", "predict_raw", "take_rows"]


@dataclass
class FoldModel:
    """One fold's fitted preprocessing and estimator."""

    preprocessor: Any
    estimator: Any


class Model:
    """What every exported model offers: ``predict_proba`` on raw rows, and ``predict``.

    Subclasses are dataclasses with ``model_id``, ``algo``, ``schema``, ``params`` and
    ``metrics`` and implement ``predict_proba``.
    """

    model_id: str
    algo: str
    schema: Schema

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def scored_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """What the models that were scored predict: ``predict_proba`` unless refit on all rows since."""
        return self.predict_proba(frame)

    def check_columns(self, frame: pd.DataFrame, source: str = "input") -> None:
        if self.schema.task == "image":
            return  # the pixel scaler checks image shapes
        missing = [c for c in self.schema.features if c not in frame.columns]
        if missing:
            raise InputError(f"{source}: missing column(s) {', '.join(map(repr, missing))} that model "
                             f"{self.model_id} was trained on; add them (blank cells are allowed)")

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A frame with ``predict`` (label or value) and ``p_<class>`` columns for classification."""
        out = self.predict_proba(frame)
        index = getattr(frame, "index", None)  # image arrays have none
        if self.schema.task == "regression":
            return pd.DataFrame({"predict": out}, index=index)
        classes = np.asarray(self.schema.classes, dtype=object)
        result = pd.DataFrame({"predict": classes[out.argmax(axis=1)]}, index=index)
        for i, label in enumerate(self.schema.classes):
            result[f"p_{label}"] = out[:, i]
        return result


@dataclass
class BaggedModel(Model):
    """The average of fold models; predicts from raw rows with the training columns.

    ``full``, when set, is the same model refit on all training rows after the holdout scored
    the fold model (see :mod:`automl.refit`): it then makes the predictions, and the metrics
    stay those of the fold model.
    """

    model_id: str
    algo: str
    schema: Schema
    folds: list[FoldModel]
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    full: FoldModel | None = None

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Averaged class probabilities (n, n_classes), or values (n,) for regression."""
        if self.full is None:
            return self.scored_proba(frame)
        self.check_columns(frame)
        return predict_raw(self.full.estimator, self.full.preprocessor.transform(frame), self.schema.task)

    def scored_proba(self, frame: pd.DataFrame) -> np.ndarray:
        self.check_columns(frame)
        outs = [predict_raw(f.estimator, f.preprocessor.transform(frame), self.schema.task) for f in self.folds]
        return np.mean(outs, axis=0)


def predict_raw(estimator: Any, x: np.ndarray, task: str) -> np.ndarray:
    """Probabilities for classification, values for regression, from any of our estimators; stored images a
    batch at a time."""
    if isinstance(x, ImageRows):
        return np.concatenate([predict_raw(estimator, batch, task) for batch in x.batches()])
    if task == "regression":
        return np.asarray(estimator.predict(x), dtype="float64")
    proba = np.asarray(estimator.predict_proba(x), dtype="float64")
    return proba / proba.sum(axis=1, keepdims=True)  # float32 models sum to 1 only to ~1e-7


def take_rows(x: pd.DataFrame | np.ndarray, rows: np.ndarray) -> pd.DataFrame | np.ndarray:
    """Rows of a table (by position) or of an array."""
    return x.iloc[rows] if isinstance(x, pd.DataFrame) else x[rows]
