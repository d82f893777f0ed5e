"""What each network option of the searched space does to one fixed MLP: one JSON line per table x option.

The configuration is the first MLP warm start (2 x 64 ReLU, dropout 0.2, Adam 1e-3, batch 32); each variant
changes one option of ``automl.spaces.MLP_SPACE`` (or two: quantile scaling with periodic embeddings). Every
variant trains on the same splits: 25 % test rows, and of the rest 20 % validation rows for early stopping
(the search's rule: best of every 5 epochs, patience 4 validations, at most 100 epochs), 3 splits x 2 seeds.
Printed: mean and standard deviation of the test AUC, seconds per fit, best epoch.

    python bench/network_options.py                       # diabetes and churn, ~6 minutes
    python bench/network_options.py --datasets diabetes --splits 2
    python bench/network_options.py --variants plain,robust,packed-8
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _common import ROOT  # sets up sys.path first
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from automl import data
from automl.preprocess import encode_target, infer_schema, make_preprocessor
from automl.spaces import MLP_WARM_STARTS

TABLES = {"diabetes": ("diabetes", None), "churn": (str(ROOT.parent / "shared" / "datasets" / "churn.csv"), "churn")}
VARIANTS = {"plain": {}, "quantile": {"input_scaling": "quantile"}, "periodic": {"numeric_embedding": "periodic"},
            "quantile+periodic": {"input_scaling": "quantile", "numeric_embedding": "periodic"},
            "cosine": {"lr_schedule": "cosine"}, "smoothing": {"label_smoothing": 0.1},
            "robust": {"input_scaling": "robust"}, "packed-8": {"ensemble_size": 8}, "packed-32": {"ensemble_size": 32},
            "robust+periodic+packed-8": {"input_scaling": "robust", "numeric_embedding": "periodic",
                                         "ensemble_size": 8}}


def measure(table: str, splits: int, seeds: int, variants: list[str]) -> list[dict]:
    from automl.training import KerasNetwork

    ds = data.load(*TABLES[table])
    schema = infer_schema(ds)
    x, y = ds.frame[schema.features], encode_target(schema, ds.frame[schema.target])
    found: dict[str, list[tuple[float, float, int]]] = {name: [] for name in variants}
    for split in range(splits):
        x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.25, stratify=y, random_state=split)
        x_fit, x_val, y_fit, y_val = train_test_split(x_rest, y_rest, test_size=0.2, stratify=y_rest,
                                                      random_state=split)
        pre = make_preprocessor(schema)
        fit, val, test = pre.fit_transform(x_fit, y_fit), pre.transform(x_val), pre.transform(x_test)
        for name, change in ((name, VARIANTS[name]) for name in variants):
            for seed in range(seeds):
                started = time.monotonic()
                net = KerasNetwork({**MLP_WARM_STARTS[0], **change}, "binary", 100, seed)
                net.fit(fit, y_fit, val, monitor=lambda p, y_val=y_val: roc_auc_score(y_val, p[:, 1]))
                auc = roc_auc_score(y_test, net.predict_proba(test)[:, 1])
                found[name].append((auc, time.monotonic() - started, net.best_epoch_))
    rows = []
    for name, runs in found.items():
        a = np.array(runs)
        rows.append({"bench": "network_options", "dataset": table, "variant": name, "fits": len(runs),
                     "test_auc": round(float(a[:, 0].mean()), 4), "test_auc_sd": round(float(a[:, 0].std()), 4),
                     "seconds_per_fit": round(float(a[:, 1].mean()), 2), "best_epoch": round(float(a[:, 2].mean()), 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="diabetes,churn", help="comma-separated (diabetes,churn)")
    parser.add_argument("--splits", type=int, default=3, help="train/test splits per table (3)")
    parser.add_argument("--seeds", type=int, default=2, help="network seeds per split (2)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated ({','.join(VARIANTS)})")
    args = parser.parse_args()
    for table in args.datasets.split(","):
        for row in measure(table, args.splits, args.seeds, args.variants.split(",")):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
