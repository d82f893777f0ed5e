"""End-to-end: wall time, fixed overheads, CPU use, peak memory and results of ``python -m automl.run diabetes``
(or of ``--dataset``: ``--dataset digits --repeat 5`` is the CNN-at-the-default-budget check).

Runs the CLI in a child process (cwd and ``--output`` in a temporary folder), polls
``/proc`` for the memory and CPU time of the child's process tree, then reads
``leaderboard.csv``, ``trials.csv``, ``run.json`` and ``event_log.csv``. Prints one JSON
line per budget on stdout; the run's own output goes to stderr.

- ``overhead_start_s``: process start → the first model starts training (the
  ``preprocess`` event that precedes the reference models): Prefect's API, imports, data.
- ``overhead_end_s``: the last model's event → process exit (outputs, report, exit).
- ``search_cpu_pct``: CPU time of the process tree over the search (first to last
  ``search`` event), in % of one core (200 % is all of a 2-core machine).

Each run gets a fresh Prefect home (a new user's first run: the temporary server migrates its
database) unless ``--warm``: one home for all runs, migrated before the first (a user's later runs).

``--idle`` waits before each run until the previous run's processes are gone (CPUs under 10 % busy for 3 s).

    python bench/e2e.py [--budgets 30,60,120] [--dataset diabetes] [--repeat 1] [--with-server | --warm] [--idle]
                        [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from _common import ROOT, child_env, prefect_server, tree_usage, wait_idle

POLL_SECONDS = 0.25


def run_child(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float
              ) -> tuple[int, float, int, list[tuple[float, float]]]:
    """Run ``cmd``; return its exit code, wall seconds, the peak RSS of its process tree and (time, CPU s) samples."""
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=sys.stderr, stderr=sys.stderr)
    peak, samples = 0, []
    while proc.poll() is None:
        rss, cpu = tree_usage(proc.pid)
        peak = max(peak, rss)
        samples.append((time.time(), cpu))
        if time.time() - started > timeout:
            proc.kill()
            break
        time.sleep(POLL_SECONDS)
    code = proc.wait()
    return code, time.time() - started, peak, samples


def overheads(out: Path, started: float, ended: float, samples: list[tuple[float, float]]) -> dict[str, Any]:
    """Fixed overheads and the search's CPU use, from the run's event log timestamps."""
    events = pd.read_csv(out / "event_log.csv")
    stamp = pd.to_datetime(events["timestamp"]).map(lambda t: t.timestamp())
    first = stamp[events["stage"] == "preprocess"].max()
    models = stamp[events["stage"].isin(["reference", "evaluate", "ensemble"])]
    search = stamp[events["stage"] == "search"]
    result: dict[str, Any] = {"overhead_start_s": round(first - started, 1),
                              "overhead_end_s": round(ended - models.max(), 1) if len(models) else None}
    inside = [(t, c) for t, c in samples if len(search) and search.min() <= t <= search.max()]
    if len(inside) >= 2:
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        result["search_cpu_pct"] = round(100 * (c1 - c0) / max(t1 - t0, 1e-9))
    return result


def summarize(out: Path) -> dict[str, Any]:
    """Leader, network rows, algorithms and trial states from the run's output files."""
    board = pd.read_csv(out / "leaderboard.csv")
    trials = pd.read_csv(out / "trials.csv") if (out / "trials.csv").exists() else pd.DataFrame({"state": []})
    run = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    metric = run.get("sort_metric", "auc")
    nets = board[board["algo"].isin(["MLP", "CNN"])]
    best_net = None if nets.empty else nets.iloc[0]  # the board is sorted: the first network is the best
    return {
        "leader": str(board["model_id"].iloc[0]), "sort_metric": metric,
        "leader_score": round(float(board[metric].iloc[0]), 4),
        "best_network": None if best_net is None else str(best_net["model_id"]),
        "best_network_score": None if best_net is None else round(float(best_net[metric]), 4),
        "rows": len(board), "algos": sorted(board["algo"].unique().tolist()),
        "trials": {str(k): int(v) for k, v in trials["state"].value_counts().sort_index().items()},
        "run_budget_s": run.get("max_runtime_secs"), "run_elapsed_s": run.get("elapsed_secs"),
    }


def run_once(dataset: str, budget: float | None, timeout: float, keep: bool,
             prefect_home: Path | None = None, idle: bool = False) -> dict[str, Any]:
    """One CLI run on ``dataset`` at ``budget`` (None: the run's default); its JSON result."""
    busy_before = wait_idle() if idle else None
    tmp = Path(tempfile.mkdtemp(prefix="automl-e2e-"))
    out = tmp / "out"
    cmd = [sys.executable, "-m", "automl.run", dataset, "--output", str(out)]
    if budget is not None:
        cmd += ["--max-runtime-secs", f"{budget:g}"]
    load_before = os.getloadavg()[0]
    started = time.time()
    code, wall, tree_peak, samples = run_child(cmd, tmp, child_env(tmp, prefect_home), timeout)
    result: dict[str, Any] = {
        "bench": "e2e", "date": dt.datetime.now().isoformat(timespec="seconds"),
        "cmd": " ".join(cmd[1:]).replace(str(tmp), "$TMP"), "returncode": code, "wall_s": round(wall, 1),
        "peak_tree_rss_mb": round(tree_peak / 2**20, 1),
    }
    try:
        result.update(summarize(out))
        result.update(overheads(out, started, started + wall, samples))
    except (OSError, KeyError, IndexError, ValueError) as exc:
        result["error"] = f"cannot read the run's output: {type(exc).__name__}: {exc}"
    budget = budget if budget is not None else result.get("run_budget_s")
    result["budget_s"] = budget
    result["within_budget_10pct"] = budget is not None and wall <= 1.1 * budget
    result["machine"] = {"cpu_count": os.cpu_count(), "loadavg_1m_before": round(load_before, 2),
                         "loadavg_1m_after": round(os.getloadavg()[0], 2),
                         "cpu_busy_pct_before": busy_before,
                         "prefect_api": os.environ.get("PREFECT_API_URL", "temporary local server"),
                         "prefect_home": "server's" if "PREFECT_API_URL" in os.environ else
                         "fresh" if prefect_home is None else "warm"}
    if keep:
        print(f"kept {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


@contextlib.contextmanager
def warm_home() -> Any:
    """A Prefect home whose database the temporary server has already created (as after a user's first run)."""
    home = Path(tempfile.mkdtemp(prefix="automl-e2e-home-"))
    warm = "from flows.server import ApiStartup; a = ApiStartup().begin(); a.wait(); a.stop()"
    subprocess.run([sys.executable, "-c", warm], env=child_env(home, home / "prefect"), check=True, cwd=ROOT)
    try:
        yield home / "prefect"
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="", help="comma-separated budgets, one run each (default: the "
                                                       "run's own budget, once)")
    parser.add_argument("--with-server", action="store_true", help="start `prefect server start` first and run "
                                                                  "against it (PREFECT_API_URL)")
    parser.add_argument("--warm", action="store_true", help="no server configured, one Prefect home for all runs, "
                                                            "migrated before the first")
    parser.add_argument("--dataset", default="diabetes", help="a built-in dataset or a file (diabetes)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per budget (1)")
    parser.add_argument("--timeout", type=float, default=900.0, help="kill a run after this many seconds (900)")
    parser.add_argument("--idle", action="store_true", help="before each run, wait (up to 90 s) until the CPUs "
                                                            "were under 10 %% busy for 3 s")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders and print their paths")
    args = parser.parse_args(argv)
    budgets = [float(b) for b in args.budgets.split(",") if b] or [None]
    if args.with_server and args.warm:
        parser.error("--with-server and --warm are exclusive")
    if args.warm:
        os.environ.pop("PREFECT_API_URL", None)  # the case measured is "no server configured"
    context = prefect_server() if args.with_server else warm_home() if args.warm else contextlib.nullcontext()
    with context as home:
        results = []
        for budget in budgets:
            for _ in range(args.repeat):
                results.append(run_once(args.dataset, budget, args.timeout, args.keep, home if args.warm else None,
                                        args.idle))
                print(json.dumps(results[-1]), flush=True)
    return 0 if all(r["returncode"] == 0 and "error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
