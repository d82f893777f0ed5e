"""bench/suite.py: fixed stratified splits, the paired bootstrap interval, class-column alignment, the added tables,
Parquet as text, the schedule fields of our rows, saved rival predictions and the rivals' interpreters."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import suite  # noqa: E402  (a script folder, not a package)

AUC, LOGLOSS, ACCURACY, RMSE, R2 = (m for metrics in suite.METRICS.values() for m in metrics)


def toy(task: str, n: int = 503) -> suite.Dataset:
    rng = np.random.default_rng(3)
    target = (rng.choice(["a", "b", "c"], size=n, p=[0.7, 0.2, 0.1]) if task != "regression"
              else rng.normal(size=n).round(6).astype(str))
    frame = pd.DataFrame({"x": rng.integers(0, 100, n).astype(str), "y": target})
    return suite.Dataset("toy", "y", task, lambda: frame)


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_split_is_made_once_and_the_same_every_time(tmp_path: Path, task: str) -> None:
    dataset = toy(task)
    first = suite.cached_split(tmp_path / "a", dataset)
    again = suite.cached_split(tmp_path / "b", dataset)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    stamps = [p.stat().st_mtime_ns for p in first]
    assert suite.cached_split(tmp_path / "a", dataset) == first
    assert [p.stat().st_mtime_ns for p in first] == stamps  # reused, not rewritten
    train, test = (pd.read_csv(p, dtype=str) for p in first)
    assert (len(train), len(test)) == (402, 101)
    assert sorted(pd.concat([train, test]).itertuples(index=False)) == sorted(dataset.read().itertuples(index=False))


def test_classification_split_keeps_class_shares() -> None:
    dataset = toy("multiclass")
    frame = dataset.read()
    _, test = suite.split(frame, "y", stratify=True)
    shares = frame["y"].value_counts(normalize=True)
    assert np.allclose(test["y"].value_counts(normalize=True)[shares.index], shares, atol=1 / len(test))


def binary_case(n: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, a model that sees them through noise, and one that sees only noise."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    good = 1 / (1 + np.exp(-(2.5 * (2 * y - 1) + rng.normal(size=n))))
    bad = rng.random(n)
    return y, np.column_stack([1 - good, good]), np.column_stack([1 - bad, bad])


def test_identical_predictions_give_a_zero_interval() -> None:
    y, good, _ = binary_case()
    assert suite.paired_interval(AUC, y, good, good, resamples=200) == {"diff": 0.0, "low": 0.0, "high": 0.0}
    values = np.linspace(0, 1, 50)
    assert suite.paired_interval(RMSE, values, values + 0.1, values + 0.1, resamples=200)["high"] == 0.0


def test_a_clearly_better_model_is_above_zero_whatever_the_direction() -> None:
    y, good, bad = binary_case()
    better = suite.paired_interval(AUC, y, good, bad, resamples=200)
    assert 0 < better["low"] <= better["diff"] <= better["high"]
    worse = suite.paired_interval(AUC, y, bad, good, resamples=200)
    assert worse["high"] < 0
    rng = np.random.default_rng(1)
    values = rng.normal(size=200)
    close, far = values + rng.normal(0, 0.1, 200), values + rng.normal(0, 1.0, 200)
    assert suite.paired_interval(RMSE, values, close, far, resamples=200)["low"] > 0  # lower RMSE is better


def test_chunks_do_not_change_the_resamples() -> None:
    y, good, bad = binary_case(97)
    whole = suite.paired_interval(LOGLOSS, y, good, bad, resamples=120, chunk=120)
    assert suite.paired_interval(LOGLOSS, y, good, bad, resamples=120, chunk=7) == whole
    assert suite.paired_interval(ACCURACY, y, good, bad, resamples=120, chunk=1) == \
        suite.paired_interval(ACCURACY, y, good, bad, resamples=120, chunk=500)


def test_one_class_resamples_are_skipped() -> None:
    y = np.array([0] * 9 + [1])  # about a third of the resamples draw no positive
    proba = np.column_stack([np.zeros(10), np.linspace(0, 1, 10)])
    assert np.isnan(AUC.fn(np.zeros(4, dtype=int), proba[:4]))
    assert suite.paired_interval(AUC, y, proba, proba[::-1], resamples=100) == {"diff": 1.0, "low": 1.0, "high": 1.0}


def test_probability_columns_follow_the_class_order() -> None:
    preds = pd.DataFrame({"predict": ["yes", "no"], "p_yes": [0.8, 0.3], "p_no": [0.2, 0.69]})
    proba = suite.probabilities(preds, ["no", "yes"])
    assert np.allclose(proba, [[0.2, 0.8], [0.69 / 0.99, 0.3 / 0.99]])  # rows rescaled to sum to 1
    with pytest.raises(ValueError, match="p_maybe"):
        suite.probabilities(preds, ["maybe", "no", "yes"])
    assert suite.encode(pd.Series(["yes", "no", "yes"]), ["no", "yes"]).tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="maybe"):
        suite.encode(pd.Series(["maybe"]), ["no", "yes"])


def test_h2o_columns_are_renamed_by_the_target_levels() -> None:
    assert suite.h2o_columns(["predict", "p0", "p1"], ["0", "1"]) == ["predict", "p_0", "p_1"]
    assert suite.h2o_columns(["predict", "no", "yes"], ["no", "yes"]) == ["predict", "p_no", "p_yes"]
    for names in (["predict", "yes", "no"], ["predict", "no"], ["no", "yes", "predict"]):
        with pytest.raises(ValueError, match="levels"):
            suite.h2o_columns(names, ["no", "yes"])


SHARED_TABLES = {"loans_full_schema": (10000, 46), "nass_cds": (26217, 12), "mpls_stops": (43699, 10),
                 "movies": (58788, 14), "help_baseline": (447, 628), "caravan": (5822, 86)}


@pytest.mark.skipif(not suite.SHARED.is_dir(), reason="no shared/datasets beside the checkout")
@pytest.mark.parametrize("name", sorted(SHARED_TABLES))
def test_each_added_table_reads_whole_with_its_target(name: str) -> None:
    dataset = suite.DATASETS[name]
    frame = dataset.read()
    assert frame.shape == SHARED_TABLES[name]
    assert (frame[dataset.target] != "").all()  # no row without a target
    if dataset.classifies:
        assert frame[dataset.target].nunique() == 2
    else:
        assert np.isfinite(frame[dataset.target].astype(float)).all()


def test_parquet_cells_become_their_csv_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    typed = pd.DataFrame({
        "when": pd.to_datetime(["2017-01-01T06:00:42Z", None], utc=True),
        "lat": [44.96661711, 0.1 + 0.2],
        "count": pd.array([3, None], dtype="Int64"),
        "word": [" NA ", None],
    })
    text = suite.as_text(typed)
    assert text.to_dict("list") == {"when": ["2017-01-01 06:00:42+00:00", ""],
                                    "lat": ["44.96661711", "0.30000000000000004"],  # floats round-trip
                                    "count": ["3", ""], "word": [" NA ", ""]}  # a missing cell blank, a text kept
    typed.to_parquet(tmp_path / "t.parquet", index=False)
    monkeypatch.setattr(suite, "SHARED", tmp_path)
    assert suite.shared_parquet("t.parquet")().equals(text)


def test_schedule_fields_are_copied_when_the_run_has_them(tmp_path: Path) -> None:
    run_json = tmp_path / "run.json"
    assert suite.schedule_fields(run_json) == {}  # no file
    run_json.write_text('{"task": "binary"}')
    assert suite.schedule_fields(run_json) == {}  # no schedule yet
    families = {"GBM": {"jobs": 5, "skipped": 1, "core_seconds": 40.5, "wasted_core_seconds": 2.0}}
    run_json.write_text(json.dumps({"schedule": {"families": families, "core_seconds": 200.0,
                                                 "wasted_core_seconds": 9.5, "cpu_percent": 181.2, "other": 1}}))
    assert suite.schedule_fields(run_json) == {"families": families, "core_seconds": 200.0,
                                               "wasted_core_seconds": 9.5, "cpu_percent": 181.2}
    run_json.write_text('{"schedule": {"cpu_percent": 150.0}}')
    assert suite.schedule_fields(run_json) == {"cpu_percent": 150.0}


def test_saved_predictions_of_every_rival_not_run_now(tmp_path: Path) -> None:
    case = suite.load_split(toy("multiclass"), tmp_path / "data")
    proba = pd.DataFrame({f"p_{c}": np.full(len(case.y), 1 / 3) for c in case.classes})
    for rival in ("h2o", "autogluon"):
        folder = tmp_path / "runs" / "toy" / rival
        folder.mkdir(parents=True)
        proba.assign(predict="a").to_csv(folder / "preds.csv", index=False)
    saved = suite.saved_predictions(case, ["ours", "h2o"], tmp_path)
    assert list(saved) == ["autogluon"]  # h2o runs now; flaml left nothing
    assert saved["autogluon"].shape == (len(case.y), 3)
    row = suite.in_print_order({"leader": "x", "vs_autogluon": {}, "vs_h2o": {}, **suite.new_row(case, "ours", 1)})
    assert list(row)[-3:] == ["vs_h2o", "vs_autogluon", "leader"]


def test_a_rival_the_interpreter_lacks_stops_the_suite_before_any_run(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert suite.has_module(sys.executable, "json")
    assert not suite.has_module(sys.executable, "no_such_module_here")
    assert not suite.has_module(str(tmp_path / "no-python"), "json")
    code = suite.main(["--datasets", "diabetes", "--tools", "ours,autogluon", "--out", str(tmp_path / "out"),
                       "--autogluon-python", str(tmp_path / "no-python")])
    assert code == 2
    assert "--autogluon-python" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_compare_scores_every_saved_tool_and_ours_against_each_rival(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``--compare`` trains nothing: ours is the true class's certainty, AutoGluon a uniform guess."""
    dataset = toy("multiclass")
    case = suite.load_split(dataset, tmp_path / "data")
    uniform = pd.DataFrame({f"p_{c}": np.full(len(case.y), 1 / 3) for c in case.classes})
    sure = pd.DataFrame({f"p_{c}": (case.y == i).astype(float) * 0.98 + 0.01 for i, c in enumerate(case.classes)})
    for tool, preds in (("ours", sure), ("autogluon", uniform)):
        folder = tmp_path / "runs" / "toy" / tool
        folder.mkdir(parents=True)
        preds.assign(predict="a").to_csv(folder / "preds.csv", index=False)
    suite.compare_saved(dataset, tmp_path)
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(row) >= {"ours", "autogluon", "vs_autogluon"} and "vs_h2o" not in row
    assert row["ours"]["accuracy"] == 1.0 and row["vs_autogluon"]["logloss"]["low"] > 0
