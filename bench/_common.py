"""What every benchmark shares: find the package, quiet TensorFlow, log to stderr; run a child and sample it.

The child helpers run a command as a user would (its own session, a throw-away Prefect home) and sample the
resident memory and CPU time of its whole process tree (the CLI, its trial workers, the Prefect server it
starts) from ``/proc``, so no benchmark needs psutil.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

try:
    importlib.metadata.distribution("automl")
except importlib.metadata.PackageNotFoundError:
    sys.path.insert(0, str(ROOT))  # run from a checkout

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def log(message: str) -> None:
    """Progress for people; stdout carries only the JSON line."""
    print(message, file=sys.stderr, flush=True)


POLL_SECONDS = 0.5
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def child_env(tmp: Path, prefect_home: Path | None = None) -> dict[str, str]:
    """The caller's environment for a child run: quiet, a throw-away Prefect and Keras home, the checkout importable.

    A set ``PREFECT_API_URL`` is kept (the run then uses that server, outside the measured process tree);
    ``prefect_home`` is a Prefect home shared by several runs (a user's machine after the first run).
    """
    env = {**os.environ, "CI": "true", "KERAS_HOME": str(tmp / "keras-home")}
    if "PREFECT_API_URL" not in env:
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        env["PREFECT_HOME"] = str(prefect_home or tmp / "prefect-home")
    try:
        importlib.metadata.distribution("automl")
    except importlib.metadata.PackageNotFoundError:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _tree(root: int) -> dict[int, tuple[int, float]]:
    """Resident bytes and CPU seconds (its own and its reaped children's) of ``root`` and each descendant."""
    parent: dict[int, int] = {}
    usage: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        pid = int(entry)
        parent[pid] = int(fields[1])
        usage[pid] = int(fields[21]) * PAGE_BYTES, sum(int(f) for f in fields[11:15]) / TICKS
    tree = {}
    for pid, use in usage.items():
        p = pid
        while p > 1 and p != root:
            p = parent.get(p, 0)
        if p == root:
            tree[pid] = use
    return tree


def tree_pss(root: int) -> int:
    """Proportional set size, in bytes, of ``root`` and its descendants (``/proc/<pid>/smaps_rollup``): memory the
    tree holds, each shared page counted once in all. Summed RSS counts a shared page once per process, and
    every TensorFlow process maps some 460 MB of the same shared libraries."""
    total = 0
    for pid in _tree(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("Pss:")) * 1024
        except (OSError, StopIteration):
            continue  # the process ended while we looked
    return total


def tree_usage(root: int) -> tuple[int, float]:
    """Resident bytes and CPU seconds of ``root`` and all its descendants, from ``/proc/<pid>/stat``."""
    tree = _tree(root).values()
    return sum(rss for rss, _ in tree), sum(cpu for _, cpu in tree)


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def wait_idle(limit: float = 90.0, busy_pct: float = 10.0) -> float:
    """Wait (at most ``limit`` s) until the machine's CPUs were under ``busy_pct`` % busy for 3 s in a row.

    The load average lags by a minute; what a measurement of start-up needs is that the previous run's
    processes are gone. Returns the busy share of the last 3 s, in %.
    """
    deadline, share = time.time() + limit, 100.0
    while time.time() < deadline:
        b0, t0 = _cpu_times()
        time.sleep(3.0)
        b1, t1 = _cpu_times()
        share = 100.0 * (b1 - b0) / max(t1 - t0, 1.0)
        if share < busy_pct:
            break
    return round(share, 1)


def _label(pid: int) -> str:
    """A short name for a process of the tree: the module it runs (``automl.worker``) or its program."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return "gone"
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1]
    return next((a for a in argv[1:] if "prefect" in a or "uvicorn" in a), Path(argv[0]).name if argv else "?")


def tree_breakdown(root: int) -> dict[str, float]:
    """Resident MB of the tree's processes, summed by :func:`_label` (where a peak's memory sits)."""
    out: dict[str, float] = {}
    for pid, (rss, _) in _tree(root).items():
        label = _label(pid)
        out[label] = round(out.get(label, 0.0) + rss / 2**20, 1)
    return out


def kill_tree(root: int) -> None:
    """SIGKILL ``root`` and every descendant, by id: some (H2O's Java) run in sessions of their own."""
    for pid in _tree(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True)
class Finished:
    """How a sampled child run ended."""

    exit_code: int
    wall_s: float
    peak_rss_mb: float
    cpu_s: float
    stdout: str
    last_stderr_line: str
    timed_out: bool
    #: Resident MB by process kind at the peak (see :func:`tree_breakdown`).
    peak_by_process: dict[str, float] = field(default_factory=dict)
    #: The tree's largest sampled proportional set size (see :func:`tree_pss`), in MB.
    peak_pss_mb: float = 0.0


def run_sampled(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> Finished:
    """Run ``cmd``; sample its process tree every ``POLL_SECONDS``; kill the tree at ``timeout``.

    stdout and stderr go to ``cwd/stdout.log`` and ``cwd/stderr.log`` (kept for reading a failure).
    """
    cwd.mkdir(parents=True, exist_ok=True)
    with open(cwd / "stdout.log", "wb") as out, open(cwd / "stderr.log", "wb") as err:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err)
        peak, peak_pss, cpu, timed_out, at_peak = 0, 0, 0.0, False, {}
        while proc.poll() is None:
            rss, seconds = tree_usage(proc.pid)
            if rss > peak:
                peak, at_peak = rss, tree_breakdown(proc.pid)
            peak_pss = max(peak_pss, tree_pss(proc.pid))
            cpu = max(cpu, seconds)
            timed_out = time.monotonic() - start > timeout
            if timed_out:
                kill_tree(proc.pid)
                break
            time.sleep(POLL_SECONDS)
        code = proc.wait()
        wall = time.monotonic() - start
    lines = (cwd / "stderr.log").read_text(errors="replace").strip().splitlines()
    return Finished(code, round(wall, 1), round(peak / 2**20, 1), round(cpu, 1),
                    (cwd / "stdout.log").read_text(errors="replace"), lines[-1] if lines else "", timed_out, at_peak,
                    round(peak_pss / 2**20, 1))


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def prefect_server() -> Any:
    """A ``prefect server start`` for the runs (PREFECT_API_URL set), stopped afterwards."""
    import urllib.request

    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="automl-bench-server-"))
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        os.environ["PREFECT_API_URL"] = url
        yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)
