"""Which Prefect API a CLI run talks to, found or started so that start-up cannot kill the run.

Order, decided before ``prefect`` is imported:

1. ``PREFECT_API_URL`` is set: that server. If it does not answer within
   ``API_WAIT_SECONDS``, the run stops with one line (exit 2) before any training.
2. A Prefect server answers on this machine's default address (``prefect server start``:
   ``http://127.0.0.1:4200/api``): that server, so repeated runs pay no start-up and
   show in its UI.
3. Otherwise Prefect's temporary server, started at once in a background thread while
   the run loads its data and TensorFlow, with a start-up timeout of
   ``EPHEMERAL_STARTUP_SECONDS`` (Prefect's default of 20 s is shorter than its own
   migrations on a fresh ``PREFECT_HOME`` or a busy machine, and killed runs). If it
   still fails, one line (exit 2) says what to do.
"""

from __future__ import annotations

import os
import threading
import urllib.request

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
        self.error: str | None = None
        self._thread: threading.Thread | None = None

    def begin(self) -> ApiStartup:
        """Decide which API to use; start the temporary server in a thread if none answers."""
        configured = os.environ.get("PREFECT_API_URL")
        if configured:
            self.kind = f"configured server {configured}"
            self._thread = threading.Thread(target=self._wait_for, args=(configured,), daemon=True)
        elif _healthy(DEFAULT_LOCAL_API, timeout=0.3):
            os.environ["PREFECT_API_URL"] = DEFAULT_LOCAL_API  # before prefect reads its settings
            self.kind = f"local server {DEFAULT_LOCAL_API}"
        else:
            os.environ.setdefault(_STARTUP_ENV, str(EPHEMERAL_STARTUP_SECONDS))
            self.kind = "temporary server"
            self._thread = threading.Thread(target=self._start_ephemeral, daemon=True)
        if self._thread is not None:
            self._thread.start()
        return self

    def wait(self) -> None:
        """Block until the API answers; raise :class:`ServerUnavailable` if it never will."""
        if self._thread is not None:
            self._thread.join()
        if self.error:
            raise ServerUnavailable(self.error)

    def _wait_for(self, url: str) -> None:
        import time

        deadline = time.monotonic() + API_WAIT_SECONDS
        while not _healthy(url, timeout=2.0):
            if time.monotonic() > deadline:
                self.error = (f"PREFECT_API_URL={url} does not answer ({url.rstrip('/')}/health); start that "
                              "server, or unset PREFECT_API_URL to run on a temporary one")
                return
            time.sleep(0.5)

    def _start_ephemeral(self) -> None:
        try:
            from prefect.server.api.server import SubprocessASGIServer

            # The same instance Prefect's client uses for its temporary API: started here, reused there.
            SubprocessASGIServer().start(timeout=int(os.environ[_STARTUP_ENV]))
        except Exception as exc:  # report in one line; the CLI exits 2 without a traceback
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.error = (f"Prefect's temporary server did not start ({first[:200]}); start one with "
                          f"`prefect server start` and set PREFECT_API_URL={DEFAULT_LOCAL_API}, or raise "
                          f"{_STARTUP_ENV}")
