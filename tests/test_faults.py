"""Faults, the fast part: SIGKILL mid-search and a rerun lose no trial and leave every file whole; a full disk.

The real CLI on tiny budgets, checked with the checks of ``bench/faults.py`` (which runs the
slow cases: many fresh runs, CPU burners, kills at random moments, a killed worker).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, kill_group, run_module, subprocess_env, wait_for

sys.path.insert(0, str(REPO / "bench"))
import faults  # noqa: E402 - bench/ is not a package: importable once on the path

# --max-models ends the runs early; the budget leaves a busy machine (start-up, TensorFlow) time for trials.
ARGS = ("diabetes", "--max-runtime-secs", 240, "--max-models", 3, "--workers", 1, *faults.KILL_ARGS)


@pytest.fixture(scope="module")
def rerun_after_kill(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[tuple[str, int]]]:
    """A run SIGKILLed (its whole process group) once a trial is COMPLETE, then rerun to the end in the same
    folder: the output folder and the numbers of the trials COMPLETE at the kill."""
    tmp = tmp_path_factory.mktemp("kill")
    out = tmp / "out"
    args = (*ARGS, "--output", out, "--project", f"faults-{uuid.uuid4().hex[:8]}")
    log = tmp / "first.log"
    with log.open("w") as fh:
        first = subprocess.Popen([sys.executable, "-m", "automl.run", *map(str, args)], cwd=tmp,
                                 env=subprocess_env(CI="true"), stdout=fh, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            wait_for("a COMPLETE trial", lambda: faults.complete_numbers(out), 400, lambda: first.poll() is None, log)
        finally:
            kill_group(first)
    before = faults.complete_numbers(out)
    again = run_module("automl.run", *args, cwd=tmp, timeout=600, CI="true")
    assert again.returncode == 0, again.stderr[-3000:]
    return out, before


def test_a_rerun_after_sigkill_keeps_every_complete_trial_and_every_file_whole(
        rerun_after_kill: tuple[Path, set[tuple[str, int]]]) -> None:
    out, before = rerun_after_kill
    assert before, "no trial was COMPLETE at the kill"
    assert faults.lost_trials(before, out) == []
    assert faults.corrupt_files(out) == []


def test_the_checks_find_torn_files_leftovers_and_lost_trials(rerun_after_kill: tuple[Path, set[tuple[str, int]]],
                                                             tmp_path: Path) -> None:
    out, before = rerun_after_kill
    damaged = tmp_path / "out"
    shutil.copytree(out, damaged)
    board = (damaged / "leaderboard.csv").read_text()
    (damaged / "leaderboard.csv").write_text(board[: len(board) // 2])  # cut mid-row, as a crash would
    (damaged / "run.json").write_text((damaged / "run.json").read_text()[:-2])
    (damaged / ".event_log.csv.x1y2.tmp").write_text("timestamp")
    (damaged / "report.html").unlink()
    trials = pd.read_csv(damaged / "trials.csv")
    gone = min(before)
    trials[(trials["family"] != gone[0]) | (trials["number"] != gone[1])].to_csv(damaged / "trials.csv", index=False)

    found = faults.corrupt_files(damaged)
    assert [p.partition(":")[0] for p in found] == ["report.html", "leaderboard.csv", "run.json",
                                                    ".event_log.csv.x1y2.tmp"], found
    assert faults.corrupt_files(damaged, finished=False)[0].startswith("leaderboard.csv: does not end with")
    assert faults.lost_trials(before, damaged) == [gone]


def test_a_full_disk_gives_one_error_line_and_no_half_written_file(prefect_api: str, tmp_path: Path) -> None:
    with ExitStack() as stack:
        try:
            disk = stack.enter_context(faults.tmpfs(64))
        except OSError as exc:
            pytest.skip(f"no small tmpfs to fill: {exc}")
        out = disk / "out"
        done = run_module("automl.run", "diabetes", "--max-runtime-secs", 30, "--include-algos", "GLM",
                          "--output", out, cwd=tmp_path, timeout=600, CI="true")
        assert done.returncode == 2, done.stderr[-3000:]  # 64 KiB cannot hold the report
        assert faults.disk_full_problems(done.returncode, done.stderr) == []
        assert "free disk space" in done.stderr.strip().splitlines()[-1]
        assert faults.corrupt_files(out, finished=False) == []
