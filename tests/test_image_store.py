"""Stored images: a folder decoded once into the cache, rows taken and scaled without reading pixels, pickled
without them, and networks trained from disk a batch at a time."""

from __future__ import annotations

import os
import pickle
import time

import numpy as np
import pytest
from sklearn.datasets import load_digits
from test_images import TINT, save_digit

from automl import images
from automl.image_store import CACHE_DAYS, ImageRows, cache_dir, row_maxima
from automl.images import PixelScaler, load_images
from automl.spaces import CNN_WARM_STARTS
from automl.training import KerasNetwork


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """700 real digits as PNGs, one folder per class, in two sizes and half of them tinted (RGB)."""
    root, d = tmp_path_factory.mktemp("store") / "digits", load_digits()
    for i in range(700):
        save_digit(root / str(d.target[i]) / f"{i:04d}.png", d.images[i], (8, 8) if i % 3 else (12, 12),
                   TINT if i % 2 else None)
    return root


class Unread(ImageRows):
    """Stored images that fail if anything reads them all at once (``np.asarray``)."""

    def __array__(self, dtype=None, copy=None):
        raise AssertionError(f"{len(self)} stored images read all at once")


def test_a_folder_is_stored_once_and_its_rows_are_taken_scaled_and_pickled_without_pixels(folder, monkeypatch):
    x, y, files = load_images(folder)
    assert isinstance(x, ImageRows) and x.shape == (700, 8, 8, 3) and x.dtype == np.uint8
    assert x.file.parent == cache_dir() and len(y) == len(files) == 700
    pixels = np.load(x.file)
    rows = np.array([5, 3, 600, 3])
    taken = x[rows]  # an index array: another selection, nothing read
    assert isinstance(taken, ImageRows) and taken.file == x.file and len(taken) == 4
    assert (np.asarray(taken) == pixels[rows]).all() and (x[600] == pixels[600]).all()
    assert (row_maxima(x[10:20]) == pixels[10:20].reshape(10, -1).max(axis=1)).all()
    # The scaler scales stored rows as they are read, to what it makes of the same pixels in memory.
    scaler = PixelScaler().fit(x)
    scaled = scaler.transform(taken)
    assert isinstance(scaled, ImageRows) and scaled.dtype == np.float32
    assert np.allclose(np.asarray(scaled), PixelScaler().fit(pixels).transform(pixels[rows]))
    shipped = pickle.dumps(scaled)  # what goes to a worker: the file's name and the rows, never the pixels
    assert len(shipped) < 1000 and np.array_equal(np.asarray(pickle.loads(shipped)), np.asarray(scaled))
    # Read again, unchanged: nothing decoded (the file is the same one, not written again).
    inode = x.file.stat().st_ino

    def no_decoding(*_):
        raise AssertionError("decoded again")

    monkeypatch.setattr(images, "_read", no_decoding)
    again, _, _ = load_images(folder)
    assert again.file == x.file and x.file.stat().st_ino == inode
    # A file changed since: decoded again, into another stored file; storing it deletes stored folders unused for
    # CACHE_DAYS days, and only those (the one just read counts as used now).
    monkeypatch.undo()
    stale, recent = cache_dir() / "stale.npy", cache_dir() / "recent.npy"
    for stored, days in ((stale, CACHE_DAYS + 1), (recent, CACHE_DAYS - 1), (x.file, CACHE_DAYS + 1)):
        stored.touch() if not stored.exists() else None
        os.utime(stored, (time.time() - days * 86_400,) * 2)
    load_images(folder)  # in use again
    changed = folder / files[0]
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 1_000_000_000))
    fresh, _, _ = load_images(folder)
    assert fresh.file != x.file and np.array_equal(np.asarray(fresh), pixels)
    assert not stale.exists() and recent.exists() and x.file.exists()


def test_a_cnn_trains_and_predicts_from_stored_images_a_batch_at_a_time(folder):
    x, y, _ = load_images(folder)
    y = y.astype(int)
    stored = Unread(x.file).scaled(255.0)
    order = np.random.default_rng(0).permutation(len(y))  # the files come one class after another
    train, test = order[:500], order[500:]
    params = {**CNN_WARM_STARTS[0], "tta": False}
    net = KerasNetwork(params, "multiclass", epochs=15, seed=0, n_classes=10, family="cnn")
    net.fit(stored[train], y[train], stored[test], monitor=lambda p: float(np.mean(p.argmax(axis=1) == y[test])))
    assert net.n_steps_ == 15 * -(-500 // params["batch_size"])  # every epoch's batches came from the stream
    streamed = (net.predict(stored[test]) == y[test]).mean()
    assert streamed > 0.85  # ten classes: chance is 0.1
    # The same network in memory learns as well (the batches are drawn in another order).
    in_memory = KerasNetwork(params, "multiclass", epochs=15, seed=0, n_classes=10, family="cnn").fit(
        np.asarray(x[train], dtype="float32") / 255, y[train])
    assert abs((in_memory.predict(np.asarray(x[test], dtype="float32") / 255) == y[test]).mean() - streamed) < 0.1
