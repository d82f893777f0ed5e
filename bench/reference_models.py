"""Reference models at scale: fit seconds, peak RSS and holdout AUC on the synthetic large table.

For each of 10k, 50k and 200k rows of the synthetic table (``make_synthetic.py``: 30 numeric
columns, 5 categorical × 50 levels, binary ``y``), 20 % of the rows are held out (stratified),
the preprocessing is fitted on the rest as the pipeline does (``automl.preprocess``), and every
candidate of ``automl.models.reference_candidates`` is fitted once on that training matrix: one
fold's worth of work. Each JSON line gives the fit and predict seconds, the peak RSS of this
process during the fit (sampled from ``/proc`` every 20 ms), the holdout AUC, and the cost model's
estimate next to the measurement. ``--diabetes`` adds 5-fold CV AUC on Pima diabetes. The lines
are what ``automl.models.COSTS`` is calibrated from.

    python bench/reference_models.py [--csv /tmp/big.csv] [--rows 10000,50000,200000] [--diabetes]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _common import ROOT, log

SYNTHETIC = Path("/work/shared/datasets/make_synthetic.py")


class PeakRss:
    """The largest resident set size of this process while the ``with`` block runs, in MB."""

    def __enter__(self) -> PeakRss:
        self.peak, self._stop = _rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def synthetic(csv: Path, rows: list[int], n_jobs: int) -> None:
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from automl import data
    from automl.bagging import predict_raw
    from automl.evaluation import holdout_split
    from automl.models import reference_candidates
    from automl.preprocess import encode_target, infer_schema, make_preprocessor

    if not csv.exists():
        log(f"writing {csv} with {max(rows)} rows")
        subprocess.run([sys.executable, str(SYNTHETIC), str(max(rows)), str(csv)], check=True)
    full = pd.read_csv(csv)
    for n in rows:
        ds = data.from_frame(full.iloc[:n].reset_index(drop=True), f"synthetic-{n}", "y")
        schema = infer_schema(ds)
        y = encode_target(schema, ds.frame["y"])
        x = ds.frame.drop(columns=["y"])
        train, test = holdout_split(y, schema.task, 0.2, seed=0)
        start = time.perf_counter()
        pre = make_preprocessor(schema).fit(x.iloc[train])
        x_train, x_test = pre.transform(x.iloc[train]), pre.transform(x.iloc[test])
        preprocess_s = time.perf_counter() - start
        for candidate in reference_candidates(schema.task, 0, n_rows=len(train), n_features=x_train.shape[1],
                                              n_jobs=n_jobs):
            with PeakRss() as rss:
                start = time.perf_counter()
                est = candidate.make().fit(x_train, y[train])
                fit_s = time.perf_counter() - start
            start = time.perf_counter()
            proba = predict_raw(est, x_test, schema.task)
            predict_s = time.perf_counter() - start
            line: dict[str, Any] = {
                "dataset": "synthetic", "model_id": candidate.model_id, "n_rows": n, "train_rows": len(train),
                "n_features": x_train.shape[1], "fit_s": round(fit_s, 2), "predict_s": round(predict_s, 2),
                "preprocess_s": round(preprocess_s, 2), "peak_rss_mb": round(rss.peak),
                "holdout_auc": round(float(roc_auc_score(y[test], proba[:, 1])), 4),
                "estimate_s": round(candidate.estimate_seconds(len(train), x_train.shape[1]), 2)}
            if hasattr(est, "best_iteration_"):
                line["rounds"] = int(est.best_iteration_)
            print(json.dumps(line), flush=True)


def diabetes(n_jobs: int) -> None:
    from automl import data
    from automl.evaluation import cross_validate, make_folds
    from automl.models import reference_candidates
    from automl.preprocess import encode_target, infer_schema

    ds = data.load("diabetes")
    schema = infer_schema(ds)
    x, y = ds.frame.drop(columns=[ds.target]), encode_target(schema, ds.frame[ds.target])
    folds = make_folds(y, schema.task, 5, seed=0)
    for candidate in reference_candidates(schema.task, 0, n_rows=len(y), n_jobs=n_jobs):
        start = time.perf_counter()
        evaluated = cross_validate(candidate, x, y, schema, folds)
        print(json.dumps({"dataset": "diabetes", "model_id": candidate.model_id,
                          "cv_auc": round(evaluated.model.metrics["auc"], 4),
                          "cv_s": round(time.perf_counter() - start, 2)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=Path("/tmp/big.csv"))
    parser.add_argument("--rows", default="10000,50000,200000")
    parser.add_argument("--diabetes", action="store_true", help="also 5-fold CV AUC on Pima diabetes")
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()
    log(f"reference models from {ROOT}")
    if args.diabetes:
        diabetes(args.n_jobs)
    synthetic(args.csv, [int(r) for r in args.rows.split(",")], args.n_jobs)


if __name__ == "__main__":
    main()
