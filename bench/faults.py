"""Faults and load: the CLI must survive a busy machine, SIGKILL at any moment, a killed worker, a full disk.

Every case runs ``python -m automl.run diabetes`` in child processes (``CI=true``, a
``PREFECT_HOME`` of its own, no ``PREFECT_API_URL``: the run starts its temporary server)
and prints one JSON line on stdout: ``{"case", "runs", "survived", "lost_trials",
"corrupt_files", "wall_s", "notes", "failures"}``; progress goes to stderr.

- ``fresh``: N runs (20), each with a brand-new ``PREFECT_HOME``.
- ``burners``: N runs (10) while 4 processes burn CPU (``while True: pass``).
- ``kill``: one output folder; N times (10) SIGKILL the run's process group at a seeded random
  moment (5 s to the budget, or to the last rerun's wall time if longer: start-up on a busy machine
  outlasts the budget), then rerun it to completion. A trial COMPLETE at the kill that is not
  COMPLETE in the study and in ``trials.csv`` afterwards is lost.
- ``worker-kill``: ``--workers 2 --max-models 8``; SIGKILL one worker mid-trial once a trial is COMPLETE; the
  run must finish, list the trial as FAIL "interrupted…", and run its configuration again.
- ``disk-full``: ``--output`` on a small tmpfs (64 KiB, 512 KiB, 2 MiB in turn): exit 2 with an
  ``error:`` line and no traceback, or exit 0 with whole outputs; never a half-written file.
  Skipped (``{"case": "disk-full", "skipped": why}``) where tmpfs cannot be mounted.

A run survived when it exited as expected and every output file is whole (:func:`corrupt_files`).

    python bench/faults.py [--cases fresh,burners,kill,worker-kill,disk-full] [--runs N] [--budget S]
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import io
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import ROOT, log

CASES = ("fresh", "burners", "kill", "worker-kill", "disk-full")
DEFAULT_RUNS = {"fresh": 20, "burners": 10, "kill": 10, "worker-kill": 1, "disk-full": 3}
DEFAULT_BUDGET = {"fresh": 30.0, "burners": 30.0, "kill": 60.0, "worker-kill": 120.0, "disk-full": 30.0}
BURNERS = 4
KILL_ARGS = ("--include-algos", "GLM,MLP", "--nfolds", "3")
DISK_SIZES_KB = (64, 512, 2048)
#: Files every finished run writes (relative to its output folder).
#: The families a run on a table searches, each in a study of its own.
SEARCHED = ("mlp", "gbm")
REQUIRED = ("leaderboard.csv", "trials.csv", "event_log.csv", "run.json", "report.html", "leader/model.json")
LOCAL_API = "http://127.0.0.1:4200/api/health"


# ---- checking a run's outputs (tests/test_faults.py uses these) ----------------------------------

def _csv_problem(path: Path) -> str | None:
    """Why a CSV file is not whole (a torn last line, ragged rows, unparsable), or None."""
    import pandas as pd

    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        return "does not end with a newline (cut short)"
    widths = {len(row) for row in csv.reader(io.StringIO(text))}
    if len(widths) != 1:
        return f"rows of {sorted(widths)} fields"
    try:
        pd.read_csv(path)
    except (ValueError, pd.errors.ParserError) as exc:
        return f"pandas cannot read it: {exc}"
    return None


def _json_problem(path: Path) -> str | None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        return f"not JSON: {exc}"
    return None


def _html_problem(path: Path) -> str | None:
    return None if path.read_text(encoding="utf-8").rstrip().endswith("</html>") else "does not end with </html>"


def _problem(path: Path) -> str | None:
    check = {".csv": _csv_problem, ".json": _json_problem, ".html": _html_problem}[path.suffix]
    try:
        return check(path)
    except (OSError, UnicodeDecodeError) as exc:
        return f"unreadable: {exc}"


def corrupt_files(out: Path, finished: bool = True) -> list[str]:
    """``"path: why"`` for each output file that is not whole, and for temporary files left behind.

    ``finished``: the run exited 0, so every file of :data:`REQUIRED` must exist, and the
    board must name the leader and a saved model per row. Otherwise (a run that failed)
    only the files that exist are checked: absent is fine, half-written is not.
    """
    problems = []
    present = [out / name for name in REQUIRED if (out / name).exists()]
    if finished:
        problems += [f"{name}: missing" for name in REQUIRED if not (out / name).exists()]
    present += sorted(out.glob("*.csv")) + sorted(out.glob("models/*/model.json"))
    for path in dict.fromkeys(present):  # each once, in order
        why = _problem(path)
        if why:
            problems.append(f"{path.relative_to(out)}: {why}")
    if finished and not problems:
        problems += _board_problems(out)
    problems += [f"{p.relative_to(out)}: left behind" for p in sorted(out.rglob("*"))
                 if p.name.endswith(".tmp") or ".old-" in p.name]
    return problems


def _board_problems(out: Path) -> list[str]:
    """The leaderboard's rows against the saved models and the leader."""
    import pandas as pd

    board = pd.read_csv(out / "leaderboard.csv")
    if board.empty:
        return ["leaderboard.csv: no rows"]
    problems = [f"models/{m}/model.json: missing for a leaderboard row" for m in board["model_id"]
                if not (out / "models" / str(m) / "model.json").exists()]
    leader = json.loads((out / "leader" / "model.json").read_text()).get("model_id")
    if leader != board["model_id"].iloc[0]:
        problems.append(f"leader/model.json: model_id {leader!r}, but the board's first row is "
                        f"{board['model_id'].iloc[0]!r}")
    return problems


def study_trials(out: Path, family: str = "mlp") -> list[Any]:
    """The trials of the run's study of ``family`` (``search/study.journal``: the network search's study, or
    ``<study>-gbm`` for the GBM search); none before the search created it."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = out / "search" / "study.journal"
    if not path.exists():
        return []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(path)))
    return [t for name in optuna.study.get_all_study_names(storage) if (family == "gbm") == name.endswith("-gbm")
            for t in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)]


def complete_numbers(out: Path) -> set[tuple[str, int]]:
    """(family, number) of the COMPLETE trials of the run's studies."""
    return {(family, t.number) for family in SEARCHED for t in study_trials(out, family) if t.state.name == "COMPLETE"}


def lost_trials(before: set[tuple[str, int]], out: Path) -> list[tuple[str, int]]:
    """Trials of ``before`` (COMPLETE earlier) that are not COMPLETE both in the study and in ``trials.csv`` now."""
    import pandas as pd

    now = complete_numbers(out)
    listed: set[tuple[str, int]] = set()
    if (out / "trials.csv").exists():
        rows = pd.read_csv(out / "trials.csv")
        complete = rows[rows["state"] == "COMPLETE"]
        listed = set(zip(complete["family"], complete["number"].astype(int), strict=True))
    return sorted(n for n in before if n not in now or n not in listed)


# ---- running the CLI ----------------------------------------------------------------------------

def cli_env(home: Path) -> dict[str, str]:
    """The environment of one run: CI, its own Prefect and Keras homes under ``home``, no API URL."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(CI="true", PREFECT_HOME=str(home / "prefect"), KERAS_HOME=str(home / "keras"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", TF_CPP_MIN_LOG_LEVEL="2")
    try:
        importlib.metadata.distribution("automl")
    except importlib.metadata.PackageNotFoundError:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@dataclass
class Run:
    """One CLI process: started in a session of its own, so that ``os.killpg`` stops it with every child."""

    proc: subprocess.Popen
    out: Path
    log: Path
    started: float

    def finish(self, timeout: float) -> int:
        """Wait for the exit (SIGKILL after ``timeout`` s); the exit code."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def wall(self) -> float:
        return time.monotonic() - self.started

    def stderr_tail(self, lines: int = 8) -> list[str]:
        return self.log.read_text(errors="replace").strip().splitlines()[-lines:]


def start_cli(home: Path, out: Path, budget: float, *args: str) -> Run:
    """``python -m automl.run diabetes --max-runtime-secs budget --output out args`` with cwd ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / f"run-{time.monotonic_ns()}.log"
    with log_path.open("w") as fh:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "automl.run", "diabetes", "--max-runtime-secs", f"{budget:g}",
                                 "--output", str(out), *args], cwd=home, env=cli_env(home), stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return Run(proc, out, log_path, time.monotonic())


@dataclass
class Tally:
    """What one case found, printed as its JSON line."""

    case: str
    runs: int = 0
    survived: int = 0
    lost: int = 0
    corrupt: int = 0
    walls: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    #: Where the logs of failed runs are kept (the runs' own folders are removed); made at the first failure.
    kept: Path | None = None

    def record(self, run: Run, code: int, problems: Sequence[str], corrupt: Sequence[str],
               lost: Sequence[int] = (), **details: Any) -> None:
        """One run: it survived without ``problems`` (exit code, behaviour), ``corrupt`` files or ``lost`` trials."""
        self.runs += 1
        self.walls.append(round(run.wall(), 1))
        self.lost += len(lost)
        self.corrupt += len(corrupt)
        whole = not (problems or corrupt or lost)
        self.survived += whole
        if not whole:
            self.kept = self.kept or Path(tempfile.mkdtemp(prefix="automl-faults-logs-"))
            kept = shutil.copy(run.log, self.kept / f"{self.case}-{self.runs}.log")
            self.failures.append({"run": self.runs, "returncode": code, "problems": list(problems),
                                  "corrupt": list(corrupt), "lost": list(lost), "stderr_tail": run.stderr_tail(),
                                  "log": str(kept), **details})
        log(f"[{self.case}] run {self.runs}: exit {code}, {run.wall():.0f}s, {'survived' if whole else 'FAILED'}")

    def line(self) -> dict[str, Any]:
        walls = sorted(self.walls)
        summary = {"min": walls[0], "median": statistics.median(walls), "max": walls[-1]} if walls else {}
        return {"case": self.case, "runs": self.runs, "survived": self.survived, "lost_trials": self.lost,
                "corrupt_files": self.corrupt, "wall_s": summary, "notes": self.notes, "failures": self.failures,
                "loadavg_1m_end": round(os.getloadavg()[0], 2)}


def _exit_problem(code: int, expected: int = 0) -> list[str]:
    return [] if code == expected else [f"exit {code}, expected {expected}"]


def _local_server_note(tally: Tally) -> None:
    """A ``prefect server start`` on the default port is used instead of a temporary server: say so."""
    import urllib.request

    try:
        with urllib.request.urlopen(LOCAL_API, timeout=0.5):
            tally.notes.append(f"a Prefect server answers at {LOCAL_API}: runs used it, not a temporary server")
    except OSError:
        pass


# ---- the cases ----------------------------------------------------------------------------------

def plain_runs(case: str, runs: int, budget: float, timeout: float) -> Tally:
    """``runs`` complete runs, each in a new folder with a new ``PREFECT_HOME``."""
    tally = Tally(case)
    _local_server_note(tally)
    for _ in range(runs):
        home = Path(tempfile.mkdtemp(prefix=f"automl-faults-{case}-"))
        run = start_cli(home, home / "out", budget)
        code = run.finish(timeout)
        tally.record(run, code, _exit_problem(code), corrupt_files(run.out, finished=code == 0))
        shutil.rmtree(home, ignore_errors=True)
    return tally


@contextmanager
def burners(n: int) -> Iterator[None]:
    """``n`` processes that burn a core each, for the duration."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def kill_and_rerun(runs: int, budget: float, timeout: float, seed: int) -> Tally:
    """SIGKILL the run at ``runs`` random moments in one output folder, each followed by a full rerun."""
    tally = Tally("kill")
    rng = random.Random(seed)
    home = Path(tempfile.mkdtemp(prefix="automl-faults-kill-"))
    out = home / "out"
    horizon, with_trials = budget, 0
    for _ in range(runs):
        moment = rng.uniform(5.0, max(horizon, 6.0))
        victim = start_cli(home, out, budget, *KILL_ARGS)
        try:
            victim.proc.wait(timeout=moment)
            tally.notes.append(f"the run ended (exit {victim.proc.returncode}) before the kill at {moment:.0f}s")
        except subprocess.TimeoutExpired:
            victim.kill()
        before = complete_numbers(out)
        with_trials += bool(before)
        tally.notes.append(f"killed at {moment:.0f}s with {len(before)} COMPLETE trials in the study")
        rerun = start_cli(home, out, budget, *KILL_ARGS)
        code = rerun.finish(timeout)
        horizon = max(budget, rerun.wall())
        tally.record(rerun, code, _exit_problem(code), corrupt_files(out, finished=code == 0), lost_trials(before, out),
                     killed_at_s=round(moment, 1), complete_before=len(before))
    tally.notes.append(f"{with_trials} of {runs} kills came after a trial had completed; "
                       f"{len(complete_numbers(out))} COMPLETE trials in the study at the end")
    shutil.rmtree(home, ignore_errors=True)
    return tally


def _children(pid: int) -> dict[int, str]:
    """Child processes of ``pid``: their command lines."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue  # it ended while we looked
    return found


def _running_worker_trial(run: Run) -> tuple[Any, int] | None:
    """A RUNNING trial with drawn parameters in a worker process of ``run``, once some trial is COMPLETE."""
    trials = study_trials(run.out)
    if not any(t.state.name == "COMPLETE" for t in trials):
        return None
    host = socket.gethostname()
    workers = {f"{host}:{pid}": pid for pid, cmd in _children(run.proc.pid).items() if "automl.worker" in cmd}
    for trial in trials:
        if trial.state.name == "RUNNING" and trial.params and trial.user_attrs.get("worker") in workers:
            return trial, workers[trial.user_attrs["worker"]]
    return None


def _retry_problems(out: Path, victim: Any) -> list[str]:
    """What ``trials.csv`` lacks to show that ``victim`` was killed and its configuration ran again."""
    import pandas as pd

    rows = pd.read_csv(out / "trials.csv").fillna({"error": ""})
    rows = rows[rows["family"] == "mlp"]
    mine = rows[rows["number"] == victim.number]
    problems = []
    if mine.empty or mine["state"].iloc[0] != "FAIL" or not mine["error"].iloc[0].startswith("interrupted"):
        problems.append(f"trial {victim.number} is not listed as FAIL 'interrupted…': {mine.to_dict('records')}")
    again = [n for n, p in zip(rows["number"], rows["params"], strict=True)
             if n != victim.number and victim.params.items() <= json.loads(p).items()]
    if not again:
        problems.append(f"no other trial ran trial {victim.number}'s configuration {victim.params}")
    return problems


def worker_kill(runs: int, budget: float, timeout: float, attempts: int = 5) -> Tally:
    """SIGKILL one worker process in the middle of a trial; the run must retry it and finish."""
    tally = Tally("worker-kill")
    for _ in range(runs):
        home = Path(tempfile.mkdtemp(prefix="automl-faults-worker-"))
        # --max-models ends the run early on a fast machine; the budget leaves a slow one time to search.
        run = start_cli(home, home / "out", budget, "--workers", "2", "--max-models", "8", *KILL_ARGS)
        victim, before = None, set()
        for _ in range(attempts):  # a trial takes about a second: the kill may land just after it ended
            target = _wait(_running_worker_trial, run, timeout)
            if target is None:
                break
            os.kill(target[1], signal.SIGKILL)
            snapshot = {t.number: t for t in study_trials(run.out)}
            before = {("mlp", n) for n, t in snapshot.items() if t.state.name == "COMPLETE"}
            state = snapshot[target[0].number]
            if state.state.name == "RUNNING" or state.user_attrs.get("interrupted"):
                victim = target[0]
                tally.notes.append(f"killed worker {target[1]} in trial {victim.number} at {run.wall():.0f}s, "
                                   f"{len(before)} trials COMPLETE")
                break
        code = run.finish(timeout)
        problems = _exit_problem(code)
        if victim is None:
            problems.append("no worker was killed mid-trial: no search trial ran in a worker after one completed")
        elif code == 0:
            problems += _retry_problems(run.out, victim)
        tally.record(run, code, problems, corrupt_files(run.out, finished=code == 0), lost_trials(before, run.out),
                     killed_trial=None if victim is None else victim.number)
        shutil.rmtree(home, ignore_errors=True)
    return tally


def _wait(probe: Callable[[Run], Any], run: Run, timeout: float) -> Any:
    """Poll ``probe(run)`` until it returns something, the run exits, or ``timeout`` s pass (then None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and run.proc.poll() is None:
        found = probe(run)
        if found:
            return found
        time.sleep(0.2)
    return None


@contextmanager
def tmpfs(size_kb: int) -> Iterator[Path]:
    """A fresh tmpfs of ``size_kb`` KiB (needs root); OSError with the reason if it cannot be mounted."""
    where = Path(tempfile.mkdtemp(prefix="automl-faults-tmpfs-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        where.rmdir()
        raise OSError(f"mount -t tmpfs refused: {done.stderr.strip() or done.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        where.rmdir()


def disk_full_problems(code: int, stderr: str) -> list[str]:
    """How a run on a full disk misbehaved: anything but exit 0, or exit 2 with an ``error:`` line last and
    no traceback (TensorFlow's start-up lines may come before it)."""
    if code == 0:
        return []
    lines = stderr.strip().splitlines() or [""]
    problems = []
    if code != 2 or not lines[-1].startswith("error:"):
        problems.append(f"exit {code}, last stderr line {lines[-1]!r}; expected exit 2 and an 'error:' line")
    if "Traceback (most recent call last)" in stderr:
        problems.append(f"a traceback: {_traceback_end(lines)}")
    return problems


def _traceback_end(lines: list[str]) -> str:
    """Where the last traceback left this project's code, its innermost frame and its exception line."""
    start = max(i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)"))
    block = lines[start + 1:]
    end = next((i for i, line in enumerate(block) if not line.startswith(" ")), len(block))
    frames = [line.strip() for line in block[:end] if line.strip().startswith("File ")]
    ours = [f for f in frames if f'"{ROOT}/' in f and "/.venv/" not in f][-2:]
    return " | ".join(dict.fromkeys([*ours, *frames[-1:], *block[end:end + 1]]))


def disk_full(runs: int, budget: float, timeout: float) -> dict[str, Any] | Tally:
    """Runs whose ``--output`` is on a tmpfs of :data:`DISK_SIZES_KB` in turn."""
    tally = Tally("disk-full")
    for i in range(runs):
        size = DISK_SIZES_KB[i % len(DISK_SIZES_KB)]
        home = Path(tempfile.mkdtemp(prefix="automl-faults-disk-"))
        try:
            with tmpfs(size) as disk:
                run = start_cli(home, disk / "out", budget)
                code = run.finish(timeout)
                tally.record(run, code, disk_full_problems(code, run.log.read_text(errors="replace")),
                             corrupt_files(run.out, finished=code == 0), tmpfs_kb=size)
                tally.notes.append(f"{size} KiB: exit {code}, last line {run.stderr_tail(1)}")
        except OSError as exc:  # only the mount raises here; the run's own errors are in its exit code
            if tally.runs == 0:
                return {"case": "disk-full", "skipped": str(exc)}
            tally.notes.append(f"{size} KiB: {exc}")
        finally:
            shutil.rmtree(home, ignore_errors=True)
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)} (all)")
    parser.add_argument("--runs", type=int, help="runs per case (default: fresh 20, burners 10, kill 10, "
                                                 "worker-kill 1, disk-full 3)")
    parser.add_argument("--budget", type=float, help="--max-runtime-secs of every run (default: 30; kill 60, "
                                                     "worker-kill 120)")
    parser.add_argument("--timeout", type=float, default=900.0, help="SIGKILL a run after this many seconds (900)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments (0)")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s) {', '.join(sorted(unknown))}; choose from {', '.join(CASES)}")
    for case in cases:
        runs, budget = args.runs or DEFAULT_RUNS[case], args.budget or DEFAULT_BUDGET[case]
        log(f"[{case}] {runs} run(s), budget {budget:g}s, load average {os.getloadavg()[0]:.1f}")
        if case == "fresh":
            result = plain_runs(case, runs, budget, args.timeout)
        elif case == "burners":
            with burners(BURNERS):
                result = plain_runs(case, runs, budget, args.timeout)
            result.notes.append(f"{BURNERS} CPU burners on {os.cpu_count()} cores")
        elif case == "kill":
            result = kill_and_rerun(runs, budget, args.timeout, args.seed)
        elif case == "worker-kill":
            result = worker_kill(runs, budget, args.timeout)
        else:
            result = disk_full(runs, budget, args.timeout)
        print(json.dumps(result if isinstance(result, dict) else result.line()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
