"""How the real CLI's cost grows with rows: synthetic tables from 10k to 10M rows, flights, and H2O AutoML.

Every case is a table split 80/20 (``train_test_split(frame, test_size=0.2, stratify=target,
random_state=0)``). ``python -m automl.run TRAIN --target T --max-runtime-secs B --output DIR`` trains on
the 80 % in a child process (``CI=true``, a fresh ``PREFECT_HOME``), while the resident memory of its whole
process tree (the CLI, its trial workers, the Prefect server it starts) is sampled every 0.5 s. Then
``python -m automl.predict DIR/leader TEST`` scores the leader on the 20 % in a fresh process.

Cases:

- ``synth-<rows>`` (``--sizes``, default 10k, 100k, 1M; ``--big`` adds 10M): the synthetic table of
  ``/work/shared/datasets/make_synthetic.py`` (35 features, 5 of them categorical with 50 levels, 3 % blank
  cells, binary ``y``), drawn here by the same recipe, value for value, but with the categoricals built from
  codes and the blanks drawn in row blocks (1M rows: 25 s and 0.9 GB peak on a busy 2-core machine; 10M
  rows about ten times that, so ``--big`` wants some 10 GB free), then cached as CSV.
  Budget: 120 s up to 10k rows, 300 s up to 200k, 900 s up to 1M, 3600 s beyond.
- ``flights`` (``--flights``, 600 s): ``../shared/datasets/flights.parquet`` (nycflights13, 336,776 rows),
  binary target ``arr_delay_gt_15`` = ``arr_delay > 15``; the 9,430 rows without ``arr_delay`` (cancelled or
  diverted) are dropped, and so is every column known only once the plane has left: ``arr_delay``,
  ``dep_delay``, ``arr_time`` and also ``dep_time`` (it minus ``sched_dep_time`` is the departure delay) and
  ``air_time``. ``time_hour`` is kept as a UTC timestamp for the package to turn into date parts.
- ``h2o-<rows>`` (``--h2o``; ``--h2o-rows``, default 200k): H2O AutoML (``bench/h2o_anchor.py``) at the same
  budget on the same split as ``synth-<rows>``, which runs too; a last line sets the two side by side.

``--budget-scale F`` multiplies every budget (a smoke test: ``--sizes 10000 --budget-scale 0.2``).
Generated splits are cached under ``--out`` (``data/``); each case's run folder (``runs/<case>/``: the
CLI's output, its Prefect home, ``stdout.log``, ``stderr.log``, ``preds.csv``) is replaced on every run.

Output: one JSON line per case on stdout (progress goes to stderr). ``rows``/``test_rows``: the split's
sizes; ``wall_s``: the CLI process from start to exit, against ``budget_s`` (``wall_over_budget`` > 1 is
an overrun; ``run_elapsed_s`` is the run's own clock); ``peak_rss_mb``: the process tree's largest sampled
total of resident memory (``peak_by_process``: that total by process kind; it counts the ~460 MB of shared
libraries every TensorFlow process maps once per process), ``peak_pss_mb`` its largest proportional set size
(each shared page once: what the tree holds); ``cpu_s``: its CPU seconds; ``board_rows``/
``families``: the leaderboard; ``protocol``/``nfolds``/``rows_scored``: how its rows were scored;
``leader_metric``/``leader_score``: the leader's board score;
``test_auc``: the leader on the test rows, from ``preds.csv``. A failed run still prints its line, with
``exit_code`` and the last line of its stderr as ``error``, and the benchmark goes on.

    python bench/scale_rows.py [--sizes 10000,100000,1000000] [--big] [--flights] [--h2o] [--h2o-rows N]
                               [--budget-scale F] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import ROOT, Finished, child_env, log, run_sampled

FLIGHTS = ROOT.parent / "shared" / "datasets" / "flights.parquet"
FLIGHTS_TARGET = "arr_delay_gt_15"
FLIGHTS_AFTER_DEPARTURE = ["arr_delay", "dep_delay", "arr_time", "dep_time", "air_time"]
FLIGHTS_BUDGET_S = 600.0
BUDGETS_S = ((10_000, 120.0), (200_000, 300.0), (1_000_000, 900.0))  # (up to this many rows, budget)
BIG_BUDGET_S = 3600.0
BIG_ROWS = 10_000_000
LEVELS = [f"lvl{i}" for i in range(50)]
BLANK_BLOCK_ROWS = 1_000_000


@dataclass(frozen=True)
class Case:
    """One split to run on: where its two halves are, what to predict, how long to take."""

    name: str
    train: Path
    test: Path
    target: str
    budget_s: float


def synthetic_frame(n: int) -> pd.DataFrame:
    """``make_synthetic.py``'s table of ``n`` rows: the same draws in the same order, so the same values."""
    from sklearn.datasets import make_classification

    rng = np.random.default_rng(0)
    x, y = make_classification(n_samples=n, n_features=30, n_informative=12, n_redundant=6, flip_y=0.05,
                               class_sep=0.8, random_state=0)
    codes = []
    for _ in range(5):
        cats = rng.integers(0, 50, n)
        y = np.where(rng.random(n) < 0.1, (cats % 7 == 0).astype(int), y)
        codes.append(cats)
    # The recipe draws the blanks as one (n, 35) array of uniforms; drawn in row blocks the stream is the same.
    blank = np.concatenate([rng.random((min(BLANK_BLOCK_ROWS, n - start), 35)) < 0.03
                            for start in range(0, n, BLANK_BLOCK_ROWS)])
    x[blank[:, :30]] = np.nan
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(30)])
    for j, cats in enumerate(codes):
        frame[f"c{j}"] = pd.Categorical.from_codes(np.where(blank[:, 30 + j], -1, cats), categories=LEVELS)
    frame["y"] = y
    return frame


def flights_frame() -> pd.DataFrame:
    """Flights with the binary target ``arr_delay > 15``, the after-departure columns dropped."""
    frame = pd.read_parquet(FLIGHTS)
    frame = frame[frame["arr_delay"].notna()].reset_index(drop=True)
    frame[FLIGHTS_TARGET] = (frame["arr_delay"] > 15).astype("int8")
    frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True)
    return frame.drop(columns=FLIGHTS_AFTER_DEPARTURE)


def cached_split(folder: Path, suffix: str, target: str, make: Callable[[], pd.DataFrame]) -> tuple[Path, Path]:
    """``folder/train<suffix>`` and ``folder/test<suffix>``: the 80/20 split of ``make()``, made once."""
    from sklearn.model_selection import train_test_split

    train, test = folder / f"train{suffix}", folder / f"test{suffix}"
    if train.exists() and test.exists():
        return train, test
    log(f"writing {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    frame = make()
    halves = train_test_split(frame, test_size=0.2, stratify=frame[target], random_state=0)
    del frame
    for half, path in zip(halves, (train, test), strict=True):
        partial = path.with_name(f".{path.name}.partial")  # a killed run leaves no half-written cache
        if suffix == ".csv":
            half.to_csv(partial, index=False)
        else:
            half.to_parquet(partial, index=False)
        os.replace(partial, path)
    return train, test


def label(rows: int) -> str:
    """10000 → 10k, 1000000 → 1m, 12345 → 12345."""
    for size, unit in ((1_000_000, "m"), (1_000, "k")):
        if rows % size == 0:
            return f"{rows // size}{unit}"
    return str(rows)


def synthetic_budget(rows: int) -> float:
    """The budget of a synthetic table of ``rows`` rows (before ``--budget-scale``)."""
    return next((budget for limit, budget in BUDGETS_S if rows <= limit), BIG_BUDGET_S)


def synthetic_case(rows: int, data: Path, scale: float) -> Case:
    train, test = cached_split(data / f"synth-{rows}", ".csv", "y", lambda: synthetic_frame(rows))
    return Case(f"synth-{label(rows)}", train, test, "y", synthetic_budget(rows) * scale)


def flights_case(data: Path, scale: float) -> Case:
    train, test = cached_split(data / "flights", ".parquet", FLIGHTS_TARGET, flights_frame)
    return Case("flights", train, test, FLIGHTS_TARGET, FLIGHTS_BUDGET_S * scale)


def timeout_for(budget_s: float) -> float:
    """When a run is killed: far past its budget, so overruns are measured rather than cut."""
    return 3 * budget_s + 300


def split_sizes(case: Case) -> dict[str, int]:
    """Rows of each half and feature columns (read from the files, so a cached split reports itself)."""
    import pyarrow.parquet as pq

    def rows(path: Path) -> int:
        if path.suffix == ".parquet":
            return int(pq.ParquetFile(path).metadata.num_rows)
        with open(path, "rb") as fh:
            return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 24), b"")) - 1

    columns = (pq.read_schema(case.train).names if case.train.suffix == ".parquet"
               else pd.read_csv(case.train, nrows=0).columns)
    return {"rows": rows(case.train), "test_rows": rows(case.test), "features": len(columns) - 1}


def common_fields(case: Case, sizes: dict[str, int], done: Finished) -> dict[str, Any]:
    """The fields every case's line has: sizes, budget, wall, memory, exit code, the error if it failed."""
    result: dict[str, Any] = {"case": case.name, **sizes, "budget_s": case.budget_s, "wall_s": done.wall_s,
                              "wall_over_budget": round(done.wall_s / case.budget_s, 2),
                              "peak_rss_mb": done.peak_rss_mb, "peak_pss_mb": done.peak_pss_mb,
                              "peak_by_process": done.peak_by_process,
                              "cpu_s": done.cpu_s, "exit_code": done.exit_code,
                              "loadavg_1m": round(os.getloadavg()[0], 2)}
    if done.exit_code != 0:
        result["error"] = f"killed after {timeout_for(case.budget_s):g} s" if done.timed_out else done.last_stderr_line
    return result


def board_fields(output: Path) -> dict[str, Any]:
    """Leaderboard size, families, protocol and leader from the run's ``leaderboard.csv`` and ``run.json``."""
    board = pd.read_csv(output / "leaderboard.csv")
    run = json.loads((output / "run.json").read_text())
    evaluation = run.get("evaluation", {})
    metric = str(board.columns[1])  # the sort metric comes right after model_id
    return {"board_rows": len(board), "families": sorted(board["algo"].astype(str).unique().tolist()),
            "protocol": evaluation.get("protocol"), "nfolds": evaluation.get("nfolds"),
            "rows_scored": evaluation.get("rows_scored"), "run_elapsed_s": run.get("elapsed_secs"),
            "leader": str(board["model_id"].iloc[0]), "leader_metric": metric,
            "leader_score": round(float(board[metric].iloc[0]), 4)}


def leader_test_auc(test: Path, target: str, preds: Path) -> float:
    """AUC of ``preds.csv``'s probability of the larger label against the test file's target."""
    from sklearn.metrics import roc_auc_score

    truth = (pd.read_parquet(test, columns=[target]) if test.suffix == ".parquet"
             else pd.read_csv(test, usecols=[target]))
    positive = sorted(truth[target].unique())[-1]
    scores = pd.read_csv(preds, usecols=[f"p_{positive}"])[f"p_{positive}"]
    return round(float(roc_auc_score(truth[target] == positive, scores)), 4)


def run_ours(case: Case, runs: Path) -> dict[str, Any]:
    """The CLI on ``case.train``, then its leader on ``case.test`` in a fresh process."""
    folder = runs / case.name
    shutil.rmtree(folder, ignore_errors=True)
    output, env = folder / "output", child_env(folder)
    log(f"{case.name}: automl.run for {case.budget_s:g} s")
    done = run_sampled([sys.executable, "-m", "automl.run", str(case.train), "--target", case.target,
                        "--max-runtime-secs", f"{case.budget_s:g}", "--output", str(output)],
                       folder, env, timeout_for(case.budget_s))
    result = common_fields(case, split_sizes(case), done)
    if done.exit_code != 0:
        return result
    result.update(board_fields(output))
    scored = run_sampled([sys.executable, "-m", "automl.predict", str(output / "leader"), str(case.test),
                          "--output", str(folder / "preds.csv")], folder / "predict", env, timeout_for(60))
    result["predict_s"] = scored.wall_s
    if scored.exit_code == 0:
        result["test_auc"] = leader_test_auc(case.test, case.target, folder / "preds.csv")
    else:
        result["error"] = f"predict exited {scored.exit_code}: {scored.last_stderr_line}"
    return result


def run_h2o(case: Case, runs: Path) -> dict[str, Any]:
    """H2O AutoML at the same budget on the same split, as ``h2o-<rows>``."""
    h2o_case = Case(case.name.replace("synth", "h2o", 1), case.train, case.test, case.target, case.budget_s)
    folder = runs / h2o_case.name
    shutil.rmtree(folder, ignore_errors=True)
    log(f"{h2o_case.name}: H2O AutoML for {case.budget_s:g} s")
    done = run_sampled([sys.executable, str(ROOT / "bench" / "h2o_anchor.py"), str(case.train), str(case.test),
                        "--target", case.target, "--max-runtime-secs", f"{case.budget_s:g}"],
                       folder, child_env(folder), timeout_for(case.budget_s))
    result = common_fields(h2o_case, split_sizes(case), done)
    if done.exit_code == 0:
        result.update(json.loads(done.stdout.strip().splitlines()[-1]))
    return result


def side_by_side(ours: dict[str, Any], h2o: dict[str, Any]) -> dict[str, Any]:
    """One line comparing our run and H2O's on the same split."""
    return {"case": f"ours-vs-{h2o['case']}",
            **{key: {"ours": ours.get(key), "h2o": h2o.get(key)}
               for key in ("test_auc", "wall_s", "peak_rss_mb", "exit_code")},
            "models": {"ours": ours.get("board_rows"), "h2o": h2o.get("models")}}


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="synthetic row counts, comma-separated; empty for none (10000,100000,1000000)")
    parser.add_argument("--big", action="store_true", help=f"add the {BIG_ROWS:,}-row table")
    parser.add_argument("--flights", action="store_true", help="add the flights case")
    parser.add_argument("--h2o", action="store_true", help="add H2O AutoML on the --h2o-rows split")
    parser.add_argument("--h2o-rows", type=int, default=200_000, help="rows of the H2O comparison table (200000)")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every budget by this (1)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "automl-scale-rows",
                        help="cached data and run folders (default: automl-scale-rows in the temp folder)")
    args = parser.parse_args(argv)

    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()] + ([BIG_ROWS] if args.big else [])
    if args.h2o and args.h2o_rows not in sizes:
        sizes.append(args.h2o_rows)
    data, runs = args.out / "data", args.out / "runs"
    failed = False
    for rows in sizes:
        case = synthetic_case(rows, data, args.budget_scale)
        ours = run_ours(case, runs)
        emit(ours)
        failed |= ours["exit_code"] != 0
        if args.h2o and rows == args.h2o_rows:
            h2o = run_h2o(case, runs)
            emit(h2o)
            emit(side_by_side(ours, h2o))
            failed |= h2o["exit_code"] != 0
    if args.flights:
        flights = run_ours(flights_case(data, args.budget_scale), runs)
        emit(flights)
        failed |= flights["exit_code"] != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
