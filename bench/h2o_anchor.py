"""H2O AutoML on a train/test split, as the anchor our leaderboard is compared with.

Starts a fresh local H2O cluster (``nthreads`` = the machine's cores, 6 GB heap, a free port), trains
``H2OAutoML(max_runtime_secs=B, seed=1)`` on TRAIN, scores its leader on TEST with
``model_performance(test).auc()``, shuts the cluster down and prints one JSON line on stdout:
``{"leader", "models", "test_auc", "h2o_version"}``. ``bench/scale_rows.py --h2o`` runs it as a child
process to measure its wall time and the memory of its process tree (the Java cluster included).
H2O is a benchmark dependency only (``pip install "h2o>=3.46"``); the package never imports it.

    python bench/h2o_anchor.py TRAIN.csv TEST.csv --target y --max-runtime-secs 300
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from _common import free_port, log


def anchor(train_path: str, test_path: str, target: str, budget_s: float, seed: int) -> dict[str, Any]:
    """Train H2O AutoML on ``train_path`` within ``budget_s``; its leader's AUC on ``test_path``."""
    import h2o
    from h2o.automl import H2OAutoML

    h2o.init(nthreads=os.cpu_count() or 1, max_mem_size="6G", port=free_port(), verbose=False)
    try:
        h2o.no_progress()
        train, test = h2o.import_file(train_path), h2o.import_file(test_path)
        for frame in (train, test):  # a 0/1 column parses as numeric: make it a class label
            frame[target] = frame[target].asfactor()
        features = [c for c in train.columns if c != target]
        aml = H2OAutoML(max_runtime_secs=max(1, round(budget_s)), seed=seed)  # H2O takes whole seconds only
        aml.train(x=features, y=target, training_frame=train)
        leader = aml.leader
        return {"leader": leader.model_id, "models": int(aml.leaderboard.nrows),
                "test_auc": round(float(leader.model_performance(test).auc()), 4), "h2o_version": h2o.__version__}
    finally:
        h2o.cluster().shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train", help="training rows (.csv or .parquet)")
    parser.add_argument("test", help="test rows, same columns")
    parser.add_argument("--target", default="y", help="binary target column (y)")
    parser.add_argument("--max-runtime-secs", type=float, default=300.0, help="H2O AutoML budget (300)")
    parser.add_argument("--seed", type=int, default=1, help="H2O AutoML seed (1)")
    args = parser.parse_args(argv)
    log(f"h2o anchor: {args.train} for {args.max_runtime_secs:g} s")
    print(json.dumps(anchor(args.train, args.test, args.target, args.max_runtime_secs, args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
