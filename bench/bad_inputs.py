"""Bad inputs: every one must end the real CLI with one ``error:`` line, exit code 2, no traceback, nothing written.

Each case builds its input in a folder of its own (under a temporary folder) and runs
``python -m automl.run ARGS --max-runtime-secs 10 --output out`` there, in a child process (``CI=true``, a
``PREFECT_HOME`` and ``KERAS_HOME`` of its own, no ``PREFECT_API_URL`` unless one is set: the run would start
its temporary server; bad input must fail before it is needed, or without waiting for it). A case that names its
own ``--max-runtime-secs`` or ``--output`` keeps them. It prints one JSON line per case on stdout::

    {"case", "exit_code", "line", "traceback", "files_left", "wall_s", "ok"}

``line``: the run's first ``error:`` line (stderr and stdout), else its last line; ``traceback``: whether
``Traceback`` appears anywhere in it; ``files_left``: files the run created or changed in the case's folder
(its output folder included, the input files excepted); ``ok``: exit code 2, exactly one line of output
starting ``error: ``, no traceback and no files left. A final line sums up:
``{"summary": {"cases", "ok", "failed": [names]}}``; the exit status is 0 when every case is ok. Progress goes
to stderr.

The cases (``--list`` prints them):

- data files: ``missing-file``, ``unknown-name``, ``directory``, ``empty-csv``, ``header-only``, ``garbage-csv``
  (binary bytes), ``ragged-csv``, ``not-utf8``, ``duplicate-header``, ``garbage-parquet``, ``empty-parquet``,
  ``nested-parquet`` (list, struct and map columns), ``path-too-long`` (a 300-character file name:
  ENAMETOOLONG), ``empty-npz``, ``truncated-npz``, ``npz-without-x``, ``folder-without-images``;
- columns and target: ``no-target``, ``unknown-target``, ``one-class``, ``all-missing-target``,
  ``all-missing-column``, ``numeric-typo``, ``too-many-classes``, ``text-regression-target`` (``--task
  regression`` on text), ``three-classes-binary`` (``--task binary``), ``inf-feature``, ``inf-target``;
- options: ``unknown-sort-metric``, ``zero-runtime``, ``negative-runtime``, ``inf-runtime``, ``nan-runtime``,
  ``inf-model-runtime``, ``nan-model-runtime``, ``negative-model-runtime``, ``negative-seed``, ``huge-seed``,
  ``nfolds-1``, ``negative-max-models``, ``zero-workers``, ``unknown-algo``, ``include-and-exclude``,
  ``unknown-task``, ``seed-not-a-number``, ``no-dataset`` (argparse's own errors, one line too);
- the output folder: ``output-is-a-file``, ``output-below-a-file``, ``output-unwritable`` (``/proc/...`` as
  root, whom permissions do not stop; a read-only folder otherwise).

Inputs that are not errors but once failed silently (column names LightGBM refuses, a date ``d`` beside a column
``d_year``) train; ``tests/test_models.py`` and ``tests/test_preprocess.py`` check them.

    python bench/bad_inputs.py [--cases CASE,...] [--timeout S] [--list] > bad_inputs.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import ROOT, child_env, log

DIABETES_CSV = ROOT / "datasets" / "diabetes.csv"
#: The options every case gets unless it names them: a tiny budget and an output folder of its own.
DEFAULT_BUDGET = ("--max-runtime-secs", "10")
OUTPUT = "out"
#: A case that runs longer has missed its error: it is killed and not ok.
DEFAULT_TIMEOUT_S = 120.0

Build = Callable[[Path], list[str]]


# ---- the inputs: each writes its files into the case's folder and returns the CLI's arguments ----------------

def _file(folder: Path, name: str, content: str | bytes) -> str:
    """Write ``name`` in ``folder``; its name."""
    path = folder / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return name


def _folder(folder: Path, name: str) -> str:
    (folder / name).mkdir(parents=True)
    return name.split("/")[0]


def _diabetes_rows() -> list[str]:
    return DIABETES_CSV.read_text().splitlines(keepends=True)


def _write_diabetes(folder: Path, name: str, edit: Callable[[list[list[str]]], None] | None = None) -> str:
    """diabetes.csv as ``name``, its rows (header first, as lists of fields) changed by ``edit``."""
    rows = [line.rstrip("\n").split(",") for line in _diabetes_rows()]
    if edit is not None:
        edit(rows)
    (folder / name).write_text("".join(",".join(row) + "\n" for row in rows))
    return name


def _set(column: str, rows_and_values: dict[int, str]) -> Callable[[list[list[str]]], None]:
    """An edit of diabetes rows: ``column`` gets these values in these data rows (1 = the first data row)."""
    def edit(rows: list[list[str]]) -> None:
        at = rows[0].index(column)
        for row, value in rows_and_values.items():
            rows[row][at] = value
    return edit


def _only_outcome(value: str) -> Callable[[list[list[str]]], None]:
    def edit(rows: list[list[str]]) -> None:
        rows[1:] = [row for row in rows[1:] if row[-1] == value]
    return edit


def _blank(column: str) -> Callable[[list[list[str]]], None]:
    def edit(rows: list[list[str]]) -> None:
        at = rows[0].index(column)
        for row in rows[1:]:
            row[at] = ""
    return edit


def _small_table(folder: Path, name: str, target: list[str], rows: int = 60) -> str:
    """A CSV of two number columns and ``target`` (cycled over the rows)."""
    lines = ["a,b,y\n"] + [f"{i * 0.37 % 5:.3f},{i * 1.3 % 7:.3f},{target[i % len(target)]}\n" for i in range(rows)]
    (folder / name).write_text("".join(lines))
    return name


def _parquet(folder: Path, name: str, columns: dict[str, object]) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), folder / name)
    return name


def _nested_parquet(folder: Path) -> list[str]:
    import pyarrow as pa

    n = 40
    return [_parquet(folder, "nested.parquet", {
        "x": pa.array([float(i) for i in range(n)]), "tags": pa.array([["a", "b"]] * n),
        "where": pa.array([{"lat": 1.0, "lon": 2.0}] * n),
        "counts": pa.array([[("a", 1)]] * n, type=pa.map_(pa.string(), pa.int64())),
        "y": pa.array([i % 2 for i in range(n)])}), "--target", "y"]


def _npz(folder: Path, name: str, keep: float = 1.0, **arrays: object) -> str:
    import numpy as np

    np.savez(folder / name, **arrays)
    whole = (folder / name).read_bytes()
    (folder / name).write_bytes(whole[:int(len(whole) * keep)])
    return name


def _digits(n: int = 40) -> dict[str, object]:
    import numpy as np

    rng = np.random.default_rng(0)
    return {"x": rng.random((n, 8, 8)), "y": np.arange(n) % 2}


def _output_below_a_file(folder: Path) -> list[str]:
    (folder / "results.csv").write_text("keep me\n")
    return ["diabetes", "--output", "results.csv/run"]


def _output_is_a_file(folder: Path) -> list[str]:
    (folder / "results.csv").write_text("keep me\n")
    return ["diabetes", "--output", "results.csv"]


def _output_unwritable(folder: Path) -> list[str]:
    if os.geteuid() == 0:  # root writes through any permission bits, but not into /proc
        return ["diabetes", "--output", "/proc/automl-bad-inputs"]
    (folder / "read-only").mkdir()
    (folder / "read-only").chmod(0o555)
    return ["diabetes", "--output", "read-only/run"]


CASES: dict[str, Build] = {
    # data files
    "missing-file": lambda f: ["missing.csv", "--target", "y"],
    "unknown-name": lambda f: ["no-such-dataset"],
    "directory": lambda f: [_folder(f, "folder.csv"), "--target", "y"],
    "empty-csv": lambda f: [_file(f, "empty.csv", b""), "--target", "y"],
    "header-only": lambda f: [_file(f, "header.csv", _diabetes_rows()[0]), "--target", "Outcome"],
    "garbage-csv": lambda f: [_file(f, "garbage.csv", b"\x89PNG\r\n\x1a\n\x00\x00\rIHDR\xff\xfe" * 8), "--target", "y"],
    "ragged-csv": lambda f: [_file(f, "ragged.csv", "a,b,y\n1,2,1\n3,4,0,5,6\n"), "--target", "y"],
    "not-utf8": lambda f: [_file(f, "latin.csv", "city,size,y\nParis,1,0\nCréteil,2,1\n".encode("cp1252")),
                           "--target", "y"],
    "duplicate-header": lambda f: [_write_diabetes(f, "dupes.csv", lambda rows: rows[0].__setitem__(7, "BMI")),
                                   "--target", "Outcome"],
    "garbage-parquet": lambda f: [_file(f, "broken.parquet", b"PAR1 not a parquet file"), "--target", "y"],
    "empty-parquet": lambda f: [_file(f, "empty.parquet", b""), "--target", "y"],
    "nested-parquet": _nested_parquet,
    "path-too-long": lambda f: ["a" * 300 + ".csv", "--target", "y"],
    "empty-npz": lambda f: [_file(f, "images.npz", b"")],
    "truncated-npz": lambda f: [_npz(f, "images.npz", keep=0.6, **_digits())],
    "npz-without-x": lambda f: [_npz(f, "images.npz", images=_digits()["x"])],
    "folder-without-images": lambda f: [_folder(f, "images/a")],
    # columns and target
    "no-target": lambda f: [_write_diabetes(f, "data.csv")],
    "unknown-target": lambda f: ["diabetes", "--target", "Nope"],
    "one-class": lambda f: [_write_diabetes(f, "one_class.csv", _only_outcome("1")), "--target", "Outcome"],
    "all-missing-target": lambda f: [_write_diabetes(f, "no_outcome.csv", _blank("Outcome")), "--target", "Outcome"],
    "all-missing-column": lambda f: [_write_diabetes(f, "no_insulin.csv", _blank("Insulin")), "--target", "Outcome"],
    "numeric-typo": lambda f: [_write_diabetes(f, "typo.csv", _set("Glucose", {42: "abc"})), "--target", "Outcome"],
    "too-many-classes": lambda f: [_small_table(f, "labels.csv", [f"c{i}" for i in range(2000)], rows=3000),
                                   "--target", "y"],
    "text-regression-target": lambda f: [_small_table(f, "colours.csv", ["red", "green", "blue"]), "--target", "y",
                                         "--task", "regression"],
    "three-classes-binary": lambda f: [_small_table(f, "three.csv", ["a", "b", "c"]), "--target", "y", "--task",
                                       "binary"],
    "inf-feature": lambda f: [_write_diabetes(f, "inf.csv", _set("Glucose", {4: "inf", 10: "-inf"})), "--target",
                              "Outcome"],
    "inf-target": lambda f: [_small_table(f, "inf_target.csv", ["1.5", "2.5", "inf", "0.5", "3.0"]), "--target", "y"],
    # options
    "unknown-sort-metric": lambda f: ["diabetes", "--sort-metric", "f1"],
    "zero-runtime": lambda f: ["diabetes", "--max-runtime-secs", "0"],
    "negative-runtime": lambda f: ["diabetes", "--max-runtime-secs=-5"],
    "inf-runtime": lambda f: ["diabetes", "--max-runtime-secs", "inf"],
    "nan-runtime": lambda f: ["diabetes", "--max-runtime-secs", "nan"],
    "inf-model-runtime": lambda f: ["diabetes", "--max-runtime-secs-per-model", "inf"],
    "nan-model-runtime": lambda f: ["diabetes", "--max-runtime-secs-per-model", "nan"],
    "negative-model-runtime": lambda f: ["diabetes", "--max-runtime-secs-per-model=-1"],
    "negative-seed": lambda f: ["diabetes", "--seed=-1"],
    "huge-seed": lambda f: ["diabetes", "--seed", str(2**32)],
    "nfolds-1": lambda f: ["diabetes", "--nfolds", "1"],
    "negative-max-models": lambda f: ["diabetes", "--max-models=-1"],
    "zero-workers": lambda f: ["diabetes", "--workers", "0"],
    "unknown-algo": lambda f: ["diabetes", "--include-algos", "XGBoost"],
    "include-and-exclude": lambda f: ["diabetes", "--include-algos", "GLM", "--exclude-algos", "GBM"],
    "unknown-task": lambda f: ["diabetes", "--task", "clustering"],
    "seed-not-a-number": lambda f: ["diabetes", "--seed", "abc"],
    "no-dataset": lambda f: ["--target", "y"],
    # the output folder
    "output-is-a-file": _output_is_a_file,
    "output-below-a-file": _output_below_a_file,
    "output-unwritable": _output_unwritable,
}


# ---- running one case ------------------------------------------------------------------------------------------

def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` (relative path → size and modification time)."""
    files = {}
    for path in folder.rglob("*"):
        if path.is_file() or path.is_symlink():
            stat = path.lstat()
            files[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns)
    return files


def run_case(name: str, build: Build, root: Path, timeout: float) -> dict[str, object]:
    """Build the case's input in ``root/name``, run the CLI on it there, and say whether it failed as it should."""
    folder = root / name
    folder.mkdir()
    args = build(folder)
    if not any(a.startswith("--max-runtime-secs") and not a.startswith("--max-runtime-secs-") for a in args):
        args += DEFAULT_BUDGET
    if "--output" not in args:
        args += ["--output", OUTPUT]
    before = _snapshot(folder)
    env = child_env(root / f"{name}.homes")  # Prefect's and Keras' homes outside the inspected folder
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "automl.run", *args], cwd=folder, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        exit_code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and whatever it started (its Prefect server, its workers)
        stdout, stderr = proc.communicate()
        exit_code = None
    wall = time.monotonic() - start
    output = [line for line in (stderr + stdout).splitlines() if line.strip()]
    after = _snapshot(folder)
    left = sorted(path for path, stamp in after.items() if before.get(path) != stamp)
    one_line = len(output) == 1 and output[0].startswith("error: ")
    traceback = "Traceback" in stderr + stdout
    line = next((text for text in output if text.startswith("error: ")), output[-1] if output else "")
    return {"case": name, "exit_code": exit_code, "line": line,
            "traceback": traceback, "files_left": left, "wall_s": round(wall, 1),
            "ok": exit_code == 2 and one_line and not traceback and not left}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cases", help=f"comma-separated, from: {', '.join(CASES)} (default: all)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help=f"seconds a case may run before it is killed and counted a failure "
                             f"(default {DEFAULT_TIMEOUT_S:.0f})")
    parser.add_argument("--list", action="store_true", help="print the case names and stop")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(CASES))
        return 0
    names = [n.strip() for n in args.cases.split(",")] if args.cases else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; see --list")
    failed = []
    with tempfile.TemporaryDirectory(prefix="automl-bad-inputs-") as tmp:
        for i, name in enumerate(names, 1):
            result = run_case(name, CASES[name], Path(tmp), args.timeout)
            print(json.dumps(result), flush=True)
            log(f"[{i}/{len(names)}] {name}: {'ok' if result['ok'] else 'NOT OK'} ({result['wall_s']}s) "
                f"{result['line']}")
            if not result["ok"]:
                failed.append(name)
    print(json.dumps({"summary": {"cases": len(names), "ok": len(names) - len(failed), "failed": failed}}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
