"""Images kept on disk: a folder's pixels, decoded and resized once into an ``.npy`` file, read a batch at a time.

A folder of photos may not fit in memory; its resized pixels go to a file in the cache
(:func:`cache_dir`), keyed by the folder's files (names, sizes, modification times) and the
shape, so that a second run on the same folder (a scheduled retrain, a worker) decodes nothing;
one unused for :data:`CACHE_DAYS` days is deleted when another folder is stored.
:class:`ImageRows` is a selection of that file's images: taking rows, scaling pixels and
pickling it copy no pixels, and a network trains from it through a ``tf.data`` pipeline
(:mod:`automl.training`) with one batch's pixels in memory.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ImageRows", "CACHE_ENV", "CACHE_DAYS", "READ_BATCH", "cache_dir", "stored_pixels", "in_batches",
           "row_maxima"]

#: Where decoded image folders are kept (default ``$XDG_CACHE_HOME/automl`` or ``~/.cache/automl``); safe to delete.
CACHE_ENV = "AUTOML_CACHE_DIR"
#: Images read at a time when a whole selection is scanned or predicted (64x64 RGB: 12 MB of uint8).
READ_BATCH = 1024
#: A stored folder not used for this many days is deleted when another is stored (a file per folder version).
CACHE_DAYS = 30
_FORMAT = "1"  # bump when what a stored file holds changes


def cache_dir() -> Path:
    """The folder of stored pixels (created); a temporary one where the cache cannot be written."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "automl"
    folder = Path(os.environ.get(CACHE_ENV) or default) / "images"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    except OSError:  # a read-only home: decode again next time rather than fail
        return Path(tempfile.mkdtemp(prefix="automl-images-"))


def stored_pixels(files: Sequence[Path], shape: tuple[int, int, int], dtype: str,
                  read: Callable[[Path], np.ndarray]) -> ImageRows:
    """``files`` decoded by ``read`` into ``(len(files), *shape)`` pixels of ``dtype`` on disk, or the file an
    earlier call wrote for the same files (same names, sizes and modification times) and shape."""
    key = hashlib.sha256(f"{_FORMAT} {shape} {dtype}".encode())
    for file in files:
        stat = file.stat()
        key.update(f"\0{file.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    target = cache_dir() / f"{key.hexdigest()[:32]}.npy"
    if target.exists():
        os.utime(target)  # used now: its age counts from its last use
    else:
        _prune(target.parent)
        partial = target.with_name(f"{target.stem}.{os.getpid()}.partial.npy")  # two writers never share one
        try:
            pixels = np.lib.format.open_memmap(partial, mode="w+", dtype=dtype, shape=(len(files), *shape))
            for i, file in enumerate(files):
                pixels[i] = read(file)
            pixels.flush()
            del pixels
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
    return ImageRows(target)


def _prune(folder: Path) -> None:
    """Delete the stored folders of ``folder`` unused for :data:`CACHE_DAYS` days (one in use is never that old)."""
    oldest = time.time() - CACHE_DAYS * 86_400
    for stored in folder.glob("*.npy"):
        try:
            if stored.stat().st_mtime < oldest:
                stored.unlink()
        except OSError:  # another run pruned or replaced it first
            continue


class ImageRows:
    """Rows (images) of an ``.npy`` file of shape ``(n, height, width, channels)``, memory-mapped, with their
    pixels divided by ``scale`` (float32) once set.

    It answers ``len``, ``shape``, ``dtype`` and ``x[rows]`` as an array does: an integer gives one image, a
    slice or an index array gives another selection, without reading a pixel. ``batches`` reads them.
    Converting it to an array (``np.asarray``) reads them all: only for bounded selections (a reference
    model's sample).
    """

    def __init__(self, file: str | Path, rows: np.ndarray | None = None, scale: float | None = None,
                 _pixels: np.ndarray | None = None):
        self.file, self.scale = Path(file), scale
        self._pixels = _pixels  # a selection taken from another shares its memory map
        self.rows = np.arange(len(self.pixels)) if rows is None else np.asarray(rows, dtype="int64")

    @property
    def pixels(self) -> np.ndarray:
        """The whole file, memory-mapped (opened once per process)."""
        if self._pixels is None:
            self._pixels = np.load(self.file, mmap_mode="r")
        return self._pixels

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.pixels.shape[1:])

    @property
    def ndim(self) -> int:
        return self.pixels.ndim

    @property
    def dtype(self) -> np.dtype:
        return np.dtype("float32") if self.scale is not None else self.pixels.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            return self.read(np.asarray([key]))[0]
        return type(self)(self.file, self.rows[key], self.scale, self._pixels)

    def __iter__(self) -> Iterator[np.ndarray]:
        for batch in self.batches():
            yield from batch

    def __reduce__(self) -> tuple[Any, ...]:  # a worker reopens the file: the pixels never travel
        return ImageRows, (str(self.file), self.rows, self.scale)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self.read(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype, copy=False)

    def scaled(self, scale: float) -> ImageRows:
        """The same images, their pixels divided by ``scale``, as float32."""
        return type(self)(self.file, self.rows, scale, self._pixels)

    def astype(self, dtype: Any, copy: bool = True) -> ImageRows | np.ndarray:
        """Itself where it already reads as ``dtype`` (as ``ndarray.astype(copy=False)``), else an array."""
        return self if np.dtype(dtype) == self.dtype and not copy else np.asarray(self, dtype=dtype)

    def read(self, positions: np.ndarray) -> np.ndarray:
        """The images at ``positions`` of this selection, as an array (scaled when ``scale`` is set)."""
        rows = self.rows[positions]
        order = np.argsort(rows, kind="stable")  # in file order: the disk reads ahead
        out = np.empty((len(rows), *self.pixels.shape[1:]), dtype=self.pixels.dtype)
        out[order] = self.pixels[rows[order]]
        return out if self.scale is None else (out.astype("float32") / np.float32(self.scale))

    def batches(self, size: int = READ_BATCH) -> Iterator[np.ndarray]:
        """The images in order, ``size`` at a time."""
        for start in range(0, len(self), size):
            yield self.read(np.arange(start, min(start + size, len(self))))


def in_batches(x: np.ndarray | ImageRows, size: int = READ_BATCH) -> Iterator[np.ndarray]:
    """An array's or a stored selection's rows, ``size`` at a time."""
    if isinstance(x, ImageRows):
        yield from x.batches(size)
    else:
        for start in range(0, len(x), size):
            yield x[start:start + size]


def row_maxima(x: np.ndarray | ImageRows) -> np.ndarray:
    """Each image's largest pixel value, a batch at a time."""
    return np.concatenate([batch.reshape(len(batch), -1).max(axis=1) for batch in in_batches(x)])
