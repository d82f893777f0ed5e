"""Image data: loading a class-per-folder tree or an ``.npz`` file, and scaling pixels.

Images travel as one array of shape ``(n, height, width, channels)``; labels as a
separate array. Every problem with the input becomes an :class:`InputError`.
"""

from __future__ import annotations

import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from automl.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "is_image_source", "load_image_folder", "load_npz", "load_images", "PixelScaler",
           "Flatten"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def is_image_source(path: Path) -> bool:
    """An ``.npz`` file or a folder (of class subfolders) is image data."""
    return path.suffix.lower() == ".npz" or path.is_dir()


def load_images(path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """``(images, labels or None, file names or None)`` from an ``.npz`` file or an image folder."""
    if not path.exists():
        raise InputError(f"{path}: not found; give an .npz file or a folder of images")
    return load_npz(path) if path.suffix.lower() == ".npz" else load_image_folder(path)


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, None]:
    """Arrays ``x`` (n, h, w[, c]) and, for training, ``y`` (n,) from an ``.npz`` file."""
    # numpy takes what is not a zip archive for a pickle and says so: the wrong hint for an empty or cut-short file.
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a whole .npz archive (empty, cut short or another format); save it with "
                         "numpy.savez(path, x=..., y=...)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    # A cut-short or damaged archive fails in numpy (EOFError), zipfile (no directory, bad CRC) or zlib.
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise InputError(f"{path}: cannot be read as .npz ({exc}); save it with numpy.savez(path, x=..., y=...)"
                         ) from None
    if "x" not in arrays:
        raise InputError(f"{path}: no array named 'x' (found {sorted(arrays)}); save images as x= and labels as y=")
    x = _as_nhwc(arrays["x"], path)
    y = arrays.get("y")
    if y is not None and len(y) != len(x):
        raise InputError(f"{path}: x has {len(x)} images but y has {len(y)} labels; they must match")
    return x, y, None


def load_image_folder(path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Images from ``path/<class>/*.png|jpg`` (labels = folder names), or from ``path/*.png`` (no labels)."""
    from PIL import Image, UnidentifiedImageError

    subfolders = sorted(p for p in path.iterdir() if p.is_dir())
    if subfolders:
        files = [(f, d.name) for d in subfolders for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    else:
        files = [(f, None) for f in sorted(path.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise InputError(f"{path}: no .png or .jpg images found; put them in one subfolder per class")
    pictures = []
    for file, _ in files:
        try:
            with Image.open(file) as img:
                pictures.append(img.convert("L") if img.mode in ("L", "1", "I;16") else img.convert("RGB"))
        except (UnidentifiedImageError, OSError):
            raise InputError(f"{file}: not a readable image; remove it or replace it") from None
    # Mixed sizes or modes are brought to the commonest, so one network fits all images.
    size = Counter(p.size for p in pictures).most_common(1)[0][0]
    mode = "RGB" if any(p.mode == "RGB" for p in pictures) else "L"
    x = np.stack([np.asarray(p.convert(mode).resize(size)) for p in pictures])
    labels = [label for _, label in files]
    y = None if labels[0] is None else np.asarray(labels, dtype=object)
    return _as_nhwc(x, path), y, [str(f.relative_to(path)) for f, _ in files]


def _as_nhwc(x: np.ndarray, source: Path) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or min(x.shape[1:3]) < 1:
        raise InputError(f"{source}: images must have shape (n, height, width) or (n, height, width, channels), "
                         f"but got {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise InputError(f"{source}: image pixels must be numbers, but got dtype {x.dtype}")
    return x.astype("float32")


class PixelScaler(BaseEstimator, TransformerMixin):
    """Scale pixels to [0, 1] by the training images' maximum; check the image shape."""

    def fit(self, x: np.ndarray, y: object = None) -> PixelScaler:
        self.scale_ = float(np.max(x)) or 1.0
        self.shape_ = tuple(int(s) for s in np.shape(x)[1:])
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        if tuple(np.shape(x)[1:]) != self.shape_:
            raise InputError(f"images have shape {tuple(np.shape(x)[1:])}, but the model was trained on "
                             f"{self.shape_}; resize them to match")
        return (np.asarray(x, dtype="float32") / self.scale_).astype("float32")


class Flatten(BaseEstimator, TransformerMixin):
    """Images to pixel vectors, for classical models."""

    def fit(self, x: np.ndarray, y: object = None) -> Flatten:
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x).reshape(len(x), -1)
