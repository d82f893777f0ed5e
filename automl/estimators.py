"""The reference estimators, like H2O's families: LightGBM, the GLM (logistic or ridge), random forests and
extremely randomized trees. Every one trains with ``fit(x, y, deadline=None)`` (a ``time.monotonic()`` value),
stops by the deadline keeping what it has, and sets ``cut_short_`` when it did so.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from automl.bagging import predict_raw, take_rows
from automl.devices import free_cores

__all__ = ["GradientBoosting", "LinearModel", "Forest", "boosting_params", "train_boosted", "ROUNDS_PER_EPOCH",
           "FOREST_MAX_ROWS", "GLM_CS", "RIDGE_ALPHAS"]

#: Rows above which the logistic GLM trades tolerance for time (see :class:`LinearModel`).
GLM_LARGE_ROWS = 50_000
#: Rows each forest tree is grown on, at most (H2O's ``sample_rate``; AutoGluon subsamples too).
FOREST_MAX_ROWS = 20_000
#: Ridge penalties tried by generalised cross-validation.
RIDGE_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0)
RIDGE_BLOCK_ROWS = 65_536
#: L-BFGS iterations between deadline checks; a warm start continues from the last coefficients.
GLM_CHUNK = 100
#: Logistic GLMs on tables up to this many rows choose their inverse penalty among :data:`GLM_CS` by 3-fold CV
#: of the log loss (H2O's GLM searches its lambda too). ``bench/portfolio.py`` (the suite's splits, test log
#: loss): penguins chose C=100, 0.1225 -> 0.0332, titanic C=1, 0.4619 -> 0.4618, diabetes and churn kept 0.1.
#: Larger tables keep C=0.1: 16 fits would not be worth their time there.
GLM_PATH_ROWS = 10_000
GLM_CS = (0.01, 0.1, 1.0, 10.0, 100.0)
#: The kernels (columns, units) and biases of the last few GLMs fitted as GLM_1 is (with ``Cs``; logistic, keyed
#: ``("binary", *rows_key(x, y))``) or as a network's start (:func:`automl.bodies.start_glm`): a network that starts
#: as the GLM of the same rows (a fold's) takes GLM_1's fold model itself, and a search's trials on one matrix share
#: one fit.
GLM_FITS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
GLM_FITS_KEPT = 16  # GLM_1's folds, a network's folds, and the search's matrix, with room


def rows_key(x: np.ndarray, y: np.ndarray) -> tuple:
    """What tells one training matrix and its targets from another: shapes and sums (in one summation order)."""
    x = np.ascontiguousarray(x, dtype="float32")
    return x.shape, float(np.sum(x, dtype="float64")), float(np.sum(y, dtype="float64"))


def remember_glm(key: tuple, model: Any, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep ``model``'s kernel (columns, units) and bias in :data:`GLM_FITS` under ``key`` (its last
    :data:`GLM_FITS_KEPT`), and return them."""
    while len(GLM_FITS) >= GLM_FITS_KEPT:
        GLM_FITS.pop(next(iter(GLM_FITS)))
    GLM_FITS[key] = (np.asarray(model.coef_, dtype="float32").reshape(-1, columns).T,
                     np.asarray(model.intercept_, dtype="float32").reshape(-1))
    return GLM_FITS[key]


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


class _Reference(BaseEstimator):
    """What the reference estimators share: ``predict`` from probabilities or values."""

    task: str

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _values(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Values for regression, class indices for classification."""
        return self._values(x) if self.task == "regression" else self.predict_proba(x).argmax(axis=1)

    def for_refit(self, row_ratio: float) -> _Reference:
        """An unfitted copy to refit on ``row_ratio`` times the rows this one was fitted on."""
        from sklearn.base import clone

        return clone(self)


class GradientBoosting(_Reference):
    """LightGBM, early-stopped on its own validation slice of the training rows (stratified when
    classifying), stopped at the deadline with the best round so far.

    ``log_target`` (regression on a target ≥ 0): trains on ``log1p(y)`` and predicts ``expm1`` of that,
    for skewed positive targets such as prices, where errors grow with the value.
    """

    def __init__(self, task: str = "binary", params: dict[str, Any] | None = None, max_rounds: int = 10_000,
                 patience: int = 50, validation_fraction: float = 0.1, max_validation_rows: int = 20_000,
                 seed: int = 0, n_jobs: int = 2, log_target: bool = False):
        self.task = task
        self.log_target = log_target
        self.params = params
        self.max_rounds = max_rounds
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.max_validation_rows = max_validation_rows
        self.seed = seed
        self.n_jobs = n_jobs

    def fit(self, x: np.ndarray, y: np.ndarray, deadline: float | None = None,
            validation: tuple[Any, np.ndarray] | None = None) -> GradientBoosting:
        """Train until early stopping; with ``validation_fraction=0``, exactly ``max_rounds`` rounds on all rows.

        ``validation`` (rows, target): early-stop on these instead of a slice of ``x`` (a search trial's rows).
        """
        import lightgbm as lgb

        if self.log_target:
            if self.task != "regression" or float(np.min(y)) < 0:
                raise ValueError(f"log_target needs a regression target >= 0, but got task={self.task!r}, "
                                 f"min {float(np.min(y))}")
            y = np.log1p(y)
        objective = {"binary": "binary", "multiclass": "multiclass"}.get(self.task, "regression")
        # The thread count follows the load average (devices.free_cores): deterministic histograms make the model
        # the same whatever it is (1 vs 2 threads on diamonds: 1.8e-12 apart without, identical with; no slower
        # on diamonds, caravan or the 628-column help_baseline).
        params = {"objective": objective, "num_class": int(y.max()) + 1 if objective == "multiclass" else 1,
                  "seed": self.seed, "num_threads": self.n_jobs, "deterministic": True, "force_row_wise": True,
                  "verbosity": -1, **(self.params or {})}
        watch = _Watch(self.patience, deadline)
        if validation is not None and self.log_target:
            validation = (validation[0], np.log1p(validation[1]))
        elif validation is None and self.validation_fraction > 0:
            train, val = _validation_rows(y, self.task, self.validation_fraction, self.max_validation_rows,
                                          self.seed)
            # ``x`` is a DataFrame from the "trees" preprocessor: its categorical columns are split on natively.
            x, y, validation = take_rows(x, train), y[train], (take_rows(x, val), y[val])
        names, categorical = "auto", "auto"
        if isinstance(x, pd.DataFrame):  # by position: the booster's names are not the frame's
            names = _lightgbm_names(x.columns)
            categorical = [i for i, dtype in enumerate(x.dtypes) if isinstance(dtype, pd.CategoricalDtype)]
        data = lgb.Dataset(x, y, feature_name=names, categorical_feature=categorical)
        valid_sets = [] if validation is None else [lgb.Dataset(*validation, reference=data, feature_name=names,
                                                                categorical_feature=categorical)]
        self.booster_ = lgb.train(params, data, self.max_rounds, valid_sets=valid_sets, callbacks=[watch])
        self.best_iteration_ = watch.best_iteration + 1
        self.cut_short_ = watch.cut_short
        return self

    def for_refit(self, row_ratio: float) -> GradientBoosting:
        """The early-stopped round count scaled by the rows (more rows support more rounds), on all rows."""
        refit = super().for_refit(row_ratio)
        refit.set_params(max_rounds=max(1, round(self.best_iteration_ * row_ratio)), validation_fraction=0.0)
        return refit

    def _raw(self, x: np.ndarray) -> np.ndarray:
        # Columns are read by position: the booster's own names need not be the frame's.
        return np.asarray(self.booster_.predict(x, num_iteration=self.best_iteration_))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = self._raw(x)
        return np.column_stack([1 - p, p]) if p.ndim == 1 else p

    def _values(self, x: np.ndarray) -> np.ndarray:
        return np.expm1(self._raw(x)) if self.log_target else self._raw(x)


#: A boosted search trial's resource in the engines' unit: rounds per "epoch" (Hyperband's budget, the refit's
#: count), so ``MAX_EPOCHS`` allows 2,000 rounds.
ROUNDS_PER_EPOCH = 20


def boosting_params(point: dict[str, Any]) -> tuple[dict[str, Any], int, bool]:
    """LightGBM's parameters, the early-stopping patience and whether to train on ``log1p`` of the target, for a
    point of ``spaces.GBM_SPACE`` (with ``spaces.GBM_TARGET`` on a skewed target)."""
    params = dict(point)
    patience = int(params.pop("patience", 50))
    target = params.pop("target", "raw")
    if target == "tweedie":
        params["objective"] = "tweedie"
    if params.get("bagging_fraction", 1.0) < 1.0:
        params["bagging_freq"] = 1  # LightGBM ignores bagging_fraction without it
    return params, patience, target == "log"


def train_boosted(point: dict[str, Any], data: Any, metric: Any, seed: int, deadline: float | None,
                  max_epochs: int) -> tuple[float, int]:
    """One GBM search trial (``data``: an ``engines.SearchData`` of the "trees" preprocessor): early-stopped on
    the search's validation rows; return (validation metric, best epoch = best round / ROUNDS_PER_EPOCH)."""
    params, patience, log_target = boosting_params(point)
    model = GradientBoosting(data.task, params=params, max_rounds=max_epochs * ROUNDS_PER_EPOCH, patience=patience,
                             seed=seed, n_jobs=free_cores(), log_target=log_target)
    model.fit(data.x_train, data.y_train, deadline=deadline, validation=(data.x_val, data.y_val))
    return (metric.fn(data.y_val, predict_raw(model, data.x_val, data.task)),
            math.ceil(model.best_iteration_ / ROUNDS_PER_EPOCH))


class _Watch:
    """LightGBM callback: stop ``patience`` rounds after the best validation loss, or at the deadline."""

    order = 30  # after LightGBM's own callbacks

    def __init__(self, patience: int, deadline: float | None):
        self.patience, self.deadline = patience, deadline
        self.best_loss, self.best_iteration, self.best_score = float("inf"), 0, []
        self.cut_short = False

    def __call__(self, env: Any) -> None:
        from lightgbm.callback import EarlyStopException

        # The objective's own loss on the validation slice; without one (a refit) every round is the best.
        loss = env.evaluation_result_list[0][2] if env.evaluation_result_list else -env.iteration
        if loss < self.best_loss:
            self.best_loss, self.best_iteration, self.best_score = loss, env.iteration, env.evaluation_result_list
        last = env.iteration + 1 >= env.end_iteration
        if not last and _past(self.deadline):
            self.cut_short = True
            raise EarlyStopException(self.best_iteration, self.best_score)
        if env.iteration - self.best_iteration >= self.patience:
            raise EarlyStopException(self.best_iteration, self.best_score)


#: What LightGBM refuses in a feature name (JSON's special characters), and whitespace, which it replaces with "_"
#: itself, so that "a b" beside "a_b" would be a duplicate feature.
_LIGHTGBM_UNSAFE = re.compile(r'[,:"\[\]{}\s]')


def _lightgbm_names(columns: Sequence[Any]) -> list[str]:
    """Feature names LightGBM accepts, unique and close to ``columns``: each character it refuses becomes "_",
    and a name taken already gets a suffix "_2", "_3", …. The user's names stay everywhere else (schema,
    importance, outputs): these are given to the booster's datasets only (no renamed copy of the table)."""
    names: dict[str, None] = {}
    for column in columns:
        base = _LIGHTGBM_UNSAFE.sub("_", str(column)) or "_"
        name, number = base, 1
        while name in names:
            number += 1
            name = f"{base}_{number}"
        names[name] = None
    return list(names)


def _validation_rows(y: np.ndarray, task: str, fraction: float, max_rows: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and early-stopping rows: ``fraction`` of the rows, at most ``max_rows``."""
    from sklearn.model_selection import train_test_split

    n_val = int(min(max(fraction * len(y), 1), max_rows))
    stratify = None if task == "regression" else y
    if stratify is not None:
        n_val = max(n_val, int(y.max()) + 1)  # a stratified split needs a row of every class
    return train_test_split(np.arange(len(y)), test_size=n_val, random_state=seed, stratify=stratify)


class LinearModel(_Reference):
    """H2O's GLM: L2-penalised logistic regression (``C``; with ``Cs``, on up to :data:`GLM_PATH_ROWS` rows, the
    one of them with the best 3-fold CV log loss), or ridge regression with the penalty chosen by generalised
    cross-validation.

    Logistic: L-BFGS in warm-started chunks of :data:`GLM_CHUNK` iterations, checking the deadline
    between them; above ``large_rows`` rows a looser tolerance and fewer iterations (on the 160k ×
    160 synthetic matrix lbfgs took 2.2 s to AUC 0.663 where saga took 11.2 s and SGD reached
    0.631). Ridge: one pass over the rows for the Gram matrix, then every penalty in closed form
    (scikit-learn's RidgeCV keeps an n × p SVD factor: 2.4 GB more at 1M × 300).
    """

    def __init__(self, task: str = "binary", C: float = 0.1, alphas: tuple[float, ...] = RIDGE_ALPHAS,
                 large_rows: int = GLM_LARGE_ROWS, seed: int = 0, Cs: Sequence[float] | None = None):
        self.task = task
        self.C = C
        self.Cs = Cs
        self.alphas = alphas
        self.large_rows = large_rows
        self.seed = seed

    def fit(self, x: np.ndarray, y: np.ndarray, deadline: float | None = None) -> LinearModel:
        self.cut_short_ = False
        if self.task == "regression":
            self.coef_, self.intercept_, self.alpha_ = _ridge_gcv(x, y, self.alphas)
            return self
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        self.large_ = len(x) > self.large_rows
        tol, max_iter = (1e-3, 200) if self.large_ else (1e-4, 2000)
        if self.Cs and len(x) <= GLM_PATH_ROWS and np.bincount(np.asarray(y, dtype=int)).min() >= 3:
            from sklearn.linear_model import LogisticRegressionCV

            self.model_ = LogisticRegressionCV(Cs=list(self.Cs), cv=3, scoring="neg_log_loss", tol=tol,
                                               max_iter=max_iter, random_state=self.seed)
            with warnings.catch_warnings():
                # Unconverged folds at the weakest penalty, and scikit-learn 1.9's notices of attributes to come.
                warnings.simplefilter("ignore", ConvergenceWarning)
                warnings.simplefilter("ignore", FutureWarning)
                self.model_.fit(x, y)
            remember_glm(("binary", *rows_key(x, y)), self.model_, x.shape[1])
            return self
        self.model_ = LogisticRegression(C=self.C, tol=tol, max_iter=GLM_CHUNK, warm_start=True,
                                         random_state=self.seed)
        done = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a chunk ending unconverged is expected
            while True:
                self.model_.fit(x, y)
                done += GLM_CHUNK
                if int(self.model_.n_iter_.max()) < GLM_CHUNK or done >= max_iter:
                    break
                if _past(deadline):
                    self.cut_short_ = True
                    break
        if self.Cs and not self.cut_short_:  # GLM_1 above GLM_PATH_ROWS
            remember_glm(("binary", *rows_key(x, y)), self.model_, x.shape[1])
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(x)

    def _values(self, x: np.ndarray) -> np.ndarray:
        return x @ self.coef_ + self.intercept_


def _ridge_gcv(x: np.ndarray, y: np.ndarray, alphas: tuple[float, ...]) -> tuple[np.ndarray, float, float]:
    """Ridge coefficients, intercept and penalty with the lowest GCV error (Golub, Heath & Wahba 1979).

    With the centred Gram matrix ``G = V diag(λ) Vᵀ``, ``b = Vᵀ Xcᵀ yc`` and ``s = 1/(λ + α)``, each
    penalty costs O(p): ``RSS = |yc|² − Σ b² s (2 − λ s)`` and degrees of freedom ``1 + Σ λ s``.
    """
    n, p = x.shape
    gram, xty, total_x = np.zeros((p, p)), np.zeros(p), np.zeros(p)
    for start in range(0, n, RIDGE_BLOCK_ROWS):  # float64 sums without a float64 copy of a float32 matrix
        block = np.asarray(x[start:start + RIDGE_BLOCK_ROWS], dtype="float64")
        gram += block.T @ block
        xty += block.T @ y[start:start + RIDGE_BLOCK_ROWS]
        total_x += block.sum(axis=0)
    mean_x, mean_y = total_x / n, float(y.mean())
    eigval, eigvec = np.linalg.eigh(gram - n * np.outer(mean_x, mean_x))  # centred without a centred copy
    eigval = np.clip(eigval, 0.0, None)
    b = eigvec.T @ (xty - n * mean_x * mean_y)
    total = float(((y - mean_y) ** 2).sum())
    best = (np.inf, alphas[0])
    for alpha in alphas:
        shrink = 1.0 / (eigval + alpha)
        rss = total - float(np.sum(b ** 2 * shrink * (2.0 - eigval * shrink)))
        dof = float(np.sum(eigval * shrink)) + 1.0  # + the intercept
        gcv = rss / max(n - dof, 1.0) ** 2
        best = min(best, (gcv, alpha))
    alpha = best[1]
    coef = eigvec @ (b / (eigval + alpha))
    return coef, mean_y - float(mean_x @ coef), alpha


class Forest(_Reference):
    """Random forest (DRF) or extremely randomized trees (XRT), grown in batches until ``n_estimators``
    or the deadline; each tree sees at most ``max_rows`` rows, so a tree's cost stops growing with the data."""

    def __init__(self, task: str = "binary", kind: str = "DRF", n_estimators: int = 200,
                 max_rows: int = FOREST_MAX_ROWS, min_samples_leaf: int = 5, seed: int = 0, n_jobs: int = 2):
        self.task = task
        self.kind = kind
        self.n_estimators = n_estimators
        self.max_rows = max_rows
        self.min_samples_leaf = min_samples_leaf
        self.seed = seed
        self.n_jobs = n_jobs

    def fit(self, x: np.ndarray, y: np.ndarray, deadline: float | None = None) -> Forest:
        from sklearn import ensemble

        classify = self.task != "regression"
        cls = {("DRF", True): ensemble.RandomForestClassifier, ("DRF", False): ensemble.RandomForestRegressor,
               ("XRT", True): ensemble.ExtraTreesClassifier, ("XRT", False): ensemble.ExtraTreesRegressor}
        subsample = len(x) > self.max_rows
        batch = 4 * max(self.n_jobs, 1)
        # H2O's mtries: sqrt(p) to classify, p/3 for regression (scikit-learn's default there is all p).
        self.model_ = cls[self.kind, classify](
            n_estimators=min(batch, self.n_estimators), warm_start=True, min_samples_leaf=self.min_samples_leaf,
            max_features="sqrt" if classify else 1 / 3, bootstrap=self.kind == "DRF" or subsample,
            max_samples=self.max_rows if subsample else None, n_jobs=self.n_jobs, random_state=self.seed)
        x = np.asarray(x, dtype=np.float32)  # trees split float32: convert once, not once per batch
        self.cut_short_ = False
        while True:
            self.model_.fit(x, y)
            grown = self.model_.n_estimators
            if grown >= self.n_estimators:
                break
            if _past(deadline):
                self.cut_short_ = True
                break
            self.model_.set_params(n_estimators=min(grown + batch, self.n_estimators))
        # Predictions in one thread: scikit-learn's threads add the trees' outputs in the order they finish, so
        # two runs of reproducible mode gave XRT_1 out-of-fold predictions apart in the last bits (and a stack
        # over it weights apart in the sixth decimal). One thread adds them in tree order.
        self.model_.set_params(n_jobs=1)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(x)

    def _values(self, x: np.ndarray) -> np.ndarray:
        return self.model_.predict(x)
