"""How the networks did in a suite run: best network row against the best GBM and the GLM, and the gap between a
network's search score and its out-of-fold score.

Reads what ``bench/suite.py --tools ours`` left under ``--out`` (each table's ``leaderboard.csv`` and
``trials.csv``); trains nothing. Per table, one JSON line: the board's metric (its first column), the best
``MLP`` row, the best ``GBM`` row (``GBM_grid`` included) and ``GLM_1``, whether the best network is at least as
good as the best GBM and not below the GLM, and for every network row its search trial's validation score, the
row's cross-validated score and the gap between them (positive: the search score was the better one, i.e.
optimistic), in the metric's units and relative to the row's score. A last line sums up the suite.

    python bench/suite.py --tools ours --out /tmp/suite && python bench/network_gap.py --out /tmp/suite
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import pandas as pd

#: Board metrics where a larger value is better; the others (logloss, rmse, mean_per_class_error, ...) are losses.
HIGHER_IS_BETTER = {"auc", "aucpr", "r2", "accuracy"}
#: A rank metric's float32 resolution: GLM_1's fold models computed in float32 (a network that kept its start)
#: tie near-equal probabilities GLM_1 tells apart, a pair or two of titanic's 76k (AUC 0.85458 against 0.85459).
RANK_TIE = 2e-5


def table(output: Path) -> dict:
    """The networks of one run's board (``output``: the CLI's ``--output``)."""
    board = pd.read_csv(output / "leaderboard.csv")
    trials = pd.read_csv(output / "trials.csv")
    metric = board.columns[1]
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0

    def best(rows: pd.DataFrame) -> dict | None:
        if rows.empty:
            return None
        row = rows.loc[(sign * rows[metric]).idxmax()]
        return {"model_id": row["model_id"], metric: round(float(row[metric]), 5)}

    networks = board[board["algo"] == "MLP"]
    gbm, glm = best(board[board["algo"] == "GBM"]), best(board[board["model_id"] == "GLM_1"])
    network = best(networks)
    glm_value = float(board.loc[board["model_id"] == "GLM_1", metric].iloc[0]) if glm else None
    searched = trials[trials["family"] == "mlp"].set_index("number")[f"validation_{metric}"]
    gaps = []
    for _, row in networks.iterrows():
        suffix = str(row["model_id"]).rsplit("_", 1)[1]  # MLP_default ran no trial: it has no search score
        number = int(suffix) if suffix.isdigit() else None
        if number in searched.index:
            gap = sign * (float(searched[number]) - float(row[metric]))
            gaps.append({"model_id": row["model_id"], "search": round(float(searched[number]), 5),
                         "cv": round(float(row[metric]), 5), "gap": round(gap, 5),
                         "relative_gap": round(gap / abs(float(row[metric])), 5) if row[metric] else None})

    def beats(a: dict | None, b: dict | None) -> bool | None:
        return None if a is None or b is None else sign * a[metric] >= sign * b[metric]

    relative = [g["relative_gap"] for g in gaps if g["relative_gap"] is not None]
    tolerance = max(1e-6 * abs(glm_value or 0.0), RANK_TIE if metric in ("auc", "aucpr") else 0.0)
    return {"bench": "network_gap", "dataset": output.parts[-3], "metric": metric, "best_network": network,
            "best_gbm": gbm, "glm": glm, "network_at_least_gbm": beats(network, gbm),
            # Against GLM_1's unrounded value, to a millionth of it: a network that kept its GLM start is GLM_1's
            # fold models computed in float32 (penguins' log loss 0.006763792917 against 0.006763792642).
            "network_rows": len(networks), "network_rows_below_glm": int(sum(
                sign * r < sign * glm_value - tolerance for r in networks[metric])) if glm else None,
            "mean_gap": round(statistics.mean(g["gap"] for g in gaps), 5) if gaps else None,
            "mean_relative_gap": round(statistics.mean(relative), 5) if relative else None, "gaps": gaps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="bench/suite.py's --out")
    args = parser.parse_args()
    rows = [table(folder) for folder in sorted(args.out.glob("runs/*/ours/output"))
            if (folder / "leaderboard.csv").exists()]
    for row in rows:
        print(json.dumps(row))
    relative = [r["mean_relative_gap"] for r in rows if r["mean_relative_gap"] is not None]
    print(json.dumps({"bench": "network_gap", "summary": True, "tables": len(rows),
                      "network_at_least_gbm": sum(bool(r["network_at_least_gbm"]) for r in rows),
                      "tables_with_network_rows_below_glm": sum(bool(r["network_rows_below_glm"]) for r in rows),
                      "tables_without_network_row": sum(r["best_network"] is None for r in rows),
                      # A loss near 0 (penguins' log loss) makes a relative gap large: the median too.
                      "mean_relative_gap": round(statistics.mean(relative), 5) if relative else None,
                      "median_relative_gap": round(statistics.median(relative), 5) if relative else None}))


if __name__ == "__main__":
    main()
