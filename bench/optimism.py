"""How much the search's choices flatter the searched rows under cross-validation: one JSON line.

Under CV the search selects configurations (and their epoch counts) on a validation split of 20 % of
all rows, and those rows are later scored out of fold like every other row. A searched row (``MLP_*``,
``GBM_grid_*``) may therefore score better on them than on the rows no choice was made on. The
reference rows (GBM_1..3, GLM, DRF, XRT) are fixed configurations: their gap between the two sets of
rows is the sets' own difference. The optimism is the difference in differences, per run:

    optimism = mean over searched rows of (AUC on the selection rows - AUC on the other rows)
             - mean over reference rows of the same,

and the share of it that reaches the board, ``optimism x 0.2`` (the selection rows' share of the
scored rows, for AUC approximately). Each run is the library's ``AutoML(...).fit`` at the default
budget, with its own seed (its own search split).

    python bench/optimism.py                            # diabetes and churn, seeds 1-4, ~17 minutes
    python bench/optimism.py --datasets diabetes --seeds 1,2 --max-runtime-secs 60
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, log  # sets up sys.path first
from sklearn.metrics import roc_auc_score

from automl.config import ENSEMBLE_ALGO

SEARCHED = ("MLP_", "GBM_grid_")
#: Tables by name: built in, or a file of ../shared/datasets with its target.
TABLES = {"diabetes": ("diabetes", None), "churn": (str(ROOT.parent / "shared" / "datasets" / "churn.csv"), "churn")}


def one_run(dataset: str, seed: int, budget: float, folder: Path) -> dict[str, Any]:
    from automl import AutoML
    from automl.search import _search_rows

    aml = AutoML(max_runtime_secs=budget, seed=seed, output_dir=folder, verbose=False)
    source, target = TABLES[dataset]
    aml.fit(source, target=target)
    state = aml.state_
    if state.protocol.name != "cv":
        raise SystemExit(f"{dataset}: the run held out rows instead of CV; the measure is for CV")
    selection = np.zeros(len(state.y), dtype=bool)
    selection[_search_rows(state)[1]] = True

    def gap(oof: np.ndarray) -> float:
        scores = oof[:, 1] if oof.ndim == 2 else oof
        return float(roc_auc_score(state.y[selection], scores[selection])
                     - roc_auc_score(state.y[~selection], scores[~selection]))

    gaps = {e.model.model_id: gap(e.oof) for e in state.evaluated if e.model.algo != ENSEMBLE_ALGO}
    searched = [g for m, g in gaps.items() if m.startswith(SEARCHED)]
    reference = [g for m, g in gaps.items() if not m.startswith(SEARCHED)]
    optimism = statistics.mean(searched) - statistics.mean(reference) if searched and reference else None
    return {"dataset": dataset, "seed": seed, "selection_rows": int(selection.sum()), "rows": len(state.y),
            "gaps": {m: round(g, 4) for m, g in gaps.items()},
            "optimism": None if optimism is None else round(optimism, 4),
            "on_board": None if optimism is None else round(optimism * selection.mean(), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="diabetes,churn")
    parser.add_argument("--seeds", default="1,2,3,4")
    parser.add_argument("--max-runtime-secs", type=float, default=120.0)
    args = parser.parse_args()
    runs, summary = [], {}
    for dataset in args.datasets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            with tempfile.TemporaryDirectory(prefix="automl-optimism-") as folder:
                runs.append(one_run(dataset, seed, args.max_runtime_secs, Path(folder)))
            log(json.dumps(runs[-1]))
        values = [r["optimism"] for r in runs if r["dataset"] == dataset and r["optimism"] is not None]
        summary[dataset] = {"optimism_mean": round(statistics.mean(values), 4) if values else None,
                            "optimism_sd": round(statistics.stdev(values), 4) if len(values) > 1 else None,
                            "runs": len(values)}
    print(json.dumps({"bench": "optimism", "budget_s": args.max_runtime_secs, "runs": runs, "summary": summary}))


if __name__ == "__main__":
    main()
