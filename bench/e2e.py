"""End-to-end: wall time, peak memory and results of ``python -m automl.run diabetes``.

Runs the CLI in a child process (cwd and ``--output`` in a temporary folder), polls
``/proc`` for the memory of the child's process tree, then reads ``leaderboard.csv``,
``trials.csv`` and ``run.json``. Prints one JSON line on stdout; the run's own output
goes to stderr.

    python bench/e2e.py [--max-runtime-secs S] [--keep]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
POLL_SECONDS = 0.25
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def child_env(tmp: Path) -> dict[str, str]:
    """The caller's environment, with a throw-away Prefect home and the checkout importable."""
    env = dict(os.environ)
    if "PREFECT_API_URL" not in env:
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        env["PREFECT_HOME"] = str(tmp / "prefect-home")
    try:
        importlib.metadata.distribution("automl")
    except importlib.metadata.PackageNotFoundError:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def tree_rss_bytes(root: int) -> int:
    """Resident memory of ``root`` and all its descendants, from ``/proc/<pid>/stat``."""
    parent: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        pid = int(entry)
        parent[pid], rss[pid] = int(fields[1]), int(fields[21]) * PAGE_BYTES
    total = 0
    for pid, size in rss.items():
        p = pid
        while p > 1 and p != root:
            p = parent.get(p, 0)
        total += size if p == root else 0
    return total


def run_child(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, float, int]:
    """Run ``cmd``; return its exit code, wall seconds and the peak RSS of its process tree."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=sys.stderr, stderr=sys.stderr)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_bytes(proc.pid))
        if time.perf_counter() - start > timeout:
            proc.kill()
            break
        time.sleep(POLL_SECONDS)
    code = proc.wait()
    return code, time.perf_counter() - start, peak


def summarize(out: Path) -> dict[str, Any]:
    """Leader, MLP rows, algorithms and trial states from the run's output files."""
    board = pd.read_csv(out / "leaderboard.csv")
    mlp = board[board["algo"] == "MLP"]
    trials = pd.read_csv(out / "trials.csv") if (out / "trials.csv").exists() else pd.DataFrame({"state": []})
    run = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    return {
        "leader": str(board["model_id"].iloc[0]), "leader_auc": round(float(board["auc"].iloc[0]), 4),
        "best_mlp": None if mlp.empty else str(mlp.loc[mlp["auc"].idxmax(), "model_id"]),
        "best_mlp_auc": None if mlp.empty else round(float(mlp["auc"].max()), 4),
        "rows": len(board), "algos": sorted(board["algo"].unique().tolist()),
        "trials": {str(k): int(v) for k, v in trials["state"].value_counts().sort_index().items()},
        "run_budget_s": run.get("max_runtime_secs"), "run_elapsed_s": run.get("elapsed_secs"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-runtime-secs", type=float, help="budget passed to the run (default: the run's own)")
    parser.add_argument("--timeout", type=float, default=900.0, help="kill the run after this many seconds (900)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="automl-e2e-"))
    out = tmp / "out"
    cmd = [sys.executable, "-m", "automl.run", "diabetes", "--output", str(out)]
    if args.max_runtime_secs is not None:
        cmd += ["--max-runtime-secs", f"{args.max_runtime_secs:g}"]
    load_before = os.getloadavg()[0]
    code, wall, tree_peak = run_child(cmd, tmp, child_env(tmp), args.timeout)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest single process, KiB
    result: dict[str, Any] = {
        "bench": "e2e", "date": dt.datetime.now().isoformat(timespec="seconds"),
        "cmd": " ".join(cmd[1:]).replace(str(tmp), "$TMP"), "returncode": code, "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1), "peak_tree_rss_mb": round(tree_peak / 2**20, 1),
    }
    try:
        result.update(summarize(out))
    except (OSError, KeyError, IndexError, ValueError) as exc:
        result["error"] = f"cannot read the run's output: {type(exc).__name__}: {exc}"
    budget = args.max_runtime_secs if args.max_runtime_secs is not None else result.get("run_budget_s")
    result["budget_s"] = budget
    result["within_budget_10pct"] = budget is not None and wall <= 1.1 * budget
    result["machine"] = {"cpu_count": os.cpu_count(), "loadavg_1m_before": round(load_before, 2),
                         "loadavg_1m_after": round(os.getloadavg()[0], 2),
                         "prefect_api": os.environ.get("PREFECT_API_URL", "temporary local server")}
    print(json.dumps(result))
    if args.keep:
        print(f"kept {tmp}", file=sys.stderr)
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if code == 0 and "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
