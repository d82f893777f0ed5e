"""Worker processes started before the run knows its study: they import TensorFlow while the run starts up.

A local worker spends 7-9 s importing TensorFlow (more on busy cores) before its first trial. Started when its
study opens, after the Prefect API and the data, that import ran beside the reference models and a 30 s run's
first trial came back 17 s after the worker started, too late for a network row. :func:`warm_up` starts the
workers at once (``python -m automl.worker --warm``); :meth:`automl.engines.optuna_engine.pool.Pool.start` hands
one its arguments on its standard input when the study is open (:func:`take`). A warm worker that is never
claimed reads the end of its input when the run's process ends (or dies) and exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["warm_up", "take", "discard", "serve", "WARM_FLAG"]

#: The worker's flag for "import TensorFlow, then wait for your arguments on standard input".
WARM_FLAG = "--warm"

#: The import's niceness: it runs on what the run's start-up leaves of the cores.
IMPORT_NICENESS = 15

_warm: list[subprocess.Popen] = []


def warm_up(count: int) -> None:
    """Start ``count`` workers (in all, with those already warm) that import TensorFlow and wait."""
    while len(_warm) < count:
        _warm.append(subprocess.Popen([sys.executable, "-m", "automl.worker", WARM_FLAG], stdin=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def take(argv: list[str], log: Path) -> subprocess.Popen | None:
    """A warm worker given ``argv`` (its command line, the program left out) and the ``log`` file for its output;
    None when none is warm (or the one that was has died)."""
    while _warm:
        proc = _warm.pop(0)
        if proc.poll() is not None or proc.stdin is None:
            continue
        try:
            proc.stdin.write((json.dumps({"argv": argv, "log": str(log)}) + "\n").encode())
            proc.stdin.close()  # the one line it waits for; its end also tells it nothing more comes
        except OSError:  # it died between the look and the write
            continue
        return proc
    return None


def discard() -> None:
    """Stop the warm workers no search has taken (the run failed, or started the workers it needed)."""
    while _warm:
        proc = _warm.pop()
        proc.kill()
        proc.wait()


def _import_gently(import_tensorflow: Callable[[], None]) -> None:
    """Import TensorFlow at a low priority (this thread's own, Linux): the run's process and the Prefect API start
    up on the same cores, and a run's start-up grew from 6 s to 10 s when this import competed as an equal. The
    threads that train are started later, by the main thread, at the normal priority."""
    with contextlib.suppress(AttributeError, OSError):  # no per-thread priority (not Linux): an equal, then
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), IMPORT_NICENESS)
    import_tensorflow()


def serve(main: Callable[[list[str]], int]) -> int:
    """A warm worker's life: TensorFlow, then one line of arguments for ``main`` (``automl.worker.main``; none: the
    run ended without a search)."""
    from automl.quiet import import_tensorflow

    importer = threading.Thread(target=_import_gently, args=(import_tensorflow,))
    importer.start()
    importer.join()
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    order = json.loads(line)
    fd = os.open(order["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)  # as a worker started cold: its output (TensorFlow's chatter, tracebacks) goes to its log
    os.dup2(fd, 2)
    os.close(fd)
    return main(order["argv"])
