"""Reference models: training and prediction on real tables, deadlines, pickling, order and scaling rules."""

from __future__ import annotations

import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score, roc_auc_score

from automl import data, estimators, models
from automl.bagging import predict_raw
from automl.estimators import Forest, GradientBoosting, LinearModel
from automl.models import reference_candidates
from automl.preprocess import encode_target, infer_schema, make_preprocessor


def _matrix(name: str, rows: int) -> tuple[np.ndarray, np.ndarray, str]:
    ds = data.load(name)
    schema = infer_schema(ds)
    frame = ds.frame.iloc[:rows]
    x = make_preprocessor(schema).fit_transform(frame.drop(columns=[ds.target]))
    return x, encode_target(schema, frame[ds.target]), schema.task


@pytest.fixture(scope="module")
def diabetes() -> tuple[np.ndarray, np.ndarray]:
    x, y, _ = _matrix("diabetes", 400)
    return x, y


@pytest.fixture(scope="module")
def progression() -> tuple[np.ndarray, np.ndarray]:
    x, y, task = _matrix("diabetes-progression", 442)
    assert task == "regression"
    return x, y


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_every_candidate_trains_and_predicts(task: str, diabetes, progression) -> None:
    x, y = diabetes if task == "binary" else progression
    test = np.arange(len(y)) % 4 == 0
    train = ~test
    candidates = reference_candidates(task, 0, n_rows=int(train.sum()), n_features=x.shape[1], n_jobs=1,
                                      skewed_positive=task == "regression")  # GBM_4 (log) and GBM_5 (Tweedie) too
    for candidate in candidates:
        est = candidate.make().fit(x[train], y[train])
        out = predict_raw(est, x[test], task)
        assert not getattr(est, "cut_short_", False), candidate.model_id
        if task == "binary":
            assert out.shape == (test.sum(), 2) and np.allclose(out.sum(axis=1), 1.0)
            # Glucose and BMI alone separate these classes well: every model must beat chance clearly.
            assert roc_auc_score(y[test], out[:, 1]) > 0.7, candidate.model_id
            assert set(est.predict(x[test])) <= {0, 1}
        else:
            assert out.shape == (test.sum(),)
            assert r2_score(y[test], out) > 0.2, candidate.model_id


def test_multiclass_gradient_boosting_gives_one_column_per_class() -> None:
    x, y = load_iris(return_X_y=True)
    est = GradientBoosting("multiclass", n_jobs=1).fit(x, y)
    proba = est.predict_proba(x)
    assert proba.shape == (150, 3) and np.allclose(proba.sum(axis=1), 1.0)
    assert (est.predict(x) == y).mean() > 0.9


def test_gradient_boosting_stops_early_on_its_validation_slice(diabetes) -> None:
    x, y = diabetes
    est = GradientBoosting("binary", params={"learning_rate": 0.3}, patience=10, n_jobs=1).fit(x, y)
    # LightGBM keeps the trees up to the best round only; 400 rows at this rate overfit within ~100.
    assert 1 <= est.booster_.current_iteration() == est.best_iteration_ < 100
    assert not est.cut_short_


def test_a_refit_trains_the_early_stopped_rounds_scaled_by_the_rows_on_every_row(diabetes) -> None:
    x, y = diabetes
    est = GradientBoosting("binary", params={"learning_rate": 0.3}, patience=10, n_jobs=1).fit(x[:300], y[:300])
    refit = est.for_refit(len(y) / 300)
    assert refit.max_rounds == round(est.best_iteration_ * len(y) / 300) and refit.validation_fraction == 0
    refit.fit(x, y)
    assert refit.booster_.current_iteration() == refit.max_rounds and not refit.cut_short_
    assert refit.for_refit(1.0).fit(x, y, deadline=0.0).cut_short_  # the deadline still binds


@pytest.mark.parametrize("make", [lambda: GradientBoosting("binary", n_jobs=1),
                                  lambda: Forest("binary", "DRF", n_jobs=1),
                                  lambda: Forest("binary", "XRT", n_jobs=1)], ids=["GBM", "DRF", "XRT"])
def test_a_past_deadline_cuts_training_short_but_leaves_a_model(make, diabetes) -> None:
    x, y = diabetes
    est = make().fit(x, y, deadline=0.0)
    assert est.cut_short_
    proba = est.predict_proba(x)
    assert proba.shape == (len(y), 2) and np.isfinite(proba).all()
    assert roc_auc_score(y, proba[:, 1]) > 0.6  # a few rounds or trees already carry the signal
    full = make().fit(x, y)
    assert not full.cut_short_
    trained = (lambda e: e.booster_.current_iteration()) if isinstance(full, GradientBoosting) \
        else (lambda e: len(e.model_.estimators_))
    assert trained(est) < trained(full)


def test_glm_checks_the_deadline_between_chunks(diabetes, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = diabetes
    monkeypatch.setattr(estimators, "GLM_CHUNK", 1)  # one L-BFGS step per chunk: far from converged
    assert LinearModel("binary").fit(x, y, deadline=0.0).cut_short_
    assert not LinearModel("binary").fit(x, y).cut_short_


def test_glm_switches_to_its_large_data_settings_on_row_count(diabetes) -> None:
    x, y = diabetes
    small = LinearModel("binary").fit(x, y)
    large = LinearModel("binary", large_rows=len(y) - 1).fit(x, y)
    assert not small.large_ and small.model_.tol == 1e-4 and small.model_.C == 0.1
    assert large.large_ and large.model_.tol == 1e-3
    # On a problem this easy both tolerances reach the same model.
    assert np.allclose(small.predict_proba(x), large.predict_proba(x), atol=1e-2)


def test_a_small_tables_logistic_glm_chooses_its_penalty_by_cross_validation(diabetes, monkeypatch) -> None:
    from sklearn.linear_model import LogisticRegressionCV

    x, y = diabetes
    path = LinearModel("binary", Cs=estimators.GLM_CS).fit(x, y)
    assert isinstance(path.model_, LogisticRegressionCV) and float(np.ravel(path.model_.C_)[0]) in estimators.GLM_CS
    assert path.predict_proba(x).shape == (len(y), 2)
    monkeypatch.setattr(estimators, "GLM_PATH_ROWS", len(y) - 1)  # a larger table: the fixed penalty, no 16 fits
    assert LinearModel("binary", Cs=estimators.GLM_CS).fit(x, y).model_.C == 0.1
    monkeypatch.undo()
    rare = y.copy()
    rare[np.flatnonzero(rare == 1)[2:]] = 0  # a class of two rows has no row in some of three folds
    assert LinearModel("binary", Cs=estimators.GLM_CS).fit(x, rare).model_.C == 0.1


def test_ridge_gcv_matches_scikit_learn_ridge_at_the_chosen_penalty(progression, monkeypatch) -> None:
    x, y = progression
    monkeypatch.setattr(estimators, "RIDGE_BLOCK_ROWS", 100)  # the Gram matrix summed over several blocks
    est = LinearModel("regression").fit(x, y)
    assert est.alpha_ in estimators.RIDGE_ALPHAS
    reference = Ridge(alpha=est.alpha_).fit(x.astype("float64"), y)
    assert np.allclose(est.coef_, reference.coef_, rtol=1e-6, atol=1e-6)
    assert np.allclose(est.predict(x), reference.predict(x), rtol=1e-5)


def test_forest_trees_see_at_most_max_rows(diabetes) -> None:
    x, y = diabetes
    capped = Forest("binary", "XRT", n_estimators=8, max_rows=100, n_jobs=1).fit(x, y)
    assert capped.model_.bootstrap and capped.model_.max_samples == 100
    whole = Forest("binary", "XRT", n_estimators=8, n_jobs=1).fit(x, y)
    assert not whole.model_.bootstrap and whole.model_.max_samples is None


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_fitted_models_survive_pickling(task: str, diabetes, progression, tmp_path) -> None:
    x, y = diabetes if task == "binary" else progression
    for candidate in reference_candidates(task, 0, n_jobs=1, skewed_positive=task == "regression"):
        est = candidate.make().fit(x, y)
        joblib.dump(est, tmp_path / "m.joblib")
        loaded = joblib.load(tmp_path / "m.joblib")
        assert np.array_equal(predict_raw(loaded, x, task), predict_raw(est, x, task)), candidate.model_id


def test_estimators_pickled_under_their_old_module_still_load() -> None:
    """Model folders saved before the estimators moved to automl.estimators pickled them as automl.models.*."""
    saved = pickle.dumps(GradientBoosting("binary", n_jobs=1), protocol=0)
    assert b"automl.estimators\n" in saved
    assert type(pickle.loads(saved.replace(b"automl.estimators\n", b"automl.models\n"))) is GradientBoosting


def test_candidates_put_gradient_boosting_first() -> None:
    candidates = reference_candidates("binary", 0)
    assert [c.model_id for c in candidates] == ["GBM_1", "GLM_1", "GBM_2", "DRF_1", "GBM_3", "XRT_1"]
    assert [c.model_id for c in reference_candidates("image", 0)] == ["GLM_1", "SVM_1"]
    # The image baselines train on a sample bounded in pixels: 1,700 RGB 28x28 images, 500 at least.
    assert {c.max_rows for c in reference_candidates("image", 0, n_features=28 * 28 * 3)} == {1_700}
    assert {c.max_rows for c in reference_candidates("image", 0, n_features=64 * 64 * 3)} == {500}
    skewed = reference_candidates("regression", 0, skewed_positive=True)
    assert [c.model_id for c in skewed] == ["GBM_1", "GLM_1", "GBM_2", "DRF_1", "GBM_3", "XRT_1", "GBM_4", "GBM_5"]
    assert [c.params for c in skewed[-2:]] == list(models.SKEWED_PORTFOLIO)
    assert skewed[-2].make().log_target and not skewed[-1].make().log_target


def test_a_log_target_gbm_trains_on_the_log_and_predicts_on_the_original_scale() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 4))
    y = np.exp(1.0 + x[:, 0] + 0.5 * x[:, 1] + 0.2 * rng.normal(size=3000))  # multiplicative, like prices
    assert models.skewed_positive(y) and not models.skewed_positive(np.log(y)) and not models.skewed_positive(-y)
    train, test = slice(0, 2400), slice(2400, None)
    logged = GradientBoosting("regression", log_target=True, n_jobs=1).fit(x[train], y[train])
    plain = GradientBoosting("regression", n_jobs=1).fit(x[train], y[train])
    raw = logged.booster_.predict(x[test], num_iteration=logged.best_iteration_)
    np.testing.assert_allclose(logged.predict(x[test]), np.expm1(raw))  # the round trip
    assert logged.predict(x[test]).min() > -1
    # On the log scale the log model is the better one; on the original scale it still explains the values
    # (R² 0.51 here against 0.54 for the plain model: the heavy upper tail is where the squared errors are).
    log_error = [np.mean((np.log1p(m.predict(x[test])) - np.log1p(y[test])) ** 2) for m in (logged, plain)]
    assert log_error[0] < log_error[1]
    assert r2_score(y[test], logged.predict(x[test])) > 0.4
    # The Tweedie GBM (GBM_5) predicts on the original scale too, through LightGBM's log link: never below 0.
    tweedie = GradientBoosting("regression", params={"objective": "tweedie"}, n_jobs=1).fit(x[train], y[train])
    assert tweedie.predict(x[test]).min() > 0 and r2_score(y[test], tweedie.predict(x[test])) > 0.4
    refit = logged.for_refit(1.25)
    assert refit.log_target and refit.validation_fraction == 0
    with pytest.raises(ValueError, match="log_target needs a regression target >= 0"):
        GradientBoosting("regression", log_target=True, n_jobs=1).fit(x, y - 10)


def test_forests_grow_fewer_trees_on_large_tables() -> None:
    def trees(n_rows: int | None) -> set[int]:
        return {c.params["n_estimators"] for c in reference_candidates("binary", 0, n_rows=n_rows)
                if c.algo in ("DRF", "XRT")}

    assert trees(None) == trees(1_000) == {models.FOREST_TREES[0]}
    assert trees(1_000_000) == {models.FOREST_TREES[1]}


def test_cost_estimates_grow_with_cells_and_stop_growing_for_subsampled_forests() -> None:
    by_algo = {c.algo: c for c in reference_candidates("binary", 0)}
    for candidate in by_algo.values():
        assert 0 < candidate.estimate_seconds(1_000, 10) < candidate.estimate_seconds(100_000, 100)
    drf = by_algo["DRF"]
    subsample = estimators.FOREST_MAX_ROWS
    assert drf.estimate_seconds(10 * subsample, 100) == drf.estimate_seconds(subsample, 100)
    assert reference_candidates("image", 0)[0].estimate_seconds(1_000, 64) == 0.0


def test_a_noise_category_with_many_levels_does_not_leak_into_out_of_fold_scores() -> None:
    """Categories are split on natively by LightGBM, fitted inside each fold: a pure-noise column of 500 levels
    (what target encoding fitted on all rows would turn into a perfect feature) scores ≈ 0.5 out of fold."""
    from automl.evaluation import cross_validate, make_folds

    rng = np.random.default_rng(0)
    n = 3000
    frame = pd.DataFrame({"noise": [f"id{i}" for i in rng.integers(0, 500, n)], "y": rng.integers(0, 2, n)})
    ds = data.from_frame(frame, "noise", "y")
    schema = infer_schema(ds)
    assert schema.categorical == ["noise"]
    y = encode_target(schema, frame["y"])
    gbm = next(c for c in reference_candidates("binary", 0) if c.algo == "GBM")
    result = cross_validate(gbm, frame.drop(columns=["y"]), y, schema, make_folds(y, "binary", 5, seed=0))
    assert abs(result.model.metrics["auc"] - 0.5) < 0.04, result.model.metrics["auc"]


def test_gbm_trains_on_columns_named_with_characters_lightgbm_refuses() -> None:
    """LightGBM refuses , : " [ ] { } in feature names, and turns "i j" into a duplicate of "i_j": every GBM of
    such a table once failed silently. It gets safe names inside; the model and its rows keep the user's."""
    from automl.evaluation import cross_validate, make_folds

    rng = np.random.default_rng(0)
    n = 600
    names = ["a,b", "c:d", 'e"f', "[g]", "{h}", "i j", "i_j"]
    frame = pd.DataFrame({name: rng.normal(size=n) for name in names})
    frame["k: kind"] = rng.choice(["p", "q", "r"], n)
    frame["y"] = (frame["a,b"] + frame["{h}"] + (frame["k: kind"] == "p") > 0.5).astype(int)
    ds = data.from_frame(frame, "odd-names", "y")
    schema = infer_schema(ds)
    assert schema.features == [*names, "k: kind"]
    y = encode_target(schema, frame["y"])
    gbm = next(c for c in reference_candidates("binary", 0, n_jobs=1) if c.algo == "GBM")
    result = cross_validate(gbm, frame.drop(columns=["y"]), y, schema, make_folds(y, "binary", 3, seed=0))
    assert result.model.metrics["auc"] > 0.9, result.model.metrics
    assert result.model.predict(frame.head(5))["predict"].tolist() == frame["y"].head(5).tolist()
    # A search trial's fit (early-stopped on given rows) and the names inside the booster: safe and unique.
    x = make_preprocessor(schema, "trees").fit_transform(frame.drop(columns=["y"]))
    trial = GradientBoosting("binary", n_jobs=1).fit(x.iloc[:500], y[:500], validation=(x.iloc[500:], y[500:]))
    assert trial.booster_.feature_name() == ["a_b", "c_d", "e_f", "_g_", "_h_", "i_j", "i_j_2", "k__kind"]
    assert roc_auc_score(y[500:], trial.predict_proba(x.iloc[500:])[:, 1]) > 0.9
