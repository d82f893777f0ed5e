"""Image data: loading a class-per-folder tree or an ``.npz`` file, and scaling pixels.

Images travel as one array of shape ``(n, height, width, channels)`` (an ``.npz``'s, in memory) or as
:class:`~automl.image_store.ImageRows` (a folder's, decoded once into a file on disk and read a batch at a
time); labels as a separate array. Every problem with the input becomes an :class:`InputError`.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from automl.errors import InputError
from automl.image_store import ImageRows, in_batches, stored_pixels

__all__ = ["IMAGE_SUFFIXES", "MAX_IMAGE_SIDE", "PREDICT_BATCH", "is_image_source", "load_image_folder",
           "training_shape", "iter_image_batches", "load_npz", "load_images", "PixelScaler", "Flatten"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: The longest side, in pixels, of the images a folder trains on (larger ones shrink, keeping their aspect ratio).
#: A CNN's cost grows with the pixels, every convolution visiting each one (128×128 costs four times 64×64): on
#: 2 CPU cores 64×64 is the most at which a search still tries several configurations within its budget.
MAX_IMAGE_SIDE = 64
#: Files read, resized and predicted at a time when ``python -m automl.predict`` scores a folder.
PREDICT_BATCH = 256
_GREY = ("1", "L", "LA", "La")
_DEEP = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # 16-bit grey PNGs (PIL's modes)
_ORIENTATION_TAG = 0x0112
_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
              7: "TRANSVERSE", 8: "ROTATE_90"}  # what brings each orientation upright, as PIL's exif_transpose


def is_image_source(path: Path) -> bool:
    """An ``.npz`` file or a folder (of class subfolders) is image data."""
    return path.suffix.lower() == ".npz" or path.is_dir()


def load_images(path: Path) -> tuple[np.ndarray | ImageRows, np.ndarray | None, list[str] | None]:
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


def load_image_folder(path: Path) -> tuple[ImageRows, np.ndarray | None, list[str]]:
    """Images from ``path/<class>/*.png|jpg`` (labels = folder names), or from ``path/*.png`` (no labels).

    One network needs one shape: every image is brought to :func:`training_shape` of the folder as it is
    read, into a file of the image cache (uint8; float32 for 16-bit grey), never all in memory; a folder read
    before, unchanged, is not decoded again (:func:`automl.image_store.stored_pixels`).
    """
    files = _image_files(path)
    headers = [_header(file) for file, _ in files]
    height, width = training_shape([h for h, _, _ in headers], [w for _, w, _ in headers])
    channels = 1 if all(mode in _GREY + _DEEP for _, _, mode in headers) else 3
    deep = channels == 1 and any(mode in _DEEP for _, _, mode in headers)
    x = stored_pixels([file for file, _ in files], (height, width, channels), "float32" if deep else "uint8",
                      lambda file: _read(file, (height, width, channels)))
    labels = [label for _, label in files]
    y = None if labels[0] is None else np.asarray(labels, dtype=object)
    return x, y, [str(f.relative_to(path)) for f, _ in files]


def training_shape(heights: Sequence[int], widths: Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` to train on: the median of each, the longer side shrunk to :data:`MAX_IMAGE_SIDE`
    keeping the aspect ratio (the median, not the commonest size: a few odd sizes do not set it)."""
    height, width = float(np.median(heights)), float(np.median(widths))
    shrink = min(1.0, MAX_IMAGE_SIDE / max(height, width))
    return max(1, round(height * shrink)), max(1, round(width * shrink))


def iter_image_batches(path: Path, shape: Sequence[int], batch: int = PREDICT_BATCH
                       ) -> Iterator[tuple[np.ndarray, list[str]]]:
    """The images of a folder (found as :func:`load_image_folder` finds them; labels ignored), ``batch`` files
    at a time, each brought to ``shape`` (height, width, channels), with their names relative to ``path``:
    a folder of any size is scored with one batch's pixels in memory."""
    if batch < 1:
        raise ValueError(f"a batch holds one image or more, but got {batch=}")
    height, width, channels = (int(s) for s in shape)
    files = [file for file, _ in _image_files(path)]
    for start in range(0, len(files), batch):
        chunk = files[start:start + batch]
        yield (np.stack([_read(file, (height, width, channels)) for file in chunk]),
               [str(file.relative_to(path)) for file in chunk])


def _image_files(path: Path) -> list[tuple[Path, str | None]]:
    """``(file, class or None)`` in a stable order: class subfolders if there are any, else the folder's files."""
    subfolders = sorted(p for p in path.iterdir() if p.is_dir())
    if subfolders:
        files = [(f, d.name) for d in subfolders for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    else:
        files = [(f, None) for f in sorted(path.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise InputError(f"{path}: no .png or .jpg images found; put them in one subfolder per class")
    return files


@contextmanager
def _opened(file: Path) -> Iterator[Any]:
    """``file`` opened with PIL (only its header is read until pixels are asked for); damage is an InputError."""
    from PIL import Image

    try:
        with Image.open(file) as img:
            yield img
    except Image.DecompressionBombError:
        raise InputError(f"{file}: too many pixels to decode safely; shrink it or remove it") from None
    # PIL reports a damaged PNG chunk as SyntaxError, a cut-short or unknown file as OSError.
    except (OSError, SyntaxError):
        raise InputError(f"{file}: not a readable image; remove it or replace it") from None


def _header(file: Path) -> tuple[int, int, str]:
    """``(height, width, mode)`` of ``file`` as it is shown (EXIF orientation applied), from its header alone."""
    with _opened(file) as img:
        width, height = img.size
        turned = _orientation(img) in _TURNED
        return (width, height, img.mode) if turned else (height, width, img.mode)


def _read(file: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """The pixels of ``file`` upright, resized to ``shape`` (height, width, channels): uint8, or float32 for a
    16-bit grey image read into one channel (its full depth; into three, it is brought to 8 bits)."""
    from PIL import Image

    height, width, channels = shape
    with _opened(file) as img:
        orientation = _orientation(img)
        size = (height, width) if orientation in _TURNED else (width, height)  # PIL sizes are (width, height)
        deep = img.mode in _DEEP
        mode = "F" if deep else "L" if channels == 1 else "RGB"
        img.draft(mode, size)  # a JPEG decodes at 1/2, 1/4 or 1/8 scale when that still covers the size
        # Lanczos keeps a digit's strokes when shrinking; reducing_gap first bins large images, a cheap box filter.
        small = img.convert(mode).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if orientation in _TRANSPOSE:
        small = small.transpose(Image.Transpose[_TRANSPOSE[orientation]])
    pixels = np.asarray(small)
    if deep:  # Lanczos overshoots the 16-bit range at sharp edges
        pixels = np.clip(pixels, 0, 65535)
        if channels == 3:
            pixels = np.round(pixels / 257).astype("uint8")
    pixels = pixels.reshape(height, width, -1)
    return np.repeat(pixels, channels, axis=2) if pixels.shape[2] != channels else pixels


def _orientation(img: Any) -> int:
    """The EXIF orientation (1: upright); a phone stores a portrait photo as a landscape turned by this tag."""
    # A PNG's getexif() decodes the whole image to look for the tag after the pixels: trust the header's.
    if img.format != "JPEG" and "exif" not in img.info:
        return 1
    return int(img.getexif().get(_ORIENTATION_TAG, 1))


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
    """Scale pixels (uint8 or float) to [0, 1] float32 by the training images' maximum; check the image shape.

    Its ``shape_`` is the model's image shape: a folder is resized to it when read (see
    :func:`iter_image_batches`); an array of another shape is an error, as nothing says it is a resized image.
    Stored images (:class:`ImageRows`) are scaled as they are read, a batch at a time.
    """

    def fit(self, x: np.ndarray | ImageRows, y: object = None) -> PixelScaler:
        self.scale_ = max(float(batch.max()) for batch in in_batches(x)) or 1.0
        self.shape_ = tuple(int(s) for s in np.shape(x)[1:])
        return self

    def transform(self, x: np.ndarray | ImageRows) -> np.ndarray | ImageRows:
        if tuple(np.shape(x)[1:]) != self.shape_:
            raise InputError(f"images have shape {tuple(np.shape(x)[1:])}, but the model was trained on "
                             f"{self.shape_}; resize them to match")
        if isinstance(x, ImageRows):
            return x.scaled(self.scale_ * (x.scale or 1.0))
        return (np.asarray(x, dtype="float32") / self.scale_).astype("float32")


class Flatten(BaseEstimator, TransformerMixin):
    """Images to pixel vectors, for classical models."""

    def fit(self, x: np.ndarray, y: object = None) -> Flatten:
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x).reshape(len(x), -1)
