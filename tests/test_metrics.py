"""The metric registry: directions, tasks, default sort metrics, and values against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from automl.metrics import DEFAULT_SORT, LOGLOSS_CLIP, get, metrics_for, score_all

# Small constructed cases: 6 binary rows, 6 rows over 3 classes, 5 regression rows.
Y_BIN = np.array([0, 0, 1, 1, 0, 1])
P1_BIN = np.array([0.1, 0.6, 0.8, 0.3, 0.2, 0.9])
PROBA_BIN = np.column_stack([1 - P1_BIN, P1_BIN])
Y_MULTI = np.array([0, 1, 2, 2, 1, 0])
PROBA_MULTI = np.array([[0.7, 0.2, 0.1],
                        [0.1, 0.5, 0.4],
                        [0.2, 0.3, 0.5],
                        [0.6, 0.1, 0.3],
                        [0.3, 0.3, 0.4],
                        [0.5, 0.3, 0.2]])
Y_REG = np.array([3.0, 0.5, 2.0, 7.0, 0.0])
PRED_REG = np.array([2.5, 0.0, 2.0, 8.0, 0.4])


@pytest.mark.parametrize(("name", "task", "higher"), [
    ("auc", "binary", True),
    ("aucpr", "binary", True),
    ("accuracy", "image", True),
    ("logloss", "binary", False),
    ("logloss", "multiclass", False),
    ("mean_per_class_error", "binary", False),
    ("mean_per_class_error", "multiclass", False),
    ("rmse", "binary", False),
    ("mse", "multiclass", False),
    ("rmse", "regression", False),
    ("mse", "regression", False),
    ("mae", "regression", False),
    ("rmsle", "regression", False),
    ("mean_residual_deviance", "regression", False),
])
def test_direction(name, task, higher):
    metric = get(name, task)
    assert metric.higher_is_better is higher
    assert metric.sign() == (1.0 if higher else -1.0)
    assert task in metric.tasks


def test_leaderboard_metrics_per_task():
    assert [m.name for m in metrics_for("binary")] == ["auc", "logloss", "aucpr", "mean_per_class_error", "rmse",
                                                        "mse"]
    assert [m.name for m in metrics_for("multiclass")] == ["mean_per_class_error", "logloss", "rmse", "mse"]
    assert [m.name for m in metrics_for("regression")] == ["rmse", "mse", "mae", "rmsle", "mean_residual_deviance"]
    for task in ("binary", "multiclass", "regression", "image"):
        names = [m.name for m in metrics_for(task)]
        assert len(names) == len(set(names)), f"{task} lists a metric twice"


@pytest.mark.parametrize(("task", "name"), [("binary", "auc"), ("multiclass", "mean_per_class_error"),
                                            ("image", "mean_per_class_error"),
                                            ("regression", "mean_residual_deviance")])
def test_default_sort_metric(task, name):
    assert DEFAULT_SORT[task] == name
    assert get(name, task).name == name


@pytest.mark.parametrize(("name", "task"), [("auc", "regression"), ("auc", "multiclass"), ("mae", "binary"),
                                            ("rmsle", "multiclass"), ("accuracy", "binary"), ("f1", "binary")])
def test_get_rejects_a_metric_of_another_task(name, task):
    with pytest.raises(ValueError, match=rf"metric '{name}' does not apply to {task} tasks; use one of") as info:
        get(name, task)
    for valid in metrics_for(task):
        assert valid.name in str(info.value)


def test_binary_values():
    scores = score_all("binary", Y_BIN, PROBA_BIN)
    label = (P1_BIN >= 0.5).astype(int)
    assert scores["auc"] == pytest.approx(skm.roc_auc_score(Y_BIN, P1_BIN))
    assert scores["aucpr"] == pytest.approx(skm.average_precision_score(Y_BIN, P1_BIN))
    assert scores["logloss"] == pytest.approx(-np.mean(np.log(np.where(Y_BIN == 1, P1_BIN, 1 - P1_BIN))))
    # Errors: class 0 misses row 1 (1 of 3), class 1 misses row 3 (1 of 3).
    assert scores["mean_per_class_error"] == pytest.approx(1 / 3)
    assert scores["mean_per_class_error"] == pytest.approx(
        np.mean([np.mean(label[Y_BIN == k] != k) for k in (0, 1)]))
    p_true = np.where(Y_BIN == 1, P1_BIN, 1 - P1_BIN)
    assert scores["mse"] == pytest.approx(np.mean((1 - p_true) ** 2))
    assert scores["rmse"] == pytest.approx(math.sqrt(scores["mse"]))


def test_auc_is_half_for_constant_scores_and_one_for_perfect_ones():
    auc = get("auc", "binary")
    assert auc.fn(Y_BIN, np.full((6, 2), 0.5)) == pytest.approx(0.5)
    perfect = np.column_stack([1 - Y_BIN, Y_BIN]).astype(float)
    assert auc.fn(Y_BIN, perfect) == pytest.approx(1.0)
    assert get("aucpr", "binary").fn(Y_BIN, perfect) == pytest.approx(1.0)


def test_multiclass_values():
    scores = score_all("multiclass", Y_MULTI, PROBA_MULTI)
    p_true = PROBA_MULTI[np.arange(6), Y_MULTI]
    assert scores["logloss"] == pytest.approx(-np.mean(np.log(p_true)))
    # Arg-max labels 0, 1, 2, 0, 2, 0: per-class errors 0/2, 1/2, 1/2.
    assert scores["mean_per_class_error"] == pytest.approx(1 / 3)
    assert scores["mse"] == pytest.approx(np.mean((1 - p_true) ** 2))
    assert scores["rmse"] == pytest.approx(math.sqrt(scores["mse"]))


def test_multiclass_mse_is_h2os_not_the_brier_score():
    mse = get("mse", "multiclass").fn(Y_MULTI, PROBA_MULTI)
    expected = np.mean([(1 - PROBA_MULTI[i, y]) ** 2 for i, y in enumerate(Y_MULTI)])
    assert mse == pytest.approx(expected)
    one_hot = np.eye(3)[Y_MULTI]
    brier = np.mean(np.sum((PROBA_MULTI - one_hot) ** 2, axis=1))
    assert mse != pytest.approx(brier)


def test_logloss_counts_classes_missing_from_a_fold():
    # A validation fold without class 2 still scores a 3-column probability matrix.
    y = np.array([0, 1, 1, 0])
    proba = PROBA_MULTI[:4]
    expected = -np.mean(np.log(proba[np.arange(4), y]))
    assert get("logloss", "multiclass").fn(y, proba) == pytest.approx(expected)


def test_image_accuracy():
    accuracy = get("accuracy", "image").fn(Y_MULTI, PROBA_MULTI)
    assert accuracy == pytest.approx(np.mean(PROBA_MULTI.argmax(axis=1) == Y_MULTI))
    assert accuracy == pytest.approx(4 / 6)


def test_regression_values():
    scores = score_all("regression", Y_REG, PRED_REG)
    err = PRED_REG - Y_REG
    assert scores["mse"] == pytest.approx(np.mean(err ** 2))
    assert scores["rmse"] == pytest.approx(np.sqrt(np.mean(err ** 2)))
    assert scores["mae"] == pytest.approx(np.mean(np.abs(err)))
    assert scores["rmsle"] == pytest.approx(np.sqrt(np.mean((np.log1p(PRED_REG) - np.log1p(Y_REG)) ** 2)))
    assert scores["mean_residual_deviance"] == pytest.approx(scores["mse"])  # Gaussian deviance


def test_rmsle_accepts_values_above_minus_one_and_is_nan_below():
    rmsle = get("rmsle", "regression")
    pred = np.array([-0.5, 0.0, 2.0])
    y = np.array([0.0, 0.2, 1.5])
    assert rmsle.fn(y, pred) == pytest.approx(np.sqrt(np.mean((np.log1p(pred) - np.log1p(y)) ** 2)))
    assert math.isnan(rmsle.fn(y, np.array([-1.0, 0.0, 2.0])))
    assert math.isnan(rmsle.fn(np.array([-2.0, 0.0, 2.0]), pred))


def test_better_predictions_score_better_in_every_metric():
    for task, y, good, bad in [
        ("binary", Y_BIN, np.column_stack([1 - (0.8 * Y_BIN + 0.1), 0.8 * Y_BIN + 0.1]), PROBA_BIN),
        ("multiclass", Y_MULTI, 0.7 * np.eye(3)[Y_MULTI] + 0.1, PROBA_MULTI),
        ("regression", Y_REG, Y_REG + 0.1, PRED_REG),
    ]:
        good_scores, bad_scores = score_all(task, y, good), score_all(task, y, bad)
        for metric in metrics_for(task):
            better = metric.sign() * (good_scores[metric.name] - bad_scores[metric.name])
            assert better > 0, (task, metric.name)


def _weighted_cases():
    """Every registry entry with data that has tied scores, class-imbalanced rows and integer weights."""
    rng = np.random.default_rng(11)
    n = 90
    y_bin = (rng.random(n) < 0.3).astype(int)
    s = np.round(np.clip(0.3 * y_bin + rng.random(n) * 0.7, 0, 1), 1)  # one decimal: many ties
    y_multi = rng.integers(0, 3, n)
    proba = rng.dirichlet(np.ones(3), n)
    y_reg = rng.normal(size=n) * 3
    data = {"binary": (y_bin, np.column_stack([1 - s, s])), "multiclass": (y_multi, proba),
            "image": (y_multi, proba), "regression": (y_reg, y_reg + rng.normal(size=n))}
    return [(task, m, *data[task]) for task in data for m in metrics_for(task)]


WEIGHTED = _weighted_cases()


@pytest.mark.parametrize(("task", "metric", "y", "pred"), WEIGHTED, ids=[f"{t}-{m.name}" for t, m, *_ in WEIGHTED])
def test_weighted_form_is_the_metric_on_repeated_rows(task, metric, y, pred):
    counts = np.random.default_rng(12).integers(0, 4, size=(5, len(y))).astype(float)
    counts[:, :3] = 1.0  # every class keeps a row
    if task == "binary":
        counts[:, np.flatnonzero(y == 1)[:2]] = 1.0
    repeated = [np.repeat(np.arange(len(y)), c.astype(int)) for c in counts]
    expected = [metric.fn(y[r], pred[r]) for r in repeated]
    np.testing.assert_allclose(metric.weighted(y, pred)(counts), expected, rtol=1e-10, atol=1e-12)
    # Unit weights are the plain metric, in one row or many.
    np.testing.assert_allclose(metric.weighted(y, pred)(np.ones((2, len(y)))), metric.fn(y, pred), rtol=1e-12)


@pytest.mark.parametrize(("name", "reference"), [
    ("auc", lambda y, p, w: skm.roc_auc_score(y, p[:, 1], sample_weight=w)),
    ("aucpr", lambda y, p, w: skm.average_precision_score(y, p[:, 1], sample_weight=w)),
    ("logloss", lambda y, p, w: skm.log_loss(y, p, sample_weight=w)),
    ("mean_per_class_error", lambda y, p, w: 1 - skm.balanced_accuracy_score(y, p.argmax(axis=1), sample_weight=w)),
])
def test_weighted_binary_metrics_match_scikit_learn_sample_weights(name, reference):
    _, _, y, pred = next(c for c in WEIGHTED if c[0] == "binary")
    weights = np.random.default_rng(13).uniform(0.1, 3.0, size=(3, len(y)))  # not integers
    expected = [reference(y, pred, w) for w in weights]
    np.testing.assert_allclose(get(name, "binary").weighted(y, pred)(weights), expected, rtol=1e-10)


def test_logloss_clips_at_one_constant():
    # A true class given probability 0 costs -log(LOGLOSS_CLIP), in the plain and the weighted form alike.
    y = np.array([0, 1])
    proba = np.array([[1.0, 0.0], [1.0, 0.0]])
    logloss = get("logloss", "binary")
    assert logloss.fn(y, proba) == pytest.approx(-np.log(LOGLOSS_CLIP) / 2)
    assert logloss.weighted(y, proba)(np.array([[0.0, 2.0]]))[0] == pytest.approx(-np.log(LOGLOSS_CLIP))


def test_rmsle_is_nan_only_where_an_undefined_row_carries_weight():
    rmsle = get("rmsle", "regression")
    y, pred = np.array([0.0, 0.2, 1.5]), np.array([-2.0, 0.0, 2.0])
    score = rmsle.weighted(y, pred)(np.array([[1.0, 1.0, 1.0], [0.0, 2.0, 1.0]]))
    assert math.isnan(score[0])
    assert score[1] == pytest.approx(rmsle.fn(y[[1, 1, 2]], pred[[1, 1, 2]]))


def test_auc_still_rejects_rows_of_one_class():
    with pytest.raises(ValueError, match="both classes"):
        get("auc", "binary").fn(np.array([1, 1]), np.array([[0.2, 0.8], [0.6, 0.4]]))
