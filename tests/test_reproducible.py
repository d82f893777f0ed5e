"""Reproducible mode: ``--seed S --max-models N --workers 1`` gives the same leaderboard twice on CPU.

Two runs of the real CLI in fresh output folders, with a budget so generous that time never
cuts the search or the refits: everything but the timing columns must match exactly.
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
                      "--max-runtime-secs", 300, "--nfolds", 3, "--include-algos", "GLM,MLP,StackedEnsemble",
                      "--output", out, "--project", "reproducible", cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = pd.read_csv(out / "event_log.csv")
    # The search ended on its trial limit and every refit ran: time cut nothing.
    assert events["message"].str.contains(f"search stopped: {MAX_MODELS} trials done").any()
    assert not events["message"].str.contains("no time to|skipped", regex=True).any()
    return pd.read_csv(out / "leaderboard.csv"), pd.read_csv(out / "trials.csv")


def test_seeded_single_worker_runs_give_the_same_leaderboard(prefect_api: str, tmp_path: Path) -> None:
    board, trials = _run(tmp_path, "first")
    board_again, trials_again = _run(tmp_path, "second")
    assert set(TIMING_COLUMNS) == {"training_time_ms", "predict_time_per_row_ms"}
    assert_frame_equal(board.drop(columns=list(TIMING_COLUMNS)), board_again.drop(columns=list(TIMING_COLUMNS)),
                       check_exact=True)
    assert {"GLM", "MLP", "StackedEnsemble"} <= set(board["algo"])
    varying = ["duration_s", "worker"]  # wall time and the process id
    assert_frame_equal(trials.drop(columns=varying), trials_again.drop(columns=varying), check_exact=True)
    assert len(trials) == MAX_MODELS
