"""Quality at the default budget: leader scores on every built-in dataset, one JSON line.

Runs ``AutoML().fit(name)`` in this process for diabetes and titanic (leader 5-fold CV
AUC), diabetes-progression (leader CV R², from the out-of-fold predictions), and digits
(best CNN's and the leader's CV accuracy: every row's out-of-fold predictions are
predictions on images its models never saw). Everything but the JSON line goes to stderr.

    python bench/quality.py                     # all datasets, default budgets (~10 minutes)
    python bench/quality.py --datasets diabetes --max-runtime-secs 60
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np


def _measure(name: str, budget: float | None, seed: int, out: str) -> dict:
    from automl import AutoML

    start = time.monotonic()
    aml = AutoML(max_runtime_secs=budget, seed=seed, output_dir=os.path.join(out, name), verbose=False).fit(name)
    board = aml.leaderboard
    leader = board.iloc[0]
    result: dict = {"wall_s": round(time.monotonic() - start, 1), "budget_s": aml.max_runtime_secs,
                    "leader": leader["model_id"], "models": len(board)}
    task = aml.schema.task
    if task == "binary":
        result["leader_cv_auc"] = round(float(leader["auc"]), 4)
        for algo in ("MLP", "StackedEnsemble", "GLM"):
            rows = board[board["algo"] == algo]
            if len(rows):
                result[f"best_{algo.lower()}_cv_auc"] = round(float(rows["auc"].max()), 4)
        result["indistinguishable_from_leader"] = int(board["indistinguishable_from_leader"].sum())
    elif task == "regression":
        oof = next(e.oof for e in aml.evaluated if e.model.model_id == leader["model_id"])
        result["leader_cv_r2"] = round(float(1 - np.mean((aml.y - oof) ** 2) / np.var(aml.y)), 4)
        result["leader_cv_rmse"] = round(float(leader["rmse"]), 3)
    else:
        result["leader_cv_accuracy"] = round(float(leader["accuracy"]), 4)
        cnn = board[board["algo"] == "CNN"]
        if len(cnn):
            result["best_cnn_cv_accuracy"] = round(float(cnn["accuracy"].max()), 4)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="diabetes,titanic,diabetes-progression,digits")
    p.add_argument("--max-runtime-secs", type=float, default=None, help="default: each dataset's default budget")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="automl-quality-") as out:
        results = {name: _measure(name, args.max_runtime_secs, args.seed, out) for name in args.datasets.split(",")}
    for name, r in results.items():
        print(name, r, file=sys.stderr)
    print(json.dumps({"bench": "quality", "cpus": os.cpu_count(), "seed": args.seed, "results": results}))


if __name__ == "__main__":
    main()
