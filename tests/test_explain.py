"""Out-of-fold permutation importance of bagged models, on real cross-validated models."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import pytest

from automl import explain
from automl.bagging import BaggedModel, predict_raw
from automl.data import load
from automl.evaluation import cross_validate, make_folds
from automl.explain import permutation_importance
from automl.metrics import get
from automl.models import reference_candidates
from automl.preprocess import encode_target, infer_schema

NFOLDS = 5


def _fit_glm(name: str, extra: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    ds = load(name)
    if extra:
        ds = dataclasses.replace(ds, frame=ds.frame.assign(**extra))
    schema = infer_schema(ds)
    x, y = ds.frame.drop(columns=[ds.target]), encode_target(schema, ds.frame[ds.target])
    folds = make_folds(y, schema.task, NFOLDS, seed=0)
    glm = next(c for c in reference_candidates(schema.task, 0) if c.algo == "GLM")
    model = cross_validate(glm, x, y, schema, folds).model
    return {"model": model, "x": x, "y": y, "folds": folds, "task": schema.task}


@pytest.fixture(scope="module")
def diabetes() -> dict[str, Any]:
    """GLM on Pima diabetes plus a column of pure noise."""
    noise = np.random.default_rng(0).normal(size=len(load("diabetes").frame))
    return _fit_glm("diabetes", {"Noise": noise})


def _importance(run: dict[str, Any], metric: str, **kwargs: Any) -> pd.DataFrame:
    return permutation_importance(run["model"], run["x"], run["y"], run["folds"], get(metric, run["task"]),
                                  run["task"], **kwargs)


def test_glucose_matters_most_and_noise_not_at_all(diabetes: dict[str, Any]) -> None:
    imp = _importance(diabetes, "auc", n_repeats=3)
    assert list(imp.columns) == ["feature", "importance", "importance_std"]
    assert sorted(imp["feature"]) == sorted(diabetes["model"].schema.features)
    assert imp["importance"].is_monotonic_decreasing
    by_feature = imp.set_index("feature")["importance"]
    assert imp["feature"].iloc[0] == "Glucose"
    assert by_feature["Glucose"] > 0.05  # AUC points lost without it
    assert abs(by_feature["Noise"]) < 0.05 * by_feature["Glucose"]
    assert imp.attrs == {"evaluations": 3 * NFOLDS, "complete": True}


def test_matches_a_direct_out_of_fold_computation(diabetes: dict[str, Any]) -> None:
    # logloss: lower is better, so this also checks the sign.
    metric, seed, feature = get("logloss", "binary"), 7, "BMI"
    x, y, model = diabetes["x"], diabetes["y"], diabetes["model"]
    drops = []
    for i, (_, test) in enumerate(diabetes["folds"]):
        fold = model.folds[i]  # the fold model that never saw these rows

        def predict(frame: pd.DataFrame, fold: Any = fold) -> np.ndarray:
            return predict_raw(fold.estimator, fold.preprocessor.transform(frame), "binary")

        rows = x.iloc[test]
        shuffled = rows.copy()
        shuffled[feature] = rows[feature].to_numpy()[np.random.default_rng((seed, 0, i)).permutation(len(test))]
        drops.append(metric.fn(y[test], predict(shuffled)) - metric.fn(y[test], predict(rows)))
    imp = _importance(diabetes, "logloss", n_repeats=1, seed=seed).set_index("feature")
    # Features are float32: the same rows in other batches round differently, around 1e-8 relative.
    assert imp.loc[feature, "importance"] == pytest.approx(np.mean(drops), rel=1e-6)
    assert imp.loc[feature, "importance_std"] == pytest.approx(np.std(drops), rel=1e-6)
    assert imp.loc[feature, "importance"] > 0


class _Spy:
    """A preprocessor that records the frames it transforms."""

    def __init__(self, inner: Any, seen: list[pd.DataFrame]) -> None:
        self.inner, self.seen = inner, seen

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        self.seen.append(frame)
        return self.inner.transform(frame)


def test_each_fold_model_sees_only_its_held_out_rows(diabetes: dict[str, Any]) -> None:
    model, x, folds = diabetes["model"], diabetes["x"], diabetes["folds"]
    seen: list[list[pd.DataFrame]] = [[] for _ in folds]
    spied = dataclasses.replace(model, folds=[dataclasses.replace(f, preprocessor=_Spy(f.preprocessor, seen[i]))
                                              for i, f in enumerate(model.folds)])
    _importance(diabetes | {"model": spied}, "auc", n_repeats=2)
    for (_, test), frames in zip(folds, seen, strict=True):
        held_out = x.iloc[test]
        assert frames and frames[0].index.equals(held_out.index)  # the unshuffled baseline
        for frame in frames:
            assert len(frame) % len(test) == 0
            for start in range(0, len(frame), len(test)):
                chunk = frame.iloc[start:start + len(test)]
                for col in model.schema.features:  # a shuffle keeps each column's values
                    assert np.array_equal(np.sort(chunk[col].to_numpy(float)), np.sort(held_out[col].to_numpy(float)),
                                          equal_nan=True)


def test_scores_a_bounded_stratified_sample_of_each_folds_rows(diabetes: dict[str, Any]) -> None:
    model, x, y, folds = diabetes["model"], diabetes["x"], diabetes["y"], diabetes["folds"]
    seen: list[list[pd.DataFrame]] = [[] for _ in folds]
    spied = dataclasses.replace(model, folds=[dataclasses.replace(f, preprocessor=_Spy(f.preprocessor, seen[i]))
                                              for i, f in enumerate(model.folds)])
    imp = _importance(diabetes | {"model": spied}, "auc", n_repeats=2, max_rows=200)
    assert imp["feature"].iloc[0] == "Glucose" and imp.attrs["complete"]
    scored = 0
    for (_, test), frames in zip(folds, seen, strict=True):
        baseline = frames[0]  # the unshuffled rows this fold scores
        rows = x.index.get_indexer(baseline.index)
        assert set(rows) <= set(test) and 30 <= len(rows) <= 45  # 200 rows over 5 folds of ~154
        assert abs(y[rows].mean() - y[test].mean()) < 0.03  # in the fold's class proportions
        assert all(len(frame) % len(rows) == 0 for frame in frames)
        scored += len(rows)
    assert scored <= 200 + len(folds)  # at most one extra row per class and fold
    again = _importance(diabetes, "auc", n_repeats=2, max_rows=200)
    pd.testing.assert_frame_equal(again, imp)  # seeded: the same sample and shuffles


def test_model_without_fold_models_uses_its_own_predictions(diabetes: dict[str, Any]) -> None:
    bag: BaggedModel = diabetes["model"]

    class Ensemble:  # duck-typed like a stacked ensemble: schema and scored_proba, no folds
        schema = bag.schema

        def scored_proba(self, frame: pd.DataFrame) -> np.ndarray:
            return bag.scored_proba(frame)

    imp = _importance(diabetes | {"model": Ensemble()}, "auc", n_repeats=1)
    assert imp["feature"].iloc[0] == "Glucose"
    assert imp["importance"].notna().all()


def test_deadline_keeps_what_was_computed(diabetes: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """On a clock that only predictions move (1 s per copy of a fold's rows), the work stops before the
    deadline, keeping what was computed: a pass starts only if one as long as the last fits, and a batch of
    shuffled copies holds only the copies that fit."""
    bag: BaggedModel = diabetes["model"]
    clock = [0.0]

    class Slow:  # like a stacked ensemble: one scored_proba for every fold
        schema = bag.schema

        def scored_proba(self, frame: pd.DataFrame) -> np.ndarray:
            baseline.setdefault("rows", len(frame))  # the first call predicts a fold's rows unshuffled
            clock[0] += len(frame) / baseline["rows"]
            return bag.scored_proba(frame)

    baseline: dict[str, int] = {}
    monkeypatch.setattr(explain, "monotonic", lambda: clock[0])
    slow = diabetes | {"model": Slow()}
    # Pass 1: the baseline (1 s), then 9 copies, one per feature (9 s). Pass 2 would take 10 s more: at 10 + 10 >
    # 19.5 it does not start.
    imp = _importance(slow, "auc", n_repeats=2, max_rows=200, deadline=19.5)
    assert imp.attrs == {"evaluations": 1, "complete": False} and clock[0] == 10.0
    assert imp["importance"].notna().all() and imp["feature"].iloc[0] == "Glucose"
    # Within pass 1: after the baseline 4.5 s are left, room for 4 of the 9 shuffled copies; the rest is NaN.
    clock[0] = 0.0
    cut = _importance(slow, "auc", n_repeats=2, max_rows=200, deadline=5.5)
    assert clock[0] == 5.0 and cut.attrs["evaluations"] == 0
    assert cut["importance"].notna().sum() == 4

    late = _importance(diabetes, "auc", deadline=-1.0)
    assert late.attrs["evaluations"] == 0 and late["importance"].isna().all()
    assert sorted(late["feature"]) == sorted(diabetes["model"].schema.features)


def test_categorical_column_is_shuffled_as_one_raw_column() -> None:
    titanic = _fit_glm("titanic")
    imp = _importance(titanic, "auc", n_repeats=1)
    assert imp["feature"].iloc[0] == "Sex"  # one-hot encoded: its columns move together
    assert set(imp["feature"]) == set(titanic["model"].schema.features)


def test_regression_uses_values_and_metric_direction() -> None:
    progression = _fit_glm("diabetes-progression")
    imp = _importance(progression, "rmse", n_repeats=2)
    assert imp["feature"].iloc[0] in {"bmi", "s5"}
    assert imp["importance"].iloc[0] > 5  # rmse units lost without it


def test_rejects_folds_the_model_was_not_trained_on(diabetes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="fold models"):
        _importance(diabetes | {"folds": diabetes["folds"][:3]}, "auc")
    with pytest.raises(ValueError, match="n_repeats"):
        _importance(diabetes, "auc", n_repeats=0)
    with pytest.raises(ValueError, match="max_rows"):
        _importance(diabetes, "auc", max_rows=0)
    with pytest.raises(ValueError, match="Glucose"):
        _importance(diabetes | {"x": diabetes["x"].drop(columns=["Glucose"])}, "auc")


def test_a_stacked_ensemble_is_explained_out_of_fold_through_its_bases_fold_models() -> None:
    """Fold i's rows are predicted by the metalearner on each base's fold-i model, which never saw them. The
    in-sample alternative (every base's average of its fold models) scores rows four of five fold models
    trained on: a GBM that fits a column of noise then looks as if the noise mattered."""
    from automl.ensembles import stack
    from automl.evaluation import Evaluated

    noise = np.random.default_rng(1).normal(size=len(load("diabetes").frame))
    run = _fit_glm("diabetes", {"Noise": noise})
    schema = run["model"].schema
    gbm = next(c for c in reference_candidates(schema.task, 0) if c.algo == "GBM")
    bases = [cross_validate(gbm, run["x"], run["y"], schema, run["folds"]),
             cross_validate(next(c for c in reference_candidates(schema.task, 0) if c.algo == "GLM"),
                            run["x"], run["y"], schema, run["folds"])]
    assert all(isinstance(b, Evaluated) for b in bases)
    ensemble = stack("StackedEnsemble_Test", bases, run["y"], schema, run["folds"]).model
    predictors = explain._fold_predictors(ensemble, run["folds"], run["task"])
    for i, (_, test) in enumerate(run["folds"]):
        rows = run["x"].iloc[test]
        expected = ensemble.combine(rows, [predict_raw(b.model.folds[i].estimator,
                                                       b.model.folds[i].preprocessor.transform(rows), "binary")
                                           for b in bases])
        np.testing.assert_allclose(predictors[i](rows), expected)
        assert not np.allclose(predictors[i](rows), ensemble.scored_proba(rows))  # not the in-sample prediction
    imp = _importance(run | {"model": ensemble}, "auc", n_repeats=2).set_index("feature")["importance"]
    assert imp.index[0] == "Glucose" and abs(imp["Noise"]) < 0.1 * imp["Glucose"]
