"""Which Prefect API a CLI run talks to, found or started so that start-up cannot kill the run.

Order, decided before ``prefect`` is imported:

1. ``PREFECT_API_URL`` is set: that server. If it does not answer within
   ``API_WAIT_SECONDS``, the run stops with one line (exit 2) before any training.
2. A Prefect server answers on this machine's default address (``prefect server start``:
   ``http://127.0.0.1:4200/api``): that server, so repeated runs pay no start-up and
   show in its UI.
3. Otherwise a temporary server for this run: the process Prefect itself starts for its
   temporary API (uvicorn on ``prefect.server.api.server:create_app``), but started at
   the CLI's first line, so its start-up (database migrations: 10-60 s on a fresh
   ``PREFECT_HOME`` or a busy machine) overlaps loading the data and TensorFlow, and
   without importing Prefect's server code into this process. It may take up to
   ``EPHEMERAL_STARTUP_SECONDS`` (Prefect's own default of 20 s killed runs). It stops
   with the run, and with the run's process if that is killed (Linux). If it still fails,
   one line (exit 2) says what to do.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

__all__ = ["ApiStartup", "ServerUnavailable", "DEFAULT_LOCAL_API", "EPHEMERAL_STARTUP_SECONDS"]

DEFAULT_LOCAL_API = "http://127.0.0.1:4200/api"
#: Seconds Prefect's temporary server may take to answer (env var of the same name overrides).
EPHEMERAL_STARTUP_SECONDS = 600
_STARTUP_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
#: Seconds a configured server may take to answer its health check (a busy machine, a restarting server).
API_WAIT_SECONDS = 30.0


class ServerUnavailable(RuntimeError):
    """No Prefect API could be reached or started; the message says what to do."""


def _healthy(api_url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


class ApiStartup:
    """Find or start the Prefect API in the background; :meth:`wait` before the first flow run."""

    def __init__(self) -> None:
        self.kind = ""
        #: A temporary server on a Prefect home without a database yet: it migrates one first (10-60 s).
        self.slow_start = False
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._server: subprocess.Popen | None = None

    def begin(self) -> ApiStartup:
        """Decide which API to use; start a temporary server if none answers. Call before importing prefect."""
        configured = os.environ.get("PREFECT_API_URL")
        if configured:
            self.kind = f"configured server {configured}"
            self._watch(configured, API_WAIT_SECONDS, f"PREFECT_API_URL={configured} does not answer "
                        f"({configured.rstrip('/')}/health); start that server, or unset PREFECT_API_URL to run "
                        "on a temporary one")
        elif _healthy(DEFAULT_LOCAL_API, timeout=0.3):
            os.environ["PREFECT_API_URL"] = DEFAULT_LOCAL_API  # before prefect reads its settings
            self.kind = f"local server {DEFAULT_LOCAL_API}"
        else:
            url = self._start_temporary()
            os.environ["PREFECT_API_URL"] = url
            self.kind = f"temporary server {url}"
            timeout = float(os.environ.get(_STARTUP_ENV) or EPHEMERAL_STARTUP_SECONDS)
            self._watch(url, timeout, f"Prefect's temporary server did not answer within {timeout:g}s; start one "
                        f"with `prefect server start` and set PREFECT_API_URL={DEFAULT_LOCAL_API}, or raise "
                        f"{_STARTUP_ENV}")
        return self

    def wait(self) -> None:
        """Block until the API answers; raise :class:`ServerUnavailable` if it never will."""
        if self._thread is not None:
            self._thread.join()
        if self.error:
            raise ServerUnavailable(self.error)

    def _watch(self, url: str, timeout: float, message: str) -> None:
        def poll() -> None:
            deadline = time.monotonic() + timeout  # wall time, not a count of sleeps: a busy machine is slow
            while not _healthy(url, timeout=2.0):
                if self._server is not None and self._server.poll() is not None:
                    self.error = f"Prefect's temporary server exited with code {self._server.returncode}; {message}"
                    return
                if time.monotonic() > deadline:
                    self.error = message
                    return
                time.sleep(0.2)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()

    def _start_temporary(self) -> str:
        """Start the temporary server process; return its API URL."""
        import importlib.util

        # Where prefect is installed, without importing it here (that alone takes seconds): the child loads it.
        package_dir = os.path.dirname(str(importlib.util.find_spec("prefect").origin))
        with socket.socket() as sock:  # a free port, chosen by the kernel
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
        configured_db = os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL")
        self.slow_start = not configured_db and not (home / "prefect.db").exists()
        # The command and flags of Prefect's own SubprocessASGIServer (temporary API, no UI).
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        self._server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", os.path.dirname(package_dir),
             "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "error", "--lifespan", "on"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        atexit.register(self.stop)
        return f"http://127.0.0.1:{port}/api"

    def stop(self) -> None:
        """Stop the temporary server, if this run started one."""
        if self._server is not None and self._server.poll() is None:
            self._server.terminate()
            try:
                self._server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._server.kill()


def _die_with_parent() -> None:
    """In the server's child process: get SIGTERM when the run's process dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
