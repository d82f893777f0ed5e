"""Atomic writes and spreadsheet-safe CSVs."""

from __future__ import annotations

import csv

import pandas as pd
import pytest

from automl import io as io_mod
from automl.io import atomic_dir, atomic_write_text, write_csv


class Boom(RuntimeError):
    pass


def _raise(*args, **kwargs):
    raise Boom("disk full")


def test_atomic_write_text_creates_folders_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "a" / "b" / "run.json"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second\nline ü")
    assert path.read_text(encoding="utf-8") == "second\nline ü"
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]


def test_atomic_write_text_keeps_newlines_as_given(tmp_path):
    path = tmp_path / "x.csv"
    atomic_write_text(path, "a\r\nb\n")
    assert path.read_bytes() == b"a\r\nb\n"


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failed_write_keeps_the_old_content(tmp_path, monkeypatch, failing):
    path = tmp_path / "leaderboard.csv"
    path.write_text("old")
    monkeypatch.setattr(io_mod.os, failing, _raise)
    with pytest.raises(Boom):
        atomic_write_text(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["leaderboard.csv"]


def test_a_failed_first_write_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_text(tmp_path / "new.txt", None)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_write_csv_guards_formula_cells(tmp_path):
    frame = pd.DataFrame({
        "model_id": ["=HYPERLINK(\"http://x\")", "+1+2", "-2+3", "@SUM(A1)", "\tcmd", "MLP_1", "a=b", None],
        "auc": [0.9, -0.5, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2],
        "n": [1, -2, 3, 4, 5, 6, 7, 8],
    })
    path = tmp_path / "board.csv"
    write_csv(frame, path)
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["model_id"] for r in rows] == ["'=HYPERLINK(\"http://x\")", "'+1+2", "'-2+3", "'@SUM(A1)", "'\tcmd",
                                             "MLP_1", "a=b", ""]
    assert rows[1]["auc"] == "-0.5" and rows[1]["n"] == "-2"  # numbers are not guarded
    back = pd.read_csv(path)
    assert pd.api.types.is_float_dtype(back["auc"]) and pd.api.types.is_integer_dtype(back["n"])
    pd.testing.assert_series_equal(back["auc"], frame["auc"])
    pd.testing.assert_series_equal(back["n"], frame["n"])
    assert frame["model_id"].iloc[0] == "=HYPERLINK(\"http://x\")"  # the caller's frame is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["board.csv"]


def test_write_csv_guards_hyperparameter_json(tmp_path):
    frame = pd.DataFrame({"hyperparameters": ['{"lr": 0.01}', "-1"], "x": [1.0, 2.0]})
    write_csv(frame, tmp_path / "b.csv")
    assert pd.read_csv(tmp_path / "b.csv")["hyperparameters"].tolist() == ['{"lr": 0.01}', "'-1"]


def test_write_csv_writes_verbatim_columns_exactly(tmp_path):
    frame = pd.DataFrame({"predict": ["-x", "=1", "@a"], "file": ["=cmd.png", "a.png", "+b.png"]})
    write_csv(frame, tmp_path / "preds.csv", verbatim=["predict"])
    back = pd.read_csv(tmp_path / "preds.csv", dtype=str)
    assert back["predict"].tolist() == ["-x", "=1", "@a"]
    assert back["file"].tolist() == ["'=cmd.png", "a.png", "'+b.png"]  # free text stays guarded


def test_atomic_dir_replaces_a_folder_whole(tmp_path):
    target = tmp_path / "leader"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_dir(target) as tmp:
        assert tmp != target and tmp.parent == tmp_path
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").exists()  # readers still see the old folder meanwhile
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["leader"]


def test_atomic_dir_creates_a_new_folder(tmp_path):
    target = tmp_path / "models" / "MLP_1"
    with atomic_dir(target) as tmp:
        (tmp / "model.json").write_text("{}")
    assert (target / "model.json").read_text() == "{}"
    assert [p.name for p in target.parent.iterdir()] == ["MLP_1"]


def test_atomic_dir_leaves_the_old_folder_when_the_body_raises(tmp_path):
    target = tmp_path / "leader"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(Boom), atomic_dir(target) as tmp:
        (tmp / "half.txt").write_text("half")
        _raise()
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert (target / "old.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["leader"]


def test_atomic_dir_leaves_nothing_when_a_new_folder_fails(tmp_path):
    with pytest.raises(Boom), atomic_dir(tmp_path / "fresh") as tmp:
        (tmp / "half.txt").write_text("half")
        _raise()
    assert list(tmp_path.iterdir()) == []
