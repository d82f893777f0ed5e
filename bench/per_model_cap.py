"""--max-runtime-secs-per-model: how long each model of a real run trained, against the cap.

Runs ``python -m automl.run DATASET --max-runtime-secs-per-model CAP`` in a child (``CI=true``, its own Prefect
home) and reads what the run wrote: every search trial and population member (``trials.csv``: its own training
time, a member's share of its round), every cross-validated model (the event log's ``<id> <metric>=… (S s)``
lines, all folds together), every model the scheduler stopped after a fold (``stopped after fold k of n (S s)``)
and every refit (``refit on all N rows (S s, …)``). Prints one JSON line: the longest of each kind, and each
one over ``CAP`` + the README's tolerance (``automl.budget.CAP_TOLERANCE_SECONDS``).

    python bench/per_model_cap.py [--dataset diabetes] [--cap 5] [--budget 120]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import pandas as pd
from _common import child_env, log, run_sampled

from automl.budget import CAP_TOLERANCE_SECONDS

#: Event-log lines that say how long a model trained, by kind.
PATTERNS = {
    "ranked": re.compile(r"^(?P<id>\S+) \S+=\S+ \((?P<s>[\d.]+)s\)"),
    "stopped": re.compile(r"^(?P<id>.+): stopped after fold \d+ of \d+ \((?P<s>[\d.]+)s\)"),
    "refit": re.compile(r"^(?P<id>\S+) refit on all \d+ rows \((?P<s>[\d.]+)s"),
}


def measure(out: Path) -> dict[str, list[tuple[str, float]]]:
    """Every model's training seconds in a finished run's folder, by kind."""
    trials = pd.read_csv(out / "trials.csv")
    found: dict[str, list[tuple[str, float]]] = {
        "trial": [(f"{r.family} trial {r.number}", float(r.duration_s)) for r in trials.itertuples()
                  if pd.notna(r.duration_s)]}
    for message in pd.read_csv(out / "event_log.csv")["message"]:
        for kind, pattern in PATTERNS.items():
            if match := pattern.match(str(message)):
                found.setdefault(kind, []).append((match["id"], float(match["s"])))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="diabetes")
    parser.add_argument("--cap", type=float, default=5.0)
    parser.add_argument("--budget", type=float, default=120.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        log(f"running {args.dataset} with --max-runtime-secs-per-model {args.cap:g}")
        done = run_sampled([sys.executable, "-m", "automl.run", args.dataset, "--max-runtime-secs", str(args.budget),
                            "--max-runtime-secs-per-model", str(args.cap), "--output", str(out)], Path(tmp),
                           child_env(Path(tmp)), args.budget + 300)
        if done.exit_code != 0:
            print(json.dumps({"dataset": args.dataset, "cap_s": args.cap, "exit_code": done.exit_code}))
            return 1
        found = measure(out)
    limit = args.cap + CAP_TOLERANCE_SECONDS
    print(json.dumps({
        "dataset": args.dataset, "cap_s": args.cap, "tolerance_s": CAP_TOLERANCE_SECONDS, "wall_s": done.wall_s,
        "counts": {kind: len(items) for kind, items in found.items()},
        "longest_s": {kind: max(s for _, s in items) for kind, items in found.items() if items},
        "over": [f"{kind} {name}: {s:.1f}s" for kind, items in found.items() for name, s in items if s > limit]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
