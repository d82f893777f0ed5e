"""Cost of the leaderboard's bootstrap intervals as the number of scored rows grows.

For each row count, ten binary models (from weak to strong) get their 95 % intervals and
the paired differences with the first one, as ``automl.leaderboard.add_confidence``
computes them (one :meth:`automl.stats.Bootstrap.samples_of` pass, 1,000 resamples),
for the sort metrics ``auc`` and ``logloss``. Prints one JSON line per row count on
stdout with wall seconds, CPU seconds and the ``tracemalloc`` peak in MB (allocations
made by the intervals, not the predictions they are given); progress goes to stderr.

    python bench/bootstrap_cost.py [--rows 1e3,1e4,1e5,2e5,1e6] [--models 10] [--n-boot 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import tracemalloc
from typing import Any

import numpy as np
from _common import log  # noqa: E402  (sets up sys.path first)

METRICS = ("auc", "logloss")


def predictions(n: int, models: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Labels and ``models`` probability matrices whose signal grows from 0.2 to 2."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    preds = []
    for signal in np.linspace(0.2, 2.0, models):
        s = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(size=n))))
        preds.append(np.column_stack([1 - s, s]))
    return y, preds


def measure(y: np.ndarray, preds: list[np.ndarray], metric_name: str, n_boot: int) -> dict[str, float]:
    """Seconds and peak MB of every model's interval plus its paired difference with the first model."""
    from automl.metrics import get
    from automl.stats import Bootstrap, percentile_interval

    metric = get(metric_name, "binary")
    tracemalloc.start()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        samples = Bootstrap(y, "binary", n_boot=n_boot, seed=0).samples_of(metric, preds)
        intervals = [percentile_interval(s) for s in samples]
        gaps = [percentile_interval(metric.sign() * (samples[0] - s)) for s in samples]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    width = float(np.mean([high - low for low, high in intervals]))
    return {f"{metric_name}_s": round(wall, 2), f"{metric_name}_cpu_s": round(cpu, 2),
            f"{metric_name}_peak_mb": round(peak / 1e6, 1), f"{metric_name}_mean_ci_width": round(width, 5),
            f"{metric_name}_indistinguishable": sum(low <= 0 <= high for low, high in gaps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1e3,1e4,1e5,2e5,1e6", help="comma-separated row counts")
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    for n in (int(float(r)) for r in args.rows.split(",")):
        y, preds = predictions(n, args.models)
        record: dict[str, Any] = {"rows": n, "models": args.models, "n_boot": args.n_boot}
        for name in METRICS:
            log(f"{n} rows: {name} ...")
            record.update(measure(y, preds, name, args.n_boot))
        record["load_average_1m"] = round(os.getloadavg()[0], 2)
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
