"""The search split and job in files for the run's local worker processes: written once by the run, memory-mapped
by each worker (``python -m automl.worker``), which then starts without reading and preprocessing the table again:
on a million rows that is ~1 GB and tens of seconds per worker, and every recycled worker paid it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from automl.engines import SearchData, SearchJob
from automl.image_store import ImageRows
from automl.state import RunState

__all__ = ["worker_spec", "load_worker_files", "ARRAYS"]

#: The search split's arrays, as worker processes read them (see :func:`load_worker_files`).
ARRAYS = ("x_train", "y_train", "x_val", "y_val")


def worker_spec(state: RunState, build: Callable[[], tuple[SearchData, SearchJob]]) -> dict[str, Any]:
    """What a worker process needs: the search split and job in files (for workers on this machine; ``build``
    makes them, once per run), and the config as JSON and where the data is (for workers elsewhere, which rebuild
    the state)."""
    source = state.config.dataset
    in_memory = source is None or not Path(source).exists() and source not in _builtin_names()
    copy = state.output / "search" / "dataset.joblib"
    if state.worker_files is None:  # written once per run: start_workers and the search stage both ask
        if in_memory:  # workers elsewhere read a copy, card and images included
            copy.parent.mkdir(parents=True, exist_ok=True)
            joblib.dump(state.dataset, copy)
        state.worker_files = _write(state.output / "search" / "local", *build())
    source = str(copy.resolve()) if in_memory else source
    return {"config": state.config.to_json(), "data": source, "fingerprint": state.dataset.fingerprint,
            "local": str(state.worker_files.resolve())}


def _write(folder: Path, data: SearchData, job: SearchJob) -> Path:
    """The search split as ``.npy`` files in ``folder`` and the job beside them (written whole, then renamed)."""
    partial = folder.with_name("local.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    # Stored images (ImageRows) are already a file on disk: they travel in job.joblib as its name and their rows.
    arrays = [name for name in ARRAYS if not isinstance(getattr(data, name), ImageRows)]
    for name in arrays:
        np.save(partial / f"{name}.npy", getattr(data, name))
    # A metric holds functions (not picklable): it is looked up again by name.
    joblib.dump({"job": replace(job, metric=None), "metric": job.metric.name,
                 "data": replace(data, **dict.fromkeys(arrays))}, partial / "job.joblib")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def load_worker_files(folder: Path) -> tuple[SearchJob, SearchData]:
    """The job and the memory-mapped search split that :func:`worker_spec` wrote."""
    from automl.metrics import get

    saved = joblib.load(folder / "job.joblib")
    data = replace(saved["data"], **{name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAYS
                                     if (folder / f"{name}.npy").exists()})
    return replace(saved["job"], metric=get(saved["metric"], data.task)), data


def _builtin_names() -> set[str]:
    from automl.data import builtin_cards

    return set(builtin_cards())
