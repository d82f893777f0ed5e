"""Stacked ensembles as in H2O: a non-negative, regularised linear metalearner on base predictions.

``StackedEnsemble_AllModels`` stacks every base model; ``StackedEnsemble_BestOfFamily`` the best of
each algorithm family; ``StackedEnsemble_Greedy`` is Caruana et al.'s (2004) greedy selection with
replacement (AutoGluon's WeightedEnsemble): an average of the bases chosen round by round for the
leaderboard metric, so it can always copy its best member. The metalearner learns from the bases'
out-of-fold predictions (the level-one data), and its own score comes from cross-validating it on
that level-one data (with the leaderboard's folds under CV; with folds of the holdout's rows under a
holdout), so every ensemble row is scored on rows its metalearner did not see, like every other row
(H2O's protocol). A greedy selection that scores below its best member that way becomes that member
(``"fallback"`` in its hyperparameters): it never ranks below the model it may copy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import minimize

from automl.bagging import Model
from automl.config import ENSEMBLE_ALGO
from automl.evaluation import Evaluated
from automl.metrics import Metric, get, score_all
from automl.preprocess import Schema

if TYPE_CHECKING:
    from automl.schedule import Pace
    from automl.state import RunState

__all__ = ["Metalearner", "GreedySelection", "StackedEnsemble", "FeatureStack", "LevelTwoEnsemble", "stack",
           "build_ensembles", "stack_level_two", "level_two_estimate", "ENSEMBLE_ALGO", "LEVEL_TWO_BASES"]

_EPS = 1e-7
#: Rounds of greedy selection: weights are multiples of 1/GREEDY_ROUNDS (AutoGluon's default is 25).
GREEDY_ROUNDS = 25
#: The level-2 model reads the out-of-fold predictions of this many of the best level-1 base models.
LEVEL_TWO_BASES = 6
#: Greedy selection is fitted on at most this many rows (a random sample): its cost is rounds x bases metric
#: evaluations per fit, and weights in steps of 1/25 do not need more rows to be chosen well (at 50,000 the
#: stage took 4.9 s of a 300 s run on the 200k table, with 10 s left for it and the outputs).
GREEDY_MAX_ROWS = 10_000


@dataclass
class Metalearner:
    """Non-negative weights on base predictions with an L2 penalty ``alpha``.

    Binary: logistic regression on the bases' logits. Multiclass: a weighted average
    of the bases' probability vectors. Regression: linear regression on predictions.
    Non-negative weights keep the blend interpretable and stop it from betting
    against a model, as H2O's default GLM metalearner does.
    """

    task: str
    alpha: float = 1e-3
    weights_: np.ndarray = field(default_factory=lambda: np.zeros(0))
    intercept_: float = 0.0

    def _features(self, preds: list[np.ndarray]) -> np.ndarray:
        if self.task == "binary":
            p = np.clip(np.column_stack([q[:, 1] for q in preds]), _EPS, 1 - _EPS)
            return np.log(p / (1 - p))
        if self.task == "regression":
            return np.column_stack(preds)
        return np.stack(preds, axis=1)  # (n, m, k)

    def fit(self, preds: list[np.ndarray], y: np.ndarray) -> Metalearner:
        z = self._features(preds)
        m = len(preds)
        if self.task == "regression":
            from sklearn.linear_model import Ridge

            fit = Ridge(alpha=self.alpha * len(y), positive=True).fit(z, y)
            self.weights_, self.intercept_ = fit.coef_, float(fit.intercept_)
            return self
        start = np.full(m + 1, 1.0 / m)
        start[-1] = 0.0
        bounds = [(0.0, None)] * m + [(None, None)]
        # The gradient is given: L-BFGS-B may step a hair outside a bound, where scipy's finite differences
        # refuse the point ("`x0` violates bound constraints": mpls_stops' StackedEnsemble_AllModels at 120 s).
        result = minimize(self._objective, start, args=(z, y), method="L-BFGS-B", bounds=bounds, jac=True)
        self.weights_, self.intercept_ = result.x[:-1], float(result.x[-1])
        if self.task == "multiclass":  # a blend of probabilities: only the weights' shares matter
            total = self.weights_.sum()
            self.weights_ = self.weights_ / total if total > 0 else np.full(m, 1.0 / m)
        return self

    def _objective(self, theta: np.ndarray, z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """The blend's penalised log loss at ``theta`` and its gradient (rows whose probability is clipped
        contribute none to it), from one blend of the rows."""
        w, b = theta[:-1], theta[-1]
        p = self._combine(z, w, b)
        rows = np.arange(len(y))
        p_true = p[:, 1] * y + p[:, 0] * (1 - y) if self.task == "binary" else p[rows, y]
        kept = (p_true > _EPS) / len(y)
        nll = float(-np.mean(np.log(np.clip(p_true, _EPS, 1.0))))
        if self.task == "binary":  # d(-log p_true)/d(logit) = p1 - y
            residual = (p[:, 1] - y) * kept
            return nll + self.alpha * float(np.sum(w**2)), np.append(z.T @ residual + 2 * self.alpha * w,
                                                                     residual.sum())
        # A multiclass blend is normalised: the penalty is on the shares too, or it would shrink every weight
        # towards 0 (to ~1e-6) without changing the blend.
        total = float(w.sum())
        shares = w / max(total, _EPS)
        loss = nll + self.alpha * float(np.sum(shares**2))
        if total <= 0:
            return loss, np.zeros_like(theta)
        # In the shares, then through shares = w / total.
        by_share = -(z[rows, :, y] / np.maximum(p_true, _EPS)[:, None] * kept[:, None]).sum(axis=0)
        by_share += 2 * self.alpha * shares
        return loss, np.append((by_share - by_share @ shares) / total, 0.0)

    def _combine(self, z: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
        if self.task == "binary":
            p1 = 1.0 / (1.0 + np.exp(-(z @ w + b)))
            return np.column_stack([1.0 - p1, p1])
        total = w.sum()
        w = w / total if total > 0 else np.full_like(w, 1.0 / len(w))
        return np.einsum("nmk,m->nk", z, w)

    def predict(self, preds: list[np.ndarray]) -> np.ndarray:
        z = self._features(preds)
        if self.task == "regression":
            return z @ self.weights_ + self.intercept_
        return self._combine(z, self.weights_, self.intercept_)


def selection_score(metric_name: str, task: str, y: np.ndarray, pred: np.ndarray) -> tuple[float, ...]:
    """What greedy selection maximises: the metric (larger is better), then, for a classification metric
    other than log loss, minus the log loss. A count of errors (the multiclass mean per-class error on a few
    hundred rows, accuracy) ties many blends: the better probabilities among them win, not the first listed."""
    metric = get(metric_name, task)
    score = metric.sign() * metric.fn(y, pred)
    if task == "regression" or metric_name == "logloss":
        return (score,)
    return score, -get("logloss", task).fn(y, pred)


@dataclass
class GreedySelection:
    """Weights from greedy ensemble selection with replacement (Caruana et al. 2004) for the metric named.

    Each round adds the base whose inclusion gives the best score of the running average of
    the chosen predictions; the first round picks the best single base, so on the rows it
    was fitted on the blend never scores below its best member.
    """

    task: str
    metric: str  # a name, not the Metric: the fitted selection is pickled with the ensemble
    rounds: int = GREEDY_ROUNDS
    weights_: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def fit(self, preds: list[np.ndarray], y: np.ndarray) -> GreedySelection:
        if len(y) > GREEDY_MAX_ROWS:
            rows = np.sort(np.random.default_rng(0).choice(len(y), GREEDY_MAX_ROWS, replace=False))
            preds, y = [p[rows] for p in preds], y[rows]
        counts = np.zeros(len(preds))
        total = np.zeros_like(preds[0], dtype="float64")
        best_score, best_counts = (-np.inf,), counts.copy()
        for step in range(1, self.rounds + 1):
            scores = [selection_score(self.metric, self.task, y, (total + p) / step) for p in preds]
            pick = max(range(len(preds)), key=scores.__getitem__)  # the first of equals, as argmax
            counts[pick] += 1
            total += preds[pick]
            if scores[pick] > best_score:  # later rounds may only add noise: keep the best blend seen
                best_score, best_counts = scores[pick], counts.copy()
        self.weights_ = best_counts / best_counts.sum()
        return self

    def predict(self, preds: list[np.ndarray]) -> np.ndarray:
        return sum(w * p for w, p in zip(self.weights_, preds, strict=True) if w > 0)


@dataclass
class StackedEnsemble(Model):
    """Base models (each a whole bag) combined by a :class:`Metalearner`."""

    model_id: str
    algo: str
    schema: Schema
    bases: list[Any]
    metalearner: Metalearner | GreedySelection
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def predict_proba(self, frame: Any) -> np.ndarray:
        self.check_columns(frame)
        return self.combine(frame, [b.predict_proba(frame) for b in self.bases])

    def scored_proba(self, frame: Any) -> np.ndarray:
        self.check_columns(frame)
        return self.combine(frame, [b.scored_proba(frame) for b in self.bases])

    def combine(self, frame: Any, predictions: list[np.ndarray]) -> np.ndarray:
        """The ensemble's prediction of ``frame``'s rows from its bases' ``predictions`` of them (in order)."""
        return self.metalearner.predict(predictions)


def stack(model_id: str, bases: list[Evaluated], y: np.ndarray, schema: Schema,
          folds: list[tuple[np.ndarray, np.ndarray]], metric: Metric | None = None) -> Evaluated:
    """Fit the metalearner (greedy selection for ``metric`` if given) on all level-one rows; score it by
    cross-validating it on the same folds."""
    start = time.perf_counter()

    def metalearner() -> Metalearner | GreedySelection:
        return Metalearner(schema.task) if metric is None else GreedySelection(schema.task, metric.name)

    level_one = [b.oof for b in bases]
    oof = np.zeros_like(level_one[0], dtype="float64")
    for train, test in folds:
        meta = metalearner().fit([z[train] for z in level_one], y[train])
        oof[test] = meta.predict([z[test] for z in level_one])
    meta = metalearner().fit(level_one, y)
    ids = [b.model.model_id for b in bases]
    params = {"base_models": ids, "metalearner": "non-negative GLM" if metric is None else
              f"greedy selection for {metric.name}, {GREEDY_ROUNDS} rounds"}
    if metric is not None:
        scores = [selection_score(metric.name, schema.task, y, z) for z in level_one]
        best = max(range(len(bases)), key=scores.__getitem__)
        if selection_score(metric.name, schema.task, y, oof) < scores[best]:
            # Scored nested, the blend lost to its best member (noise, or a discrete metric such as the
            # multiclass mean per-class error on a few hundred rows): the selection may always copy that member,
            # so it does, and its row is that member's, rows the member was scored on out of fold.
            params["fallback"] = f"{ids[best]} alone: the blend scored {metric.fn(y, oof):.6g} nested"
            meta.weights_ = np.eye(len(bases))[best]
            oof = np.asarray(level_one[best], dtype="float64")
    params["weights"] = {i: round(float(w), 6) for i, w in zip(ids, meta.weights_, strict=True)}
    model = StackedEnsemble(model_id, ENSEMBLE_ALGO, schema, [b.model for b in bases], meta, params,
                            score_all(schema.task, y, oof))
    meta_ms = 1000 * (time.perf_counter() - start)
    return Evaluated(model, oof, sum(b.training_time_ms for b in bases) + meta_ms,
                     sum(b.predict_time_per_row_ms for b in bases))


def build_ensembles(state: RunState) -> list[Evaluated]:
    """``StackedEnsemble_AllModels`` and ``StackedEnsemble_BestOfFamily`` on the base models' level-one rows."""
    if ENSEMBLE_ALGO not in state.config.evaluation.algos:
        return []
    bases = [e for e in state.evaluated if e.model.algo != ENSEMBLE_ALGO]
    best_of_family: dict[str, Evaluated] = {}
    for e in sorted(bases, key=lambda e: -state.metric.sign() * e.model.metrics[state.sort_metric]):
        best_of_family.setdefault(e.model.algo, e)
    groups = {"StackedEnsemble_AllModels": (bases, None),
              "StackedEnsemble_BestOfFamily": (list(best_of_family.values()), None),
              "StackedEnsemble_Greedy": (bases, state.metric)}
    y = state.y[state.protocol.scored]
    done: list[Evaluated] = []
    for model_id, (members, metric) in groups.items():
        if len(members) < 2 or (metric is None and done and len(members) == len(bases)):
            continue  # an ensemble needs two bases; BestOfFamily equal to AllModels adds nothing
        try:
            result = stack(model_id, members, y, state.schema, list(state.protocol.level_one), metric)
        except Exception as exc:  # a failed metalearner must not sink the run
            state.events.warn("ensemble", f"{model_id} failed: {type(exc).__name__}: {exc}")
            continue
        state.evaluated.append(result)
        done.append(result)
        state.events.add("ensemble", f"{model_id} {state.sort_metric}={result.model.metrics[state.sort_metric]:.4f}"
                                     f" from {len(members)} models")
    return done


@dataclass
class FeatureStack:
    """A level-2 metalearner (AutoGluon's stack levels): a bagged model on each row's features plus the level-1
    bases' predictions for it (``columns``, in the bases' order)."""

    model: Any
    columns: list[str]

    def augment(self, frame: Any, preds: list[np.ndarray]) -> Any:
        import pandas as pd

        extra = np.column_stack([_prediction_columns(p) for p in preds])
        added = pd.DataFrame(extra, columns=self.columns, index=getattr(frame, "index", None))
        return pd.concat([frame.reset_index(drop=True), added.reset_index(drop=True)], axis=1)

    def predict(self, frame: Any, preds: list[np.ndarray]) -> np.ndarray:
        return self.model.scored_proba(self.augment(frame, preds))


@dataclass
class LevelTwoEnsemble(StackedEnsemble):
    """A second stacking level: :class:`FeatureStack` on the bases' predictions and the row's own features."""

    def combine(self, frame: Any, predictions: list[np.ndarray]) -> np.ndarray:
        return self.metalearner.predict(frame, predictions)


def _prediction_columns(pred: np.ndarray) -> np.ndarray:
    """A base's prediction as feature columns: a binary model's P(positive), every class's probability, or the
    value."""
    pred = np.asarray(pred, dtype="float64")
    if pred.ndim == 1:
        return pred[:, None]
    return pred[:, 1:] if pred.shape[1] == 2 else pred


def _level_two_bases(state: RunState) -> list[Evaluated]:
    bases = [e for e in state.evaluated if e.model.algo != ENSEMBLE_ALGO]
    bases.sort(key=lambda e: -state.metric.sign() * e.model.metrics[state.sort_metric])
    return bases[:LEVEL_TWO_BASES]


def level_two_estimate(state: RunState) -> float:
    """Seconds the level-2 stack should take: its LightGBM's cross-validation on the level-one folds, about the
    cheapest ranked GBM's training time scaled to the rows scored; 0 when it does not apply (images, fewer than
    two bases, no GBM family)."""
    gbms = [e.training_time_ms for e in state.evaluated if e.model.algo == "GBM"]
    if state.schema.task == "image" or len(_level_two_bases(state)) < 2 or not gbms \
            or ENSEMBLE_ALGO not in state.config.evaluation.algos:
        return 0.0
    share = len(state.protocol.scored) / len(state.y)
    return 2.0 * float(np.median(gbms)) / 1000 * max(share, 0.2) + 1.0


def stack_level_two(state: RunState, pace: Pace | None = None) -> Evaluated | None:
    """``StackedEnsemble_L2``: LightGBM (the portfolio's first configuration) on each scored row's features and
    the best level-1 bases' out-of-fold predictions, cross-validated on the level-one folds. It joins the board
    only when its out-of-fold score beats every level-1 row's (AutoGluon checks that stacking does not
    overfit before using it): None otherwise, or when it does not apply."""
    from functools import partial

    from automl.bagging import take_rows
    from automl.devices import free_cores
    from automl.estimators import GradientBoosting
    from automl.evaluation import CutShortError, cross_validate
    from automl.models import COSTS, GBM_PORTFOLIO, Candidate

    if level_two_estimate(state) <= 0:
        return None
    bases, scored = _level_two_bases(state), state.protocol.scored
    columns = [f"level1_{b.model.model_id}_{k}" for b in bases for k in range(_prediction_columns(b.oof).shape[1])]
    stack_features = FeatureStack(None, columns)
    x = stack_features.augment(take_rows(state.x, scored), [b.oof for b in bases])
    schema = replace(state.schema, numeric=[*state.schema.numeric, *columns])
    candidate = Candidate("StackedEnsemble_L2", ENSEMBLE_ALGO,
                          partial(GradientBoosting, task=state.schema.task, params=dict(GBM_PORTFOLIO[0]),
                                  seed=state.config.seed, n_jobs=free_cores()),
                          dict(GBM_PORTFOLIO[0]), fit_kwargs={"deadline": None}, cost=COSTS["GBM"],
                          features="trees")
    try:  # a pace that says the folds will not fit stops it after its first (automl.schedule.JobCutShort)
        fitted = cross_validate(candidate, x, state.y[scored], schema, list(state.protocol.level_one), pace=pace)
    except CutShortError as exc:
        state.events.warn("ensemble", f"{exc}; level 2 not used")
        return None
    best = max((e for e in state.evaluated), key=lambda e: state.metric.sign() * e.model.metrics[state.sort_metric])
    score, level_one = fitted.model.metrics[state.sort_metric], best.model.metrics[state.sort_metric]
    if state.metric.sign() * (score - level_one) <= 0:
        state.events.add("ensemble", f"StackedEnsemble_L2 {state.sort_metric}={score:.4f} out of fold, not better "
                                     f"than level 1's best ({best.model.model_id} {level_one:.4f}): not used")
        return None
    stack_features.model = fitted.model
    params = {"base_models": [b.model.model_id for b in bases], "level": 2,
              "metalearner": "LightGBM on the features and the bases' out-of-fold predictions", **candidate.params}
    model = LevelTwoEnsemble("StackedEnsemble_L2", ENSEMBLE_ALGO, state.schema, [b.model for b in bases],
                             stack_features, params, fitted.model.metrics)
    result = Evaluated(model, fitted.oof, fitted.training_time_ms + sum(b.training_time_ms for b in bases),
                       fitted.predict_time_per_row_ms + sum(b.predict_time_per_row_ms for b in bases))
    state.evaluated.append(result)
    state.events.add("ensemble", f"StackedEnsemble_L2 {state.sort_metric}={score:.4f} from {len(bases)} models "
                                 f"and the features (level 1's best: {best.model.model_id} {level_one:.4f})")
    return result
