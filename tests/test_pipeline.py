"""The AutoML API: H2O conveniences (get_best_model, include/exclude algos, leaderboard frame)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from automl import AutoML
from automl.errors import InputError
from automl.metrics import get
from conftest import REPO

FAST = ["GLM", "GBM", "StackedEnsemble"]  # no network training: these tests stay quick


@pytest.fixture(scope="module")
def split():
    frame = pd.read_csv(REPO / "datasets" / "diabetes.csv")
    return train_test_split(frame, test_size=0.3, random_state=3, stratify=frame["Outcome"])


@pytest.fixture(scope="module")
def fitted(split, tmp_path_factory):
    train, test = split
    return AutoML(max_runtime_secs=60, include_algos=FAST, verbose=False,
                  output_dir=tmp_path_factory.mktemp("p") / "run").fit(train, target="Outcome")


def test_include_algos_limits_the_board(fitted):
    assert set(fitted.leaderboard["algo"]) <= {"GLM", "GBM", "StackedEnsemble"}
    assert {"GLM", "GBM"} <= set(fitted.leaderboard["algo"])


def test_get_best_model_semantics(fitted):
    board = fitted.leaderboard
    assert fitted.get_best_model().model_id == board["model_id"].iloc[0]
    base = board[board["algo"] != "StackedEnsemble"]
    assert fitted.get_best_model("basemodel").model_id == base.sort_values("auc", ascending=False)["model_id"].iloc[0]
    assert fitted.get_best_model("GLM").model_id == "GLM_1"
    by_logloss = board.sort_values("logloss")["model_id"].iloc[0]
    assert fitted.get_best_model(criterion="logloss").model_id == by_logloss
    fastest = board.sort_values("training_time_ms")["model_id"].iloc[0]
    assert fitted.get_best_model(criterion="training_time_ms").model_id == fastest
    with pytest.raises(ValueError, match="no deeplearning model"):
        fitted.get_best_model("deeplearning")
    with pytest.raises(ValueError, match="rmsle"):
        fitted.get_best_model(criterion="rmsle")


def test_exclude_algos_and_bad_names(tmp_path):
    # scikit-learn's rule: the constructor only stores; fit validates, before any data loads.
    aml = AutoML(include_algos=["XGBoost"])
    assert aml.get_params()["include_algos"] == ["XGBoost"]
    with pytest.raises(InputError, match="'XGBoost'"):
        aml.fit("no-such-file.csv")
    with pytest.raises(InputError, match="not both"):
        AutoML(include_algos=["GLM"], exclude_algos=["GBM"]).fit("no-such-file.csv")
    assert not (tmp_path / "run").exists()


def test_leaderboard_frame_scores_every_row_on_the_users_rows(split, tmp_path):
    train, test = split
    aml = AutoML(max_runtime_secs=60, include_algos=["GLM", "GBM"], leaderboard_frame=test, verbose=False,
                 output_dir=tmp_path / "run").fit(train, target="Outcome")
    y = test["Outcome"].to_numpy()
    for model_id, auc in zip(aml.leaderboard["model_id"], aml.leaderboard["auc"], strict=True):
        model = next(e.model for e in aml.evaluated if e.model.model_id == model_id)
        assert auc == pytest.approx(get("auc", "binary").fn(y, model.predict_proba(test)))
    assert np.isfinite(aml.leaderboard["auc_ci_low"]).all()


def test_leaderboard_frame_missing_target_is_an_input_error(split, tmp_path):
    train, test = split
    aml = AutoML(include_algos=["GLM"], leaderboard_frame=test.drop(columns=["Outcome"]), verbose=False,
                 output_dir=tmp_path / "run")
    with pytest.raises(InputError, match="'Outcome'"):
        aml.fit(train, target="Outcome")
    assert not (tmp_path / "run").exists()  # refused before any model trained or any file was written


def test_one_class_leaderboard_frame_is_an_input_error(split, tmp_path):
    train, test = split
    one_class = test[test["Outcome"] == 1]
    with pytest.raises(InputError, match="one class"):
        AutoML(include_algos=["GLM"], leaderboard_frame=one_class, verbose=False,
               output_dir=tmp_path / "run").fit(train, target="Outcome")


def test_fit_twice_starts_from_nothing(split, tmp_path):
    train, _ = split
    aml = AutoML(max_runtime_secs=30, include_algos=["GLM"], verbose=False, output_dir=tmp_path / "run")
    first = aml.fit(train, target="Outcome").leaderboard
    second = aml.fit(train.drop(columns=["Insulin"]), target="Outcome").leaderboard
    assert list(first["model_id"]) == list(second["model_id"]) == ["GLM_1"]  # not the first fit's models too
    assert "Insulin" not in aml.leader.schema.features


def test_the_constructor_takes_the_clis_options_with_the_clis_defaults():
    """README: ``AutoML(...)`` takes the options above. Each CLI option (but those only a flow or ``fit`` takes)
    is a constructor parameter with the same default: ``population`` is "auto" (None) in both, not 1."""
    import inspect

    from automl import AutoML
    from automl.run import build_parser, options

    cli = options(build_parser().parse_args(["diabetes"]))
    api = {k: p.default for k, p in inspect.signature(AutoML.__init__).parameters.items() if k != "self"}
    flow_or_fit = {"fan_out", "fan_out_deployment", "target", "task", "started_at"}
    assert set(cli) - flow_or_fit == set(api) - flow_or_fit
    assert {k: cli[k] for k in set(cli) - flow_or_fit} == {k: api[k] for k in set(cli) - flow_or_fit}
    assert api["population"] is None and api["workers"] is None
