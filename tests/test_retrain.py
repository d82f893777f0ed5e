"""flows/retrain.py: the fixed holdout, the promotion rule, the project lock, and real retrain runs.

The runs are real: the flow trains on diabetes with a tiny budget on the session's Prefect
server. Prefect is imported inside tests and fixtures, after ``prefect_api`` has set the
API URL (Prefect reads its settings once, at import).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from automl.data import load
from automl.errors import InputError
from conftest import run_module, tree_digest

# Prefect reads its settings once, at import: start the server (and set PREFECT_API_URL) before any
# test here imports it, so that later in-process tests of the session talk to that server too.
pytestmark = pytest.mark.usefixtures("prefect_api")

BUDGET = dict(max_runtime_secs=20, max_models=2, verbose=False)


@pytest.fixture(scope="module")
def diabetes_runs(on_server, tmp_path_factory):
    """Two retrain runs of diabetes in one project (the second with another seed): their results and the root."""
    from flows.retrain import retrain_flow

    root = tmp_path_factory.mktemp("retrain")
    first = retrain_flow(dataset="diabetes", output_root=str(root), options=BUDGET)
    second = retrain_flow(dataset="diabetes", output_root=str(root), options={**BUDGET, "seed": 2})
    return first, second, root / "diabetes"


# -- the fixed holdout ------------------------------------------------------------------
def test_holdout_is_fixed_by_row_content():
    from automl.champion import holdout_mask

    frame = load("diabetes").frame
    mask = holdout_mask(frame)
    assert 0.15 < mask.mean() < 0.25
    shuffled = frame.sample(frac=1, random_state=0)[list(reversed(frame.columns))]
    assert (holdout_mask(shuffled) == mask[shuffled.index.to_numpy()]).all()
    assert (holdout_mask(frame.astype("float64")) == mask).all()  # 6 and 6.0 are the same value
    # New rows never move the old ones: a champion trained earlier never saw today's holdout.
    grown = pd.concat([frame, frame.iloc[:50].assign(Age=lambda f: f["Age"] + 100)], ignore_index=True)
    assert (holdout_mask(grown)[: len(frame)] == mask).all()


def test_split_keeps_the_card_and_refuses_a_holdout_too_small():
    from dataclasses import replace

    from automl.champion import split_holdout

    ds = load("diabetes")
    training, holdout = split_holdout(ds)
    assert len(training.frame) + len(holdout.frame) == len(ds.frame)
    assert training.card == ds.card  # the zero-means-missing rules travel with the training rows
    assert not set(map(tuple, training.frame.to_numpy())) & set(map(tuple, holdout.frame.to_numpy()))
    with pytest.raises(InputError, match=r"rows fall into the fixed holdout .* at least 20"):
        split_holdout(replace(ds, frame=ds.frame.iloc[:60]))


# -- the lock --------------------------------------------------------------------------
def test_concurrent_history_appends_under_the_lock_lose_nothing(tmp_path):
    from automl.champion import HISTORY_COLUMNS, HISTORY_FILE, append_history, project_lock

    def writer(name: str) -> None:
        for i in range(15):
            # Each writer opens the lock file itself, as two runs (processes or threads) do.
            with project_lock(tmp_path):
                append_history(tmp_path, {"run_id": f"{name}-{i}", "gain": -0.5 * i, "promoted": "no",
                                          "reason": f"writer {name}"})

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(writer, "abcd"))
    history = pd.read_csv(tmp_path / HISTORY_FILE)
    assert list(history.columns) == HISTORY_COLUMNS
    assert sorted(history["run_id"]) == sorted(f"{n}-{i}" for n in "abcd" for i in range(15))
    assert history["gain"].min() == -7.0  # numbers stay numbers (no formula guard on negative values)


def _waits_for_flock(path: Path) -> bool:
    """Whether a thread or process is blocked on a flock of ``path``: Linux lists waiters with '->'."""
    st = path.stat()
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino} "
    return any("->" in line and key in line for line in Path("/proc/locks").read_text().splitlines())


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks to see a blocked waiter")
def test_lock_excludes_a_second_holder(tmp_path):
    from automl.champion import project_lock

    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with project_lock(tmp_path):
            order.append("first in")
            inside.set()
            release.wait(60)
            order.append("first out")

    def second_holder() -> None:
        with project_lock(tmp_path):
            order.append("second in")

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(60)
    second = threading.Thread(target=second_holder)
    second.start()
    # No timing guess: wait until the kernel lists the second holder as blocked on the lock (or, with a
    # broken lock, until it got in, which the order below then rejects).
    deadline = time.monotonic() + 60
    while not _waits_for_flock(tmp_path / ".lock") and "second in" not in order:
        assert time.monotonic() < deadline, "the second holder neither blocked nor entered"
        time.sleep(0.01)
    order.append("released")
    release.set()
    thread.join()
    second.join()
    assert order == ["first in", "released", "first out", "second in"]


# -- real retrain runs ------------------------------------------------------------------
def test_two_runs_leave_two_history_rows_and_the_better_champion(diabetes_runs):
    from automl.champion import split_holdout
    from automl.export import load_model
    from automl.metrics import get
    from automl.preprocess import encode_target

    first, second, project = diabetes_runs
    history = pd.read_csv(project / "leaderboard_history.csv")
    assert list(history["run_id"]) == [first["run_id"], second["run_id"]]
    assert list(history["promoted"]) == ["yes", second["promoted"]]
    assert history["reason"].iloc[0] == "first run: no champion yet"
    assert history["champion_before"].iloc[1] == first["challenger"]
    _, holdout = split_holdout(load("diabetes"))
    assert set(history["metric"]) == {"auc"} and (history["holdout_rows"] == len(holdout.frame)).all()

    # The recorded scores are the two models' real AUCs on the fixed holdout.
    models = {run["challenger"]: load_model(project / "challengers" / run["run_id"] / "leader")
              for run in (first, second)}
    y = encode_target(models[first["challenger"]].schema, holdout.frame["Outcome"])
    x = holdout.frame.drop(columns=["Outcome"])
    auc = {key: get("auc", "binary").fn(y, model.predict_proba(x)) for key, model in models.items()}
    row = history.iloc[1]
    assert row["challenger_holdout"] == pytest.approx(auc[second["challenger"]], abs=1e-9)
    assert row["champion_holdout"] == pytest.approx(auc[first["challenger"]], abs=1e-9)
    assert row["gain"] == pytest.approx(row["challenger_holdout"] - row["champion_holdout"], abs=1e-9)
    assert row["ci_low"] <= row["gain"] <= row["ci_high"]

    # The documented rule (no margin): promote only when the whole 95 % interval is above 0.
    assert (row["promoted"] == "yes") == (row["ci_low"] > 0)
    winner = second if row["promoted"] == "yes" else first
    champion = json.loads((project / "champion" / "champion.json").read_text())
    assert champion["champion"] == winner["challenger"] == second["champion"]
    leader_dir = project / "challengers" / winner["run_id"] / "leader"
    assert (project / "champion" / "model.json").read_bytes() == (leader_dir / "model.json").read_bytes()
    assert not list(project.rglob("*.tmp")), "temporary files left behind"


def test_a_better_challenger_replaces_the_champion(on_server, tmp_path):
    """Forced both ways: the champion is a model trained on diabetes with its outcomes shuffled (AUC about 0.5 on
    the holdout), the challenger one trained on the real outcomes; the whole interval of the gain is above 0, so it
    is promoted and the champion folder becomes its leader. (The two-run test above holds whichever way its run
    goes.)"""
    from flows.retrain import retrain_flow

    frame = load("diabetes").frame
    shuffled = frame.assign(Outcome=np.random.default_rng(0).permutation(frame["Outcome"].to_numpy()))
    noise = tmp_path / "noise" / "diabetes.csv"
    noise.parent.mkdir()
    shuffled.to_csv(noise, index=False)
    options = {**BUDGET, "project": "forced", "include_algos": ["GLM"], "target": "Outcome"}
    weak = retrain_flow(dataset=str(noise), output_root=str(tmp_path), options=options)
    strong = retrain_flow(dataset="diabetes", output_root=str(tmp_path), options=options)
    project = tmp_path / "forced"
    history = pd.read_csv(project / "leaderboard_history.csv")
    row = history.iloc[1]
    assert list(history["promoted"]) == ["yes", "yes"], history.to_dict("records")
    assert row["champion_before"] == weak["challenger"] and row["champion_holdout"] < 0.65
    assert row["ci_low"] > 0 and row["challenger_holdout"] > 0.75
    champion = json.loads((project / "champion" / "champion.json").read_text())
    assert champion["champion"] == strong["challenger"] == strong["champion"] != weak["challenger"]
    leader = project / "challengers" / strong["run_id"] / "leader"
    assert (project / "champion" / "model.json").read_bytes() == (leader / "model.json").read_bytes()


def test_an_image_folder_retrains_and_its_champion_is_profiled_on_the_holdouts_images(on_server, tmp_path):
    """The champion's drift profile holds its predictions on the fixed holdout: for images, of their pixels (the
    holdout's frame holds only the labels, which no image model can predict from)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from flows.retrain import retrain_flow

    d = load_digits()
    for i in range(500):  # the fixed holdout (a hash of each image) then holds 4 to 13 of every class
        (tmp_path / "digits" / str(d.target[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray((d.images[i] * 15).astype("uint8")).save(tmp_path / "digits" / str(d.target[i]) / f"{i}.png")
    result = retrain_flow(dataset=str(tmp_path / "digits"), output_root=str(tmp_path),
                          options={**BUDGET, "include_algos": ["GLM"]})
    assert result["promoted"] == "yes" and result["challenger_holdout"] < 0.2  # mean per-class error
    profile = json.loads((tmp_path / "digits" / "champion" / "drift_profile.json").read_text())
    assert profile["rows"] == 500 - result["holdout_rows"]


def test_champion_is_a_model_folder_the_predict_cli_accepts(diabetes_runs, tmp_path):
    project = diabetes_runs[2]
    rows = load("diabetes").frame.drop(columns=["Outcome"]).iloc[:25]
    rows.to_csv(tmp_path / "new.csv", index=False)
    proc = run_module("automl.predict", project / "champion", tmp_path / "new.csv", "--output", tmp_path / "p.csv",
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    preds = pd.read_csv(tmp_path / "p.csv")
    assert len(preds) == 25 and {"predict", "p_0", "p_1"} <= set(preds.columns)
    assert np.allclose(preds["p_0"] + preds["p_1"], 1.0)


def test_runs_publish_artifacts_and_readable_task_names(diabetes_runs):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
    )

    second, project = diabetes_runs[1], diabetes_runs[2]
    flow_run_id = second["flow_run_id"]
    assert second["run_id"].endswith(flow_run_id[:8])
    with get_client(sync_client=True) as client:
        artifacts = {a.key: a for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))}
        task_names = {t.name for t in client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))}
    board = pd.read_csv(project / "challengers" / second["run_id"] / "leaderboard.csv")
    table = artifacts["leaderboard-diabetes"].data
    table = json.loads(table) if isinstance(table, str) else table
    assert [r["model_id"] for r in table] == list(board["model_id"])
    summary = artifacts["retrain-diabetes"].data
    assert second["challenger"] in summary and second["reason"] in summary
    assert ("**promoted**" in summary) == (second["promoted"] == "yes")
    assert float(artifacts["progress-diabetes"].data) == 100
    assert {"ingest-diabetes", "split-holdout-diabetes", "preprocess-diabetes", "train-models-diabetes",
            "leaderboard-diabetes", "champion-challenger-diabetes", "publish-diabetes"} <= task_names


def test_a_worse_challenger_leaves_the_champion_untouched(diabetes_runs, tmp_path):
    """Training rows with random labels make a challenger that is worse by far: the CI rule keeps the champion."""
    from automl.champion import holdout_mask
    from flows.retrain import retrain_flow

    project = diabetes_runs[2]
    frame = load("diabetes").frame
    in_holdout = holdout_mask(frame)
    noisy = frame[~in_holdout].assign(Outcome=np.random.default_rng(0).integers(0, 2, int((~in_holdout).sum())))
    noisy = noisy[~holdout_mask(noisy)]  # keep the holdout exactly the same rows as before
    pd.concat([frame[in_holdout], noisy]).to_csv(tmp_path / "diabetes-random-labels.csv", index=False)
    before = tree_digest(project / "champion")

    result = retrain_flow(dataset=str(tmp_path / "diabetes-random-labels.csv"), output_root=str(project.parent),
                          options={**BUDGET, "target": "Outcome", "project": "diabetes"})
    assert result["promoted"] == "no"
    assert result["ci_high"] < 0, result["reason"]  # worse by more than noise, not just "not better"
    assert result["holdout_rows"] == int(in_holdout.sum())
    assert tree_digest(project / "champion") == before
    history = pd.read_csv(project / "leaderboard_history.csv")
    assert len(history) == 3 and history["promoted"].iloc[-1] == "no"


def _glm_champion(champion_dir: Path) -> None:
    """A champion folder as ``promote`` leaves it: logistic regression cross-validated on the training rows."""
    from automl.champion import split_holdout
    from automl.evaluation import cross_validate, make_folds
    from automl.export import save_model
    from automl.models import reference_candidates
    from automl.preprocess import encode_target, infer_schema

    training, _ = split_holdout(load("diabetes"))
    schema = infer_schema(training)
    x, y = training.frame.drop(columns=["Outcome"]), encode_target(schema, training.frame["Outcome"])
    glm = next(c for c in reference_candidates("binary", 0, n_jobs=1) if c.algo == "GLM")
    model = cross_validate(glm, x, y, schema, make_folds(y, "binary", 3, seed=0)).model
    save_model(model, champion_dir, {"protocol": "cv", "nfolds": 3, "label": "3-fold cross-validation"})
    (champion_dir / "champion.json").write_text(json.dumps({"champion": "earlier/GLM_1"}))


def test_load_champion_tells_absent_from_unreadable(tmp_path):
    from automl.champion import ChampionUnreadable, load_champion

    assert load_champion(tmp_path / "none") == (None, {})
    _glm_champion(tmp_path / "champion")
    model, info = load_champion(tmp_path / "champion")
    assert model.model_id == "GLM_1" and info == {"champion": "earlier/GLM_1"}
    for damaged in ("model.json", "champion.json"):
        copy = tmp_path / damaged / "champion"
        shutil.copytree(tmp_path / "champion", copy)
        (copy / damaged).write_text("{not json")
        with pytest.raises(ChampionUnreadable, match=rf"champion in .*{damaged}.* does not load .*JSONDecodeError"):
            load_champion(copy)


def test_an_unreadable_champion_is_never_replaced(on_server, tmp_path):
    """A damaged champion file stops the promotion: the champion stays byte-identical and history says why."""
    from automl.champion import ChampionUnreadable
    from flows.retrain import retrain_flow

    champion = tmp_path / "damaged" / "champion"
    _glm_champion(champion)
    (champion / "fold_0" / "preprocessor.joblib").write_bytes(b"not a pickle")
    before = tree_digest(champion)

    with pytest.raises(ChampionUnreadable, match="restore it, or remove the folder"):
        retrain_flow(dataset="diabetes", output_root=str(tmp_path), options={**BUDGET, "project": "damaged"})
    assert tree_digest(champion) == before
    history = pd.read_csv(champion.parent / "leaderboard_history.csv")
    assert list(history["promoted"]) == ["no"]
    assert history["reason"].iloc[0].startswith("not promoted: champion unreadable: champion in ")
    assert history["challenger_holdout"].iloc[0] > 0.5  # the challenger was still scored, for the record
    run_dir = champion.parent / "challengers" / history["run_id"].iloc[0]
    assert json.loads((run_dir / "decision.json").read_text())["promoted"] == "no"
    events = pd.read_csv(run_dir / "event_log.csv")
    assert (events["level"] == "WARNING").any() and events["message"].str.contains("champion unreadable").any()


def test_margin_rule_on_real_models(diabetes_runs):
    from automl.champion import compare, split_holdout
    from automl.export import load_model

    first, project = diabetes_runs[0], diabetes_runs[2]
    model = load_model(project / "challengers" / first["run_id"] / "leader")
    _, holdout = split_holdout(load("diabetes"))
    same = compare(model, model, holdout, "auc")  # a model against itself: gain exactly 0
    assert (same.gain, same.ci_low, same.ci_high, same.promoted) == (0.0, 0.0, 0.0, False)
    assert compare(model, model, holdout, "auc", margin=-0.01).promoted  # tolerate up to 0.01 worse
    assert not compare(model, model, holdout, "auc", margin=0.0).promoted
    logloss = compare(model, None, holdout, "logloss")
    assert logloss.promoted and logloss.reason == "first run: no champion yet" and logloss.challenger_score > 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"options": {"project": "../elsewhere"}}, "project name '../elsewhere' must start with a letter or digit"),
    ({"margin": float("nan")}, "margin must be a finite number"),
    ({"keep_challengers": 0}, "keep_challengers must be at least 1"),
    ({"options": {"max_runtime_secs": -1}}, "--max-runtime-secs must be positive"),
    ({"options": {"output_dir": "elsewhere"}}, "pass output_root instead of output_dir"),
    ({"dataset": "no-such-dataset"}, "unknown dataset 'no-such-dataset'"),
])
def test_bad_input_fails_fast_with_one_line(on_server, tmp_path, kwargs, message):
    from flows.retrain import retrain_flow

    params = {"dataset": "diabetes", "output_root": str(tmp_path), **kwargs,
              "options": {"verbose": False, **kwargs.get("options", {})}}
    with pytest.raises(InputError) as err:
        retrain_flow(**params)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not list(tmp_path.iterdir()), "nothing may be written for bad input"


@pytest.mark.parametrize(("dataset", "query", "message"), [
    ("{pg}", "SELECT no_such_column FROM pg_class", "no_such_column"),
    ("postgresql://postgres@127.0.0.1:1/test", "SELECT 1 AS x", "127.0.0.1:1"),
    ("{empty}", None, "no .csv, .parquet or .pq file in it"),
])
def test_a_source_that_fails_fails_the_run_in_one_line_and_leaves_the_project_as_it_was(
        diabetes_runs, pg_url, tmp_path, dataset, query, message):
    from flows.retrain import retrain_flow

    _, _, project = diabetes_runs
    (tmp_path / "empty").mkdir()
    before = tree_digest(project)
    options = {"verbose": False, "target": "Outcome", "project": "diabetes", **({"query": query} if query else {})}
    with pytest.raises(InputError) as err:
        retrain_flow(dataset=dataset.format(pg=pg_url, empty=tmp_path / "empty"), output_root=str(project.parent),
                     options=options)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert tree_digest(project) == before
