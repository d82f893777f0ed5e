"""Shared fixtures: an isolated environment, a real Prefect server, and the CLI in a subprocess."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
_HOME = Path(tempfile.mkdtemp(prefix="automl-tests-"))

# Before anything imports Prefect or Keras: keep them (and our image cache) out of ~/.prefect, ~/.keras, ~/.cache.
os.environ.update({
    "PREFECT_HOME": str(_HOME / "prefect"),
    "KERAS_HOME": str(_HOME / "keras"),
    "AUTOML_CACHE_DIR": str(_HOME / "cache"),  # image folders' decoded pixels
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PREFECT_LOGGING_LEVEL": "WARNING",
})


PG_URL = os.environ.get("AUTOML_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="module")
def pg_url() -> str:
    """The PostgreSQL URL; a failure, never a skip, when no server answers (README: the tests need one)."""
    import psycopg2

    try:
        psycopg2.connect(PG_URL, connect_timeout=3).close()
    except psycopg2.OperationalError as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        pytest.fail(f"no PostgreSQL server answers at {PG_URL} ({why}); start one (trust auth, database test) "
                    "or set AUTOML_TEST_POSTGRES to a postgresql:// URL")
    return PG_URL


@pytest.fixture
def project(pg_url: str) -> Iterator[str]:
    """A unique project name; its studies are deleted from PostgreSQL afterwards."""
    import optuna

    name = f"test-pg-{uuid.uuid4().hex[:10]}"
    yield name
    storage = optuna.storages.RDBStorage(pg_url)
    for study_name in optuna.study.get_all_study_names(storage):
        if study_name.startswith(f"{name}-"):
            optuna.delete_study(study_name=study_name, storage=storage)
    storage.engine.dispose()


class FakeClock:
    """A clock that moves only when told to (for budgets and schedules without timing)."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: the installed package, or this checkout if not installed."""
    env = {**os.environ, **extra}
    try:
        importlib.metadata.distribution("automl")
    except importlib.metadata.PackageNotFoundError:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


def run_module(module: str, *args: str, cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """``python -m module args`` in a fresh process; returns the completed process (text output)."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=subprocess_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prefect_command() -> list[str]:
    script = Path(sys.executable).parent / "prefect"
    return [str(script)] if script.exists() else [sys.executable, "-m", "prefect"]


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """A real ``prefect server start`` on 127.0.0.1 at a free port, for the whole session.

    Sets ``PREFECT_API_URL`` for this process and its children; stops the server after.
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = open(_HOME / "prefect-server.log", "w")  # noqa: SIM115 - closed in the finally below
    server = subprocess.Popen([*_prefect_command(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Prefect server did not start; see {_HOME / 'prefect-server.log'}")
            time.sleep(0.5)
        os.environ["PREFECT_API_URL"] = url
        yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def on_server(prefect_api: str) -> Iterator[str]:
    """This module's tests talk to the session's Prefect server."""
    with prefect_server(prefect_api) as url:
        yield url


def tree_digest(folder: Path) -> str:
    """A digest of every file under ``folder`` with its relative path: equal digests, untouched trees."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


@contextmanager
def prefect_server(url: str) -> Iterator[str]:
    """Point this process's Prefect at the server ``url``, whatever imported Prefect first.

    On the way out, send the logs and events still queued: once the session's server
    has stopped, Prefect would retry them for a minute at interpreter exit.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}):
        try:
            yield url
        finally:
            APILogWorker.drain_all(timeout=30)
            EventsWorker.drain_all(timeout=30)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, alive: Callable[[], bool],
             log: Path | None = None) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` s or once ``alive()`` is False.

    For tests that drive real processes.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        if not alive():
            tail = f":\n{log.read_text()[-3000:]}" if log else ""
            pytest.fail(f"gave up waiting for {what}: a process exited{tail}")
        time.sleep(0.1)
    pytest.fail(f"gave up waiting for {what} after {timeout:.0f}s")


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a process started with ``start_new_session=True``, with its children."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
