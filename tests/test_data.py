"""Ingest: built-in cards, CSV/Parquet files, fingerprints, and every bad input (library and CLI)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from automl.data import builtin_cards, from_frame, load
from automl.errors import InputError

REPO = Path(__file__).resolve().parents[1]
DIABETES_CSV = REPO / "datasets" / "diabetes.csv"
TITANIC_CSV = REPO / "datasets" / "titanic.csv"
DIABETES_COLUMNS = ["Pregnancies", "Glucose", "BloodPressure", "SkinThickness", "Insulin", "BMI",
                    "DiabetesPedigreeFunction", "Age", "Outcome"]


def _cli_env() -> dict[str, str]:
    """The installed package if there is one (CI), else this checkout."""
    env = dict(os.environ)
    try:
        importlib.metadata.distribution("automl")
    except importlib.metadata.PackageNotFoundError:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


def _diabetes() -> pd.DataFrame:
    return pd.read_csv(DIABETES_CSV)


# -- the bad-input files, each written into the folder the command runs in ----------------------
def _no_files(folder: Path) -> None:
    pass


def _garbage(folder: Path) -> None:
    # A PNG signature and raw bytes: not UTF-8, not a table.
    (folder / "garbage.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00\x01" * 8)


def _directory(folder: Path) -> None:
    (folder / "folder.csv").mkdir()


def _empty(folder: Path) -> None:
    (folder / "empty.csv").write_bytes(b"")


def _header_only(folder: Path) -> None:
    (folder / "header.csv").write_text(",".join(DIABETES_COLUMNS) + "\n")


def _one_class(folder: Path) -> None:
    frame = _diabetes()
    frame[frame["Outcome"] == 1].to_csv(folder / "one_class.csv", index=False)


def _all_missing(folder: Path) -> None:
    frame = _diabetes()
    frame["Insulin"] = np.nan
    frame.to_csv(folder / "no_insulin.csv", index=False)


def _typo(folder: Path) -> None:
    frame = _diabetes().astype({"Glucose": object})
    frame.loc[41, "Glucose"] = "abc"
    frame.to_csv(folder / "typo.csv", index=False)


def _duplicate_header(folder: Path) -> None:
    lines = DIABETES_CSV.read_text().splitlines(keepends=True)
    (folder / "dupes.csv").write_text(lines[0].replace("Age", "BMI") + "".join(lines[1:]))


def _copy(folder: Path) -> None:
    (folder / "data.csv").write_text(DIABETES_CSV.read_text())


def _no_target_values(folder: Path) -> None:
    frame = _diabetes()
    frame["Outcome"] = np.nan
    frame.to_csv(folder / "no_outcome.csv", index=False)


def _latin1(folder: Path) -> None:
    # A spreadsheet's "CSV" in Windows-1252: the accented byte 0xe9 on line 3 is not UTF-8.
    (folder / "latin.csv").write_bytes("city,size,y\nParis,1,0\nCréteil,2,1\nLyon,3,0\n".encode("cp1252"))


def _empty_parquet(folder: Path) -> None:
    (folder / "empty.parquet").write_bytes(b"")


def _nested_parquet(folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 40
    pq.write_table(pa.table({"x": np.arange(n, dtype=float), "tags": [["a", "b"]] * n, "where": [{"lat": 1.0}] * n,
                             "counts": pa.array([[("a", 1)]] * n, type=pa.map_(pa.string(), pa.int64())),
                             "y": np.arange(n) % 2}), folder / "nested.parquet")


def _infinite_feature(folder: Path) -> None:
    frame = _diabetes().astype({"Glucose": float})
    frame.loc[[3, 9], "Glucose"] = [np.inf, -np.inf]
    frame.to_csv(folder / "inf.csv", index=False)  # written as "inf" and "-inf", which CSV readers parse


def _infinite_target(folder: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    y[7] = np.inf
    pd.DataFrame({"x": rng.normal(size=50), "y": y}).to_csv(folder / "inf_target.csv", index=False)


def _empty_npz(folder: Path) -> None:
    (folder / "images.npz").write_bytes(b"")


#: A file name longer than the file system's 255 bytes: looking it up raises ENAMETOOLONG, not "not found".
LONG_NAME = "a" * 300 + ".csv"


def _many_classes(folder: Path) -> None:
    rng = np.random.default_rng(0)
    pd.DataFrame({"x": rng.normal(size=20_000), "label": [f"c{i % 10_000}" for i in range(20_000)]}).to_csv(
        folder / "labels.csv", index=False)


#: name → (write files, CLI arguments, fragments the one-line message must contain).
BAD_INPUTS: dict[str, tuple[Callable[[Path], None], list[str], list[str]]] = {
    "unknown-name": (_no_files, ["no-such-dataset"],
                     ["'no-such-dataset'", "diabetes", "diabetes-progression", "titanic"]),
    "missing-file": (_no_files, ["missing.csv", "--target", "y"], ["missing.csv", "not found"]),
    "binary-garbage": (_garbage, ["garbage.csv", "--target", "y"], ["garbage.csv", "cannot be read"]),
    "directory": (_directory, ["folder.csv", "--target", "y"], ["folder.csv", "folder"]),
    "unknown-target": (_no_files, ["diabetes", "--target", "Nope"], ["'Nope'", "not found", *DIABETES_COLUMNS]),
    "empty-file": (_empty, ["empty.csv", "--target", "Outcome"], ["empty.csv", "empty"]),
    "header-only": (_header_only, ["header.csv", "--target", "Outcome"], ["header.csv", "no data rows"]),
    "one-class": (_one_class, ["one_class.csv", "--target", "Outcome"],
                  ["one_class.csv", "'Outcome'", "single value (1)"]),
    "all-missing-column": (_all_missing, ["no_insulin.csv", "--target", "Outcome"],
                           ["no_insulin.csv", "'Insulin'", "empty in every row"]),
    "numeric-typo": (_typo, ["typo.csv", "--target", "Outcome"], ["typo.csv", "'Glucose'", "'abc'", "row 42"]),
    "duplicate-header": (_duplicate_header, ["dupes.csv", "--target", "Outcome"], ["dupes.csv", "duplicate", "BMI"]),
    "no-target-for-file": (_copy, ["data.csv"], ["data.csv", "--target"]),
    "all-missing-target": (_no_target_values, ["no_outcome.csv", "--target", "Outcome"],
                           ["no_outcome.csv", "target column 'Outcome' is empty"]),
    "not-utf8": (_latin1, ["latin.csv", "--target", "y"], ["latin.csv", "cannot be read", "line 3", "not UTF-8"]),
    "empty-parquet": (_empty_parquet, ["empty.parquet", "--target", "y"], ["empty.parquet", "empty"]),
    "too-many-classes": (_many_classes, ["labels.csv", "--target", "label"],
                         ["labels.csv", "'label'", "10,000 classes", "too many for classification",
                          "--task regression"]),
    "nested-parquet": (_nested_parquet, ["nested.parquet", "--target", "y"],
                       ["nested.parquet", "'tags' (list), 'where' (struct), 'counts' (map)", "flatten", "drop"]),
    "infinite-feature": (_infinite_feature, ["inf.csv", "--target", "Outcome"],
                         ["inf.csv", "'Glucose'", "infinite", "in 2 row(s), the first in row 4"]),
    "infinite-target": (_infinite_target, ["inf_target.csv", "--target", "y"],
                        ["inf_target.csv", "'y'", "infinite", "in 1 row(s), the first in row 8"]),
    "empty-npz": (_empty_npz, ["images.npz"], ["images.npz", "not a whole .npz archive", "numpy.savez"]),
    "path-too-long": (_no_files, [LONG_NAME, "--target", "y"], [LONG_NAME, "File name too long", "shorter"]),
}
#: Bad arguments that never reach ``automl.data``: checked through the CLI only.
BAD_ARGUMENTS: dict[str, tuple[Callable[[Path], None], list[str], list[str]]] = {
    "unknown-sort-metric": (_no_files, ["diabetes", "--sort-metric", "f1"], ["--sort-metric", "'f1'", "auc"]),
    "zero-runtime": (_no_files, ["diabetes", "--max-runtime-secs", "0"], ["--max-runtime-secs", "0"]),
    "negative-runtime": (_no_files, ["diabetes", "--max-runtime-secs=-5"], ["--max-runtime-secs", "-5"]),
    "infinite-runtime": (_no_files, ["diabetes", "--max-runtime-secs", "inf"], ["--max-runtime-secs", "finite", "inf"]),
    "nan-runtime": (_no_files, ["diabetes", "--max-runtime-secs", "nan"], ["--max-runtime-secs", "nan"]),
    "infinite-model-runtime": (_no_files, ["diabetes", "--max-runtime-secs-per-model", "inf"],
                               ["--max-runtime-secs-per-model", "finite", "inf"]),
    "negative-seed": (_no_files, ["diabetes", "--seed=-1"], ["--seed", "between 0 and", "seed=-1"]),
    # argparse's own errors: one line too, without its usage lines.
    "unknown-task-flag": (_no_files, ["diabetes", "--task", "clustering"], ["--task", "'clustering'", "--help"]),
    "seed-not-a-number": (_no_files, ["diabetes", "--seed", "abc"], ["--seed", "'abc'"]),
}
CLI_CASES = {**BAD_INPUTS, **BAD_ARGUMENTS}


def _load_args(args: list[str]) -> tuple[str, str | None]:
    target = args[args.index("--target") + 1] if "--target" in args else None
    return args[0], target


# -- library level ------------------------------------------------------------------------------
@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_raises_one_line_input_error(case, tmp_path, monkeypatch):
    write, args, fragments = BAD_INPUTS[case]
    write(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as info:
        load(*_load_args(args))
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_unknown_target_in_a_file_lists_its_columns(tmp_path):
    path = tmp_path / "titanic.csv"
    path.write_text(TITANIC_CSV.read_text())
    with pytest.raises(InputError, match="'survived' not found; columns are: PassengerId, Survived, Pclass"):
        load(str(path), target="survived")


def test_target_with_missing_values_and_one_class(tmp_path):
    frame = _diabetes()
    frame["Outcome"] = frame["Outcome"].where(frame["Outcome"] == 0)  # zeros and blanks only
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(InputError, match=r"single value \(0\.0\)"):
        load(str(tmp_path / "d.csv"), target="Outcome")


def test_duplicate_header_with_a_byte_order_mark_is_caught(tmp_path):
    # Spreadsheet programs write a UTF-8 BOM; it must not hide a duplicate first column.
    text = "a,a,y\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(10))
    (tmp_path / "bom.csv").write_bytes(text.encode("utf-8-sig"))
    with pytest.raises(InputError, match=r"duplicate column names \['a'\]"):
        load(str(tmp_path / "bom.csv"), target="y")


def test_ragged_csv_and_garbage_parquet_cannot_be_read(tmp_path):
    (tmp_path / "ragged.csv").write_text("a,b,y\n1,2,1\n3,4,0,5,6\n")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not a parquet file")
    for name in ("ragged.csv", "broken.parquet"):
        with pytest.raises(InputError, match=rf"{name}: cannot be read as a table"):
            load(str(tmp_path / name), target="y")


def test_too_many_classes_depends_on_rows_per_class_and_task(tmp_path):
    labels = [f"c{i % 300}" for i in range(500)]  # under 1,000 classes, but fewer than 2 rows per class
    pd.DataFrame({"x": np.arange(500.0), "label": labels}).to_csv(tmp_path / "few.csv", index=False)
    with pytest.raises(InputError, match="300 classes in 500 rows"):
        load(str(tmp_path / "few.csv"), target="label")
    numbers = pd.DataFrame({"x": np.arange(500.0), "y": np.arange(500) % 300})
    numbers.to_csv(tmp_path / "numbers.csv", index=False)
    assert load(str(tmp_path / "numbers.csv"), target="y").frame.shape == (500, 2)  # a regression target
    with pytest.raises(InputError, match="300 classes in 500 rows"):
        load(str(tmp_path / "numbers.csv"), target="y", task="multiclass")


def test_unknown_task_is_rejected():
    with pytest.raises(InputError, match="unknown task 'clustering'"):
        load("diabetes", task="clustering")


def test_a_mostly_text_column_is_categorical_not_a_typo(tmp_path):
    # Below the numeric share (95%) a column with numbers and words is a category, not a typo.
    frame = _diabetes().astype({"Age": object})
    frame.loc[frame.index[:100], "Age"] = "unknown"
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert load(str(tmp_path / "d.csv"), target="Outcome").frame.shape == (768, 9)


# -- the same inputs through the real CLI ---------------------------------------------------------
def _run_cli(folder: Path, case: str) -> tuple[subprocess.CompletedProcess, Path]:
    write, args, _ = CLI_CASES[case]
    folder.mkdir()
    write(folder)
    out = folder / "out"
    proc = subprocess.run([sys.executable, "-m", "automl.run", *args, "--output", str(out)], cwd=folder,
                          env=_cli_env(), capture_output=True, text=True, timeout=120)
    return proc, out


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every bad-input command, run concurrently: each takes about a second of imports."""
    root = tmp_path_factory.mktemp("cli")
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {case: pool.submit(_run_cli, root / case, case) for case in CLI_CASES}
        return {case: future.result() for case, future in futures.items()}


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_rejects_bad_input_with_one_error_line(case, cli_results):
    proc, out = cli_results[case]
    fragments = CLI_CASES[case][2]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert not out.exists()
    assert proc.stdout == ""


# A built-in card's message names its file, whose folder differs between a checkout and a wheel.
@pytest.mark.parametrize("case", [c for c, (_, args, _) in BAD_INPUTS.items() if args[0] not in builtin_cards()])
def test_cli_prints_the_library_message(case, cli_results, tmp_path, monkeypatch):
    proc, out = cli_results[case]
    write, args, _ = BAD_INPUTS[case]
    write(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as info:
        load(*_load_args(args))
    # The run's config holds the file's absolute path (worker processes may start elsewhere).
    assert proc.stderr.strip().replace(f"{out.parent}{os.sep}", "") == f"error: {info.value}"


# -- good inputs ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "shape", "target", "task"), [
    ("diabetes", (768, 9), "Outcome", "binary"),
    ("titanic", (891, 12), "Survived", "binary"),
    ("diabetes-progression", (442, 11), "target", "regression"),
])
def test_builtin_cards_load(name, shape, target, task):
    ds = load(name)
    assert ds.frame.shape == shape
    assert ds.target == target and ds.card.task == task and ds.card.name == name
    assert ds.frame[target].notna().all()
    assert len(ds.fingerprint) == 16


def test_diabetes_card_rules():
    card = load("diabetes").card
    assert card.zero_means_missing == ("Glucose", "BloodPressure", "SkinThickness", "Insulin", "BMI")
    assert "Pregnancies" not in card.zero_means_missing
    assert load("titanic").card.drop == ("PassengerId", "Name", "Ticket")


def test_target_override_on_a_builtin_card():
    ds = load("titanic", target="Pclass", task="multiclass")
    assert ds.target == "Pclass" and ds.card.task == "multiclass"


def test_csv_file_with_target(tmp_path):
    path = tmp_path / "My Titanic.csv"
    path.write_text(TITANIC_CSV.read_text())
    ds = load(str(path), target="Survived")
    assert ds.frame.shape == (891, 12)
    assert ds.card.name == "my-titanic" and ds.card.task is None
    assert ds.source == str(path)


def test_parquet_file_matches_the_csv(tmp_path):
    frame = _diabetes()
    frame.to_csv(tmp_path / "pima.csv", index=False)
    frame.to_parquet(tmp_path / "pima.parquet", index=False)
    from_csv = load(str(tmp_path / "pima.csv"), target="Outcome")
    from_parquet = load(str(tmp_path / "pima.parquet"), target="Outcome")
    pd.testing.assert_frame_equal(from_parquet.frame, from_csv.frame)
    assert from_parquet.fingerprint == from_csv.fingerprint


def test_fingerprint_is_stable_for_the_same_data(tmp_path):
    assert load("diabetes").fingerprint == load("diabetes").fingerprint
    (tmp_path / "b").mkdir()
    _diabetes().to_csv(tmp_path / "a.csv", index=False)
    _diabetes().to_csv(tmp_path / "b" / "a.csv", index=False)
    assert (load(str(tmp_path / "a.csv"), target="Outcome").fingerprint
            == load(str(tmp_path / "b" / "a.csv"), target="Outcome").fingerprint)


def test_fingerprint_changes_with_data_and_card(tmp_path):
    base = load("diabetes").fingerprint
    frame = _diabetes()
    frame.to_csv(tmp_path / "d.csv", index=False)
    plain = load(str(tmp_path / "d.csv"), target="Outcome")
    frame.loc[0, "Glucose"] += 1
    frame.to_csv(tmp_path / "d.csv", index=False)
    changed_value = load(str(tmp_path / "d.csv"), target="Outcome")
    renamed = _diabetes().rename(columns={"Age": "Years"})
    renamed.to_csv(tmp_path / "d.csv", index=False)
    changed_name = load(str(tmp_path / "d.csv"), target="Outcome")
    fingerprints = {base, plain.fingerprint, changed_value.fingerprint, changed_name.fingerprint,
                    load("diabetes", task="multiclass").fingerprint, load("diabetes", target="Glucose").fingerprint}
    assert len(fingerprints) == 6


# -- pyarrow ingest: compact dtypes, exact targets, any separator -----------------------------------
MIXED_CSV = """\
count,price,city,when,member,note,y
1,2.5,Paris,2024-02-29,true,,3
2,,Lyon,2023-12-31,false,a,1
,4.25,,2013-01-01,,b,2
4,8.0,Paris,,true,c,1
"""


def test_mixed_types_are_read_compactly(tmp_path):
    (tmp_path / "mixed.csv").write_text(MIXED_CSV)
    frame = load(str(tmp_path / "mixed.csv"), target="y").frame
    assert list(frame.columns) == ["count", "price", "city", "when", "member", "note", "y"]
    for col in ("count", "price", "member"):  # integers, floats and booleans are float32 features
        assert frame[col].dtype == np.float32, col
    np.testing.assert_array_equal(frame["count"], [1, 2, np.nan, 4])
    np.testing.assert_array_equal(frame["price"], [2.5, np.nan, 4.25, 8.0])
    np.testing.assert_array_equal(frame["member"], [1, 0, np.nan, 1])
    assert isinstance(frame["city"].dtype, pd.CategoricalDtype)
    assert frame["city"].tolist()[:2] == ["Paris", "Lyon"] and frame["city"].isna().tolist() == [0, 0, 1, 0]
    assert frame["note"].isna().tolist() == [1, 0, 0, 0]  # an empty text cell is missing, not ""
    assert pd.api.types.is_datetime64_any_dtype(frame["when"])
    assert frame["when"].tolist()[:3] == [pd.Timestamp("2024-02-29"), pd.Timestamp("2023-12-31"),
                                          pd.Timestamp("2013-01-01")] and pd.isna(frame["when"].iloc[3])
    assert frame["y"].dtype == np.int64 and frame["y"].tolist() == [3, 1, 2, 1]


@pytest.mark.parametrize("late", ["none", "decimals", "text"])
def test_a_csv_read_in_blocks_equals_the_csv_read_at_once(tmp_path, monkeypatch, late):
    """A large CSV is parsed and converted block by block; a later block that does not fit the types inferred
    from the first (decimals after integers, text after numbers) falls back to reading the whole file."""
    from automl import tables

    rng = np.random.default_rng(0)
    n = 3000
    frame = pd.DataFrame({"count": rng.integers(0, 9, n).astype(object), "price": rng.normal(size=n).round(3),
                          "city": rng.choice(["Paris", "Lyon", None], n), "y": rng.integers(0, 2, n)})
    if late != "none":
        frame.loc[n - 1, "count"] = 2.5 if late == "decimals" else "many"
    path = tmp_path / "blocks.csv"
    frame.to_csv(path, index=False)
    whole = tables.read_table(path, "y")
    monkeypatch.setattr(tables, "STREAM_CSV_BYTES", 0)
    monkeypatch.setattr(tables, "CSV_BLOCK_BYTES", 4096)  # ~20 blocks
    blocks = tables.read_table(path, "y")
    pd.testing.assert_frame_equal(blocks, whole)
    assert blocks["price"].dtype == np.float32 and isinstance(blocks["city"].dtype, pd.CategoricalDtype)
    assert blocks["count"].dtype == (np.float32 if late != "text" else "category")
    assert blocks["y"].dtype == np.int64 and blocks["y"].tolist() == frame["y"].tolist()


def test_targets_keep_their_exact_values(tmp_path):
    values = [0.1, 1 / 3, 123456789.123, 2.0] * 5
    frame = pd.DataFrame({"x": range(20), "real": values, "label": ["yes", "no"] * 10})
    frame.to_csv(tmp_path / "t.csv", index=False)
    real = load(str(tmp_path / "t.csv"), target="real").frame
    assert real["real"].dtype == np.float64 and real["real"].tolist() == values  # float32 would round these
    assert real["label"].dtype == "category"  # a feature here ...
    label = load(str(tmp_path / "t.csv"), target="label").frame["label"]
    assert not isinstance(label.dtype, pd.CategoricalDtype) and label.tolist() == ["yes", "no"] * 10  # ... not here


def test_semicolons_byte_order_mark_and_decimal_commas(tmp_path):
    # What a spreadsheet in a European locale saves as "CSV UTF-8".
    text = "name;weight;y\r\n" + "".join(f"n{i};{i},5;{i % 2}\r\n" for i in range(12))
    (tmp_path / "excel.csv").write_bytes(text.encode("utf-8-sig"))
    frame = load(str(tmp_path / "excel.csv"), target="y").frame
    assert list(frame.columns) == ["name", "weight", "y"]
    assert frame["weight"].dtype == np.float32 and frame["weight"].tolist()[:3] == [0.5, 1.5, 2.5]
    assert frame["name"].iloc[0] == "n0"


@pytest.mark.parametrize(("separator", "name"), [("\t", "tabs.tsv"), ("|", "pipes.csv")])
def test_other_separators(tmp_path, separator, name):
    frame = _diabetes()
    frame.to_csv(tmp_path / name, index=False, sep=separator)
    loaded = load(str(tmp_path / name), target="Outcome").frame
    assert list(loaded.columns) == DIABETES_COLUMNS
    np.testing.assert_array_equal(loaded["BMI"], frame["BMI"].astype("float32"))


def test_quoted_line_breaks(tmp_path):
    (tmp_path / "notes.csv").write_text('note,x,y\n"two\nlines",1,0\nplain,2,1\n"a, b",3,0\n')
    frame = load(str(tmp_path / "notes.csv"), target="y").frame
    assert frame["note"].tolist() == ["two\nlines", "plain", "a, b"] and frame["x"].tolist() == [1, 2, 3]


def test_loaded_table_is_at_most_twice_its_float32_size(tmp_path):
    rng = np.random.default_rng(0)
    n = 5_000
    frame = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(10)})
    for j in range(3):
        frame[f"c{j}"] = [f"level{k}" for k in rng.integers(0, 50, n)]
    frame["y"] = rng.integers(0, 2, n)
    frame.to_csv(tmp_path / "wide.csv", index=False)
    loaded = load(str(tmp_path / "wide.csv"), target="y").frame
    float32_size = loaded.shape[0] * loaded.shape[1] * 4
    assert loaded.memory_usage(deep=True).sum() <= 2 * float32_size
    assert frame.memory_usage(deep=True).sum() > 2 * float32_size  # what pandas alone would hold


def test_parquet_timestamps_and_in_memory_frames_are_compacted_alike(tmp_path):
    frame = pd.DataFrame({"when": pd.date_range("2024-01-01", periods=30, freq="37h", tz="UTC"),
                          "n": np.arange(30) % 7, "city": ["Oslo", "Rome", "Lima"] * 10, "y": [0, 1] * 15})
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    from_file = load(str(tmp_path / "t.parquet"), target="y")
    from_memory = from_frame(frame, "t", target="y")
    when = from_file.frame["when"].dtype
    assert isinstance(when, pd.DatetimeTZDtype) and str(when.tz) == "UTC"
    assert from_file.frame["n"].dtype == np.float32 and from_file.frame["city"].dtype == "category"
    pd.testing.assert_frame_equal(from_memory.frame, from_file.frame, check_categorical=False)
    assert from_memory.fingerprint == from_file.fingerprint


def test_fingerprint_ignores_the_order_of_categories():
    frame = pd.DataFrame({"city": ["Oslo", "Rome", "Lima", "Oslo"], "y": [0, 1, 0, 1]})
    reordered = frame.astype({"city": pd.CategoricalDtype(["Rome", "Oslo", "Lima"])})
    assert from_frame(frame, "t", "y").fingerprint == from_frame(reordered, "t", "y").fingerprint
    changed = frame.assign(city=["Oslo", "Rome", "Lima", "Rome"])
    assert from_frame(changed, "t", "y").fingerprint != from_frame(frame, "t", "y").fingerprint


def test_in_memory_frame_with_duplicate_columns(tmp_path):
    frame = pd.DataFrame([[1, 2, 0], [3, 4, 1]], columns=["a", "a", "y"])
    with pytest.raises(InputError, match=r"DataFrame: duplicate column names \['a'\]"):
        from_frame(frame, "t", "y")
