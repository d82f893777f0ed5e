"""Reproducible mode: ``--seed S --max-models N --workers 1`` gives the same leaderboard twice on CPU.

Two runs of the real CLI in fresh output folders, with a budget so generous that time never
cuts the search or the refits: everything but the timing columns must match exactly, every family included
(GBM's thread count follows the load average: its histograms are deterministic).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pandas.testing import assert_frame_equal

from automl.leaderboard import TIMING_COLUMNS
from conftest import run_module

MAX_MODELS = 3


def _run(tmp_path: Path, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = tmp_path / name
    proc = run_module("automl.run", "diabetes", "--seed", 7, "--max-models", MAX_MODELS, "--workers", 1,
                      "--max-runtime-secs", 300, "--nfolds", 3, "--include-algos", "GLM,GBM,MLP,StackedEnsemble",
                      "--output", out, "--project", "reproducible", cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = pd.read_csv(out / "event_log.csv")
    # Both searches ended on their trial limit and every refit ran: time cut nothing.
    stopped = events[events["message"].str.contains(f"search stopped: {MAX_MODELS} trials done")]
    assert set(stopped["stage"]) == {"search", "boosting"}
    assert not events["message"].str.contains("no time to|skipped", regex=True).any()
    return pd.read_csv(out / "leaderboard.csv"), pd.read_csv(out / "trials.csv")


def test_seeded_single_worker_runs_give_the_same_leaderboard(prefect_api: str, tmp_path: Path) -> None:
    board, trials = _run(tmp_path, "first")
    board_again, trials_again = _run(tmp_path, "second")
    assert set(TIMING_COLUMNS) == {"training_time_ms", "predict_time_per_row_ms"}
    assert_frame_equal(board.drop(columns=list(TIMING_COLUMNS)), board_again.drop(columns=list(TIMING_COLUMNS)),
                       check_exact=True)
    assert {"GLM", "GBM", "MLP", "StackedEnsemble"} <= set(board["algo"])
    assert board["model_id"].str.startswith("GBM_grid_").any()  # a searched GBM configuration, ranked
    varying = ["duration_s", "worker"]  # wall time and the process id
    assert_frame_equal(trials.drop(columns=varying), trials_again.drop(columns=varying), check_exact=True)
    assert trials["family"].value_counts().to_dict() == {"mlp": MAX_MODELS, "gbm": MAX_MODELS}
