"""bench/scale_rows.py: its synthetic table is make_synthetic.py's; its child runs are measured and killed whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
#: A verbatim copy of ``../shared/datasets/make_synthetic.py`` (bench/README.md): the test runs on any checkout.
MAKE_SYNTHETIC = BENCH / "reference" / "make_synthetic.py"
SHARED_SYNTHETIC = BENCH.parents[1] / "shared" / "datasets" / "make_synthetic.py"
sys.path.insert(0, str(BENCH))

import scale_rows  # noqa: E402  (a script folder, not a package)
from _common import child_env, run_sampled  # noqa: E402


def test_synthetic_table_is_make_synthetic_value_for_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if SHARED_SYNTHETIC.exists():  # the copy is still the shared recipe
        assert MAKE_SYNTHETIC.read_bytes() == SHARED_SYNTHETIC.read_bytes()
    subprocess.run([sys.executable, str(MAKE_SYNTHETIC), "2500", str(tmp_path / "ref.csv")], check=True,
                   capture_output=True)
    monkeypatch.setattr(scale_rows, "BLANK_BLOCK_ROWS", 1000)  # blanks drawn in 3 blocks, one of them short
    scale_rows.synthetic_frame(2500).to_csv(tmp_path / "ours.csv", index=False)
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()


def test_run_sampled_counts_the_tree_and_kills_it_whole(tmp_path: Path) -> None:
    # A grandchild holding 200 MB, and one in a session of its own (as H2O starts Java).
    hold = f"{sys.executable} -c 'x = b\"x\" * (200 * 2**20); import time; time.sleep(61.37)'"
    done = run_sampled(["bash", "-c", f"{hold} & setsid sleep 61.37 & wait"], tmp_path, child_env(tmp_path), 3)
    assert done.timed_out and done.exit_code != 0
    assert done.peak_rss_mb > 200
    left = subprocess.run(["pgrep", "-f", "61.37"], capture_output=True, text=True).stdout.split()
    assert not left, f"processes left running: {left}"
