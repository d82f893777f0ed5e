"""Train on part of Pima, predict the held-out rows with the predict CLI in a fresh process."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from automl import AutoML
from automl.export import load_model
from conftest import REPO, run_module


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    frame = pd.read_csv(REPO / "datasets" / "diabetes.csv")
    train, test = train_test_split(frame, test_size=0.25, random_state=7, stratify=frame["Outcome"])
    aml = AutoML(max_runtime_secs=40, output_dir=tmp / "run", verbose=False).fit(train, target="Outcome")
    test.to_csv(tmp / "holdout.csv", index=False)  # the target column is present and must be ignored
    return aml, test, tmp


def test_predict_cli_on_holdout(trained):
    aml, test, tmp = trained
    proc = run_module("automl.predict", tmp / "run" / "leader", tmp / "holdout.csv", "--output",
                      tmp / "preds.csv", cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    preds = pd.read_csv(tmp / "preds.csv")
    assert list(preds.columns) == ["predict", "p_0", "p_1"]
    assert len(preds) == len(test)
    np.testing.assert_allclose(preds["p_0"] + preds["p_1"], 1.0, atol=1e-6)
    assert roc_auc_score(test["Outcome"], preds["p_1"]) >= 0.78


def test_exported_network_reloads_identically_in_a_fresh_process(trained):
    aml, test, tmp = trained
    mlp_id = next(m for m in aml.leaderboard["model_id"] if m.startswith("MLP_"))
    model = next(e.model for e in aml.evaluated if e.model.model_id == mlp_id)
    proc = run_module("automl.predict", tmp / "run" / "models" / mlp_id, tmp / "holdout.csv", "--output",
                      tmp / "mlp.csv", cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh = pd.read_csv(tmp / "mlp.csv")
    np.testing.assert_allclose(fresh["p_1"], model.predict(test)["p_1"], rtol=1e-5, atol=1e-6)
    assert roc_auc_score(test["Outcome"], fresh["p_1"]) >= 0.78


def test_predict_cli_names_missing_columns(trained):
    _, test, tmp = trained
    test.drop(columns=["Glucose"]).to_csv(tmp / "partial.csv", index=False)
    proc = run_module("automl.predict", tmp / "run" / "leader", tmp / "partial.csv", "--output",
                      tmp / "never.csv", cwd=tmp)
    assert proc.returncode == 2
    assert "Glucose" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp / "never.csv").exists()


def test_api_predict_is_the_exported_leaders_and_scores_the_holdout(trained):
    aml, test, tmp = trained
    out = aml.predict(test)
    board = pd.read_csv(tmp / "run" / "leaderboard.csv")
    assert aml.leader.model_id == board["model_id"].iloc[0] and board["auc"].iloc[0] == board["auc"].max()
    exported = load_model(tmp / "run" / "leader").predict(test)
    np.testing.assert_allclose(out[["p_0", "p_1"]], exported[["p_0", "p_1"]], rtol=1e-5, atol=1e-6)
    assert (out["predict"] == np.where(out["p_1"] > out["p_0"], 1, 0)).all()  # labels, not positions
    assert roc_auc_score(test["Outcome"], out["p_1"]) >= 0.78
    assert (out["predict"] == test["Outcome"]).mean() >= 0.7


def test_predicted_labels_are_written_exactly_as_trained(tmp_path):
    """Labels that look like spreadsheet formulas are data: preds.csv keeps them as the training labels."""
    frame = pd.read_csv(REPO / "datasets" / "diabetes.csv")
    frame["Outcome"] = frame["Outcome"].map({0: "-x", 1: "=1"})
    aml = AutoML(max_runtime_secs=20, include_algos=["GLM"], output_dir=tmp_path / "run",
                 verbose=False).fit(frame, target="Outcome")
    rows = frame.head(40)
    rows.to_csv(tmp_path / "rows.csv", index=False)
    proc = run_module("automl.predict", tmp_path / "run" / "leader", tmp_path / "rows.csv", "--output",
                      tmp_path / "preds.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    preds = pd.read_csv(tmp_path / "preds.csv", dtype={"predict": str})
    assert list(preds.columns) == ["predict", "p_-x", "p_=1"]
    assert set(preds["predict"]) == {"-x", "=1"}  # a fit on Pima predicts both classes in 40 rows
    assert list(preds["predict"]) == list(aml.predict(rows)["predict"])
