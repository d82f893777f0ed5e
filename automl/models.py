"""Model families: scikit-learn reference models like H2O's, and the bagged model every row exports.

Every leaderboard row is a :class:`BaggedModel`: the k fold models of its
cross-validation, each with its own fitted preprocessing, averaged at predict time
(AutoGluon's bagging). Its out-of-fold score is therefore an honest estimate for
exactly what is exported, and no extra full-data refit eats the time budget.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from automl.devices import free_cores
from automl.errors import InputError
from automl.preprocess import Schema

__all__ = ["Model", "Candidate", "Cost", "FoldModel", "BaggedModel", "GradientBoosting", "LinearModel", "Forest",
           "skewed_positive", "LOG_TARGET_SKEW", "DENSE_MAX_ROWS", "reference_candidates"]


@dataclass
class Candidate:
    """A model to cross-validate: ``make()`` returns a fresh unfitted estimator."""

    model_id: str
    algo: str
    make: Callable[[], Any]
    params: dict[str, Any] = field(default_factory=dict)
    #: Extra keyword arguments for ``fit`` (a network's deadline, for one).
    fit_kwargs: dict[str, Any] = field(default_factory=dict)
    #: How long one fit takes here, when known (see :class:`Cost`).
    cost: Cost | None = None
    #: The preprocessor's kind (see :func:`automl.preprocess.make_preprocessor`).
    features: str = "dense"
    #: Training rows per fit, at most: a larger fold trains on a seeded (stratified) sample of this many.
    max_rows: int | None = None

    def estimate_seconds(self, n_rows: int, n_features: int) -> float:
        """Seconds one fit on an ``n_rows`` × ``n_features`` matrix should take here; 0.0 when unknown."""
        return 0.0 if self.cost is None else self.cost.seconds(n_rows, n_features)


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
    """Probabilities for classification, values for regression, from any of our estimators."""
    if task == "regression":
        return np.asarray(estimator.predict(x), dtype="float64")
    proba = np.asarray(estimator.predict_proba(x), dtype="float64")
    return proba / proba.sum(axis=1, keepdims=True)  # float32 models sum to 1 only to ~1e-7


# ---------------------------------------------------------------------------------------------
# Reference models. Every one trains with ``fit(x, y, deadline=None)`` (a ``time.monotonic()``
# value), stops by the deadline keeping what it has, and sets ``cut_short_`` when it did so.


@dataclass(frozen=True)
class Cost:
    """Seconds one fit takes ≈ ``intercept + per_cell × min(rows, max_rows) × features``."""

    intercept: float
    per_cell: float
    #: Rows beyond which the cost stops growing (a forest's per-tree subsample).
    max_rows: int | None = None

    def seconds(self, n_rows: int, n_features: int) -> float:
        rows = n_rows if self.max_rows is None else min(n_rows, self.max_rows)
        return self.intercept + self.per_cell * rows * n_features


#: A regression target ≥ 0 with at least this skewness also gets :data:`SKEWED_PORTFOLIO` (GBM_4, GBM_5).
LOG_TARGET_SKEW = 1.0
#: Rows above which the logistic GLM trades tolerance for time (see :class:`LinearModel`).
GLM_LARGE_ROWS = 50_000
#: Rows the GLM and the forests train on, at most (a sample of the fold's rows): their dense one-hot matrix is
#: the largest copy of the table (10M × 280 float32 ≈ 11 GB), and beyond this many rows they gain next to
#: nothing (the GLM's coefficients are settled; a forest's trees see FOREST_MAX_ROWS rows each anyway).
DENSE_MAX_ROWS = 500_000
#: Rows each forest tree is grown on, at most (H2O's ``sample_rate``; AutoGluon subsamples too).
FOREST_MAX_ROWS = 20_000
#: Trees per forest on tables up to :data:`FOREST_MAX_ROWS` rows, and beyond (H2O's default is 50).
FOREST_TREES = (200, 50)
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

#: A zero-shot LightGBM portfolio, strongest across tables first: AutoGluon's ``GBMXT`` (its first
#: GBM: extremely randomized splits) and its plain default (AutoGluon ``hyperparameter_configs`` /
#: TabRepo 2023 portfolio), then the default with row and column bagging and an L2 penalty.
#: AutoGluon's ``GBMLarge`` (128 leaves, 3 rows a leaf) was left out: on diabetes its CV AUC was
#: 0.767 against 0.839, and at 50k synthetic rows it cost 3–40× GBM_1 for no better AUC.
#: Rounds end by early stopping.
GBM_PORTFOLIO: tuple[dict[str, Any], ...] = (
    {"learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 20, "extra_trees": True},
    # Larger leaves, smoothed category statistics, bagging: the member most unlike GBM_1 (for stacking).
    {"learning_rate": 0.05, "num_leaves": 63, "min_child_samples": 50, "feature_fraction": 0.8,
     "bagging_fraction": 0.8, "bagging_freq": 1, "cat_smooth": 50, "cat_l2": 20},
    {"learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 20, "feature_fraction": 0.8,
     "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0},
)

#: Two multiplicative models for a skewed target ≥ 0 (prices, counts, durations): larger trees on ``log1p(y)``,
#: and a Tweedie objective (LightGBM's log link, zeros allowed), each scored on the original scale.
#: ``bench/portfolio.py`` (diamonds, the suite's split, test RMSE): 534.05 and 528.02 against GBM_1's 544.55;
#: the mean of GBM_1..3 and these two 526.61, with GBM_1's configuration on the log instead 533.87 (550.51
#: alone, 4,209 rounds of extremely randomized splits, 31.1 s).
#: Points in the GBM search's vocabulary (``target`` as in ``spaces.GBM_TARGET``, read by :func:`boosting_params`).
SKEWED_PORTFOLIO: tuple[dict[str, Any], ...] = (
    {"learning_rate": 0.03, "num_leaves": 127, "min_child_samples": 5, "feature_fraction": 0.8, "target": "log"},
    {"learning_rate": 0.05, "num_leaves": 63, "target": "tweedie"},
)

#: First guesses from ``bench/reference_models.py`` on this project's 2-core machine at load 3
#: (GBM_1: 1.1 s at 8k × 160, 4.8 s at 40k × 160; lbfgs GLM: 2.2 s at 160k × 160; DRF, 200 trees:
#: 4.9 s at 8k × 160). Forests are costed at their small-table tree count, an upper bound.
COSTS: dict[str, Cost] = {
    "GBM": Cost(1.0, 1e-6),
    "GLM": Cost(0.2, 1e-7, DENSE_MAX_ROWS),
    "DRF": Cost(0.5, 3e-6, FOREST_MAX_ROWS),
    "XRT": Cost(0.5, 3e-6, FOREST_MAX_ROWS),
}


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


def take_rows(x: pd.DataFrame | np.ndarray, rows: np.ndarray) -> pd.DataFrame | np.ndarray:
    """Rows of a table (by position) or of an array."""
    return x.iloc[rows] if isinstance(x, pd.DataFrame) else x[rows]


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


def reference_candidates(task: str, seed: int, n_rows: int | None = None, n_features: int | None = None,
                         n_jobs: int = 2, skewed_positive: bool = False) -> list[Candidate]:
    """LightGBM (GBM_1..3), GLM, random forest (DRF), extremely randomized trees (XRT).

    Gradient boosting, the strongest family, comes first; the cheap GLM and the forests come
    between the boosted models because they differ most from them (what stacking gains from)
    and a tight budget then still ranks several families. ``n_rows`` (training rows, when known)
    bounds the forests' tree count on large tables; ``n_features`` is accepted for the callers'
    symmetry with :meth:`Candidate.estimate_seconds`. ``skewed_positive`` (a regression target ≥ 0
    skewed to the right, see :func:`skewed_positive`) adds :data:`SKEWED_PORTFOLIO` at the end (GBM_4 on the
    log of the target, GBM_5 Tweedie): the board compares the scales on the protocol like any other models.
    """
    if task == "image":
        return _image_reference_candidates(seed)
    common: dict[str, Any] = {"task": task, "seed": seed}
    gbm = [Candidate(f"GBM_{i}", "GBM", partial(GradientBoosting, params=dict(p), n_jobs=n_jobs, **common),
                     dict(p), cost=COSTS["GBM"], features="trees") for i, p in enumerate(GBM_PORTFOLIO, 1)]
    glm: dict[str, Any] = {"alphas": RIDGE_ALPHAS} if task == "regression" else {"C": 0.1, "Cs": list(GLM_CS)}
    small = n_rows is None or n_rows <= FOREST_MAX_ROWS
    forest: dict[str, Any] = {"n_estimators": FOREST_TREES[0] if small else FOREST_TREES[1], "min_samples_leaf": 5,
                              "max_rows": FOREST_MAX_ROWS}
    drf, xrt = (Candidate(f"{algo}_1", algo, partial(Forest, kind=algo, n_jobs=n_jobs, **forest, **common),
                          dict(forest), cost=COSTS[algo], max_rows=DENSE_MAX_ROWS) for algo in ("DRF", "XRT"))
    if task == "regression" and skewed_positive:
        for i, point in enumerate(SKEWED_PORTFOLIO, len(gbm) + 1):
            params, patience, log_target = boosting_params(point)
            gbm.append(Candidate(f"GBM_{i}", "GBM", partial(GradientBoosting, params=params, patience=patience,
                                                           n_jobs=n_jobs, log_target=log_target, **common),
                                 dict(point), cost=COSTS["GBM"], features="trees"))
    linear = Candidate("GLM_1", "GLM", partial(LinearModel, **glm, **common), dict(glm), cost=COSTS["GLM"],
                       max_rows=DENSE_MAX_ROWS)
    # The skewed-target GBMs come last: one configuration there on the log ran 3x GBM_1's rounds on diamonds and,
    # placed third, left no time for GBM_2, DRF, GBM_3 and XRT, a worse board.
    return [gbm[0], linear, gbm[1], drf, gbm[2], xrt, *gbm[3:]]


def skewed_positive(y: np.ndarray) -> bool:
    """A target ≥ 0 whose skewness is at least :data:`LOG_TARGET_SKEW` (prices, counts, durations)."""
    from scipy.stats import skew

    y = np.asarray(y, dtype="float64")
    return len(y) > 2 and float(y.min()) >= 0 and float(skew(y)) >= LOG_TARGET_SKEW


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
