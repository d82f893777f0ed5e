"""Model families: scikit-learn reference models like H2O's, and the bagged model every row exports.

Every leaderboard row is a :class:`BaggedModel`: the k fold models of its
cross-validation, each with its own fitted preprocessing, averaged at predict time
(AutoGluon's bagging). Its out-of-fold score is therefore an honest estimate for
exactly what is exported, and no extra full-data refit eats the time budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from automl.errors import InputError
from automl.preprocess import Schema

__all__ = ["Model", "Candidate", "FoldModel", "BaggedModel", "reference_candidates"]


@dataclass
class Candidate:
    """A model to cross-validate: ``make()`` returns a fresh unfitted estimator."""

    model_id: str
    algo: str
    make: Callable[[], Any]
    params: dict[str, Any] = field(default_factory=dict)
    #: Extra keyword arguments for ``fit`` (a network's deadline, for one).
    fit_kwargs: dict[str, Any] = field(default_factory=dict)


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
    """The average of fold models; predicts from raw rows with the training columns."""

    model_id: str
    algo: str
    schema: Schema
    folds: list[FoldModel]
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Averaged class probabilities (n, n_classes), or values (n,) for regression."""
        self.check_columns(frame)
        outs = [predict_raw(f.estimator, f.preprocessor.transform(frame), self.schema.task) for f in self.folds]
        return np.mean(outs, axis=0)


def predict_raw(estimator: Any, x: np.ndarray, task: str) -> np.ndarray:
    """Probabilities for classification, values for regression, from any of our estimators."""
    if task == "regression":
        return np.asarray(estimator.predict(x), dtype="float64")
    proba = np.asarray(estimator.predict_proba(x), dtype="float64")
    return proba / proba.sum(axis=1, keepdims=True)  # float32 models sum to 1 only to ~1e-7


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn`` and return its result and the seconds it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def reference_candidates(task: str, seed: int, n_jobs: int = 2) -> list[Candidate]:
    """GLM, gradient boosting (GBM), random forest (DRF), extremely randomized trees (XRT): cheapest first."""
    from sklearn import ensemble, linear_model

    if task == "image":
        return _image_reference_candidates(seed)
    classify = task != "regression"
    # Defaults lean to regularisation: the data this package meets first are small and noisy.
    forest = {"n_estimators": 200, "min_samples_leaf": 5, "n_jobs": n_jobs, "random_state": seed}
    gbm = {"learning_rate": 0.03, "max_iter": 400, "max_leaf_nodes": 7, "l2_regularization": 1.0,
           "early_stopping": True, "validation_fraction": 0.15, "n_iter_no_change": 30, "random_state": seed}
    if classify:
        glm_params: dict[str, Any] = {"C": 0.1, "max_iter": 2000}
        specs = [("GLM", linear_model.LogisticRegression, glm_params),
                 ("GBM", ensemble.HistGradientBoostingClassifier, gbm),
                 ("DRF", ensemble.RandomForestClassifier, forest),
                 ("XRT", ensemble.ExtraTreesClassifier, forest)]
    else:
        specs = [("GLM", linear_model.RidgeCV, {"alphas": (0.01, 0.1, 1.0, 10.0, 100.0)}),
                 ("GBM", ensemble.HistGradientBoostingRegressor, gbm),
                 ("DRF", ensemble.RandomForestRegressor, forest),
                 ("XRT", ensemble.ExtraTreesRegressor, forest)]
    return [Candidate(f"{algo}_1", algo, lambda cls=cls, p=p: cls(**p), dict(p)) for algo, cls, p in specs]


def _image_reference_candidates(seed: int) -> list[Candidate]:
    """Classical models on flattened pixels: a GLM and an RBF support-vector machine."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import SVC

    from automl.images import Flatten

    glm = {"C": 0.1, "max_iter": 500}
    svm = {"C": 10.0, "gamma": "scale"}
    # Platt-scaled probabilities, the replacement scikit-learn recommends for SVC(probability=True).
    calibrated = {"method": "sigmoid", "ensemble": False}
    return [Candidate("GLM_1", "GLM", lambda: make_pipeline(Flatten(), LogisticRegression(**glm)), dict(glm)),
            Candidate("SVM_1", "SVM",
                      lambda: make_pipeline(Flatten(), CalibratedClassifierCV(SVC(**svm), **calibrated)),
                      {**svm, **calibrated})]
