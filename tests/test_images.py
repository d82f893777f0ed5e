"""Image data: loaders and their errors, CNN search on digits, predicting .npz files and image folders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from automl import AutoML, data
from automl.errors import InputError
from automl.images import PixelScaler, load_images
from conftest import run_module


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """Forty real digit images as 8-bit PNGs in one folder per class."""
    root = tmp_path_factory.mktemp("digits")
    d = load_digits()
    for i in range(40):
        (root / "train" / str(d.target[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray((d.images[i] * 15).astype("uint8")).save(root / "train" / str(d.target[i]) / f"{i}.png")
    return root / "train"


def test_folder_loader_reads_labels_from_subfolders(digits_folder):
    x, y, files = load_images(digits_folder)
    assert x.shape == (40, 8, 8, 1) and x.dtype == np.float32
    assert sorted(set(y)) == sorted({p.name for p in digits_folder.iterdir()})
    assert files[0].endswith(".png") and "/" in files[0]


def test_npz_loader_and_errors(tmp_path):
    np.savez(tmp_path / "ok.npz", x=np.zeros((6, 5, 5)), y=np.array([0, 1] * 3))
    x, y, _ = load_images(tmp_path / "ok.npz")
    assert x.shape == (6, 5, 5, 1) and list(y) == [0, 1] * 3
    np.savez(tmp_path / "no_x.npz", images=np.zeros((2, 3, 3)))
    with pytest.raises(InputError, match="no array named 'x'"):
        load_images(tmp_path / "no_x.npz")
    np.savez(tmp_path / "short_y.npz", x=np.zeros((4, 3, 3)), y=np.array([0, 1]))
    with pytest.raises(InputError, match="4 images but y has 2 labels"):
        load_images(tmp_path / "short_y.npz")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a").mkdir()
    (tmp_path / "junk" / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="broken.png: not a readable image"):
        load_images(tmp_path / "junk")
    np.savez(tmp_path / "one.npz", x=np.zeros((4, 3, 3)), y=np.zeros(4))
    with pytest.raises(InputError, match="two classes"):
        data.load(str(tmp_path / "one.npz"))


def test_pixel_scaler_rejects_other_shapes():
    scaler = PixelScaler().fit(np.full((3, 8, 8, 1), 16.0))
    assert scaler.transform(np.full((1, 8, 8, 1), 8.0)).max() == pytest.approx(0.5)
    with pytest.raises(InputError, match="resize"):
        scaler.transform(np.zeros((1, 9, 9, 1)))


def test_cnn_search_on_digits_ranks_and_predicts(tmp_path, digits_folder):
    # The last 50 images are held back: the predictions below are scored on images no model trained on.
    d = load_digits()
    np.savez(tmp_path / "train.npz", x=d.images[:-50], y=d.target[:-50])
    # One trial: its configuration is cross-validated once the worker is done, not beside it on 2 cores.
    aml = AutoML(max_runtime_secs=85, max_models=1, include_algos=["CNN", "GLM"], output_dir=tmp_path / "run",
                 verbose=False).fit(str(tmp_path / "train.npz"))
    board = aml.leaderboard
    assert board.columns[1] == "mean_per_class_error" and "accuracy" in board.columns
    assert {"CNN", "GLM"} <= set(board["algo"])
    cnn = board[board["algo"] == "CNN"].iloc[0]
    assert cnn["accuracy"] > 0.9  # one short trial, refit on 1,397 training images per fold
    np.savez(tmp_path / "rows.npz", x=d.images[-50:])
    proc = run_module("automl.predict", tmp_path / "run" / "models" / cnn["model_id"], tmp_path / "rows.npz",
                      "--output", tmp_path / "preds.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    preds = pd.read_csv(tmp_path / "preds.csv")
    assert list(preds.columns) == ["predict", *[f"p_{k}" for k in range(10)]]
    assert (preds["predict"].to_numpy() == d.target[-50:]).mean() > 0.85  # held-out images
    # A folder of images goes through the same CLI and names each file.
    proc = run_module("automl.predict", tmp_path / "run" / "models" / cnn["model_id"], digits_folder,
                      "--output", tmp_path / "folder.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert pd.read_csv(tmp_path / "folder.csv")["file"].str.endswith(".png").all()


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.99])
def test_an_empty_or_cut_short_npz_is_an_input_error(tmp_path, keep):
    # numpy raises EOFError for 0 bytes and zipfile.BadZipFile for a cut-short archive: neither is an OSError.
    np.savez(tmp_path / "whole.npz", x=np.zeros((6, 5, 5)), y=np.array([0, 1] * 3))
    whole = (tmp_path / "whole.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[:int(len(whole) * keep)])
    with pytest.raises(InputError, match=r"cut\.npz: not a whole \.npz archive .*numpy\.savez") as info:
        data.load(str(tmp_path / "cut.npz"))
    assert "\n" not in str(info.value)


def test_a_damaged_npz_member_is_an_input_error(tmp_path):
    np.savez_compressed(tmp_path / "bad.npz", x=np.random.default_rng(0).random((20, 8, 8)), y=np.arange(20) % 2)
    damaged = bytearray((tmp_path / "bad.npz").read_bytes())
    damaged[len(damaged) // 3] ^= 0xFF  # inside x's compressed data; the zip directory at the end stays whole
    (tmp_path / "bad.npz").write_bytes(bytes(damaged))
    with pytest.raises(InputError, match=r"bad\.npz: cannot be read as \.npz"):
        load_images(tmp_path / "bad.npz")
