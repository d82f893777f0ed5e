"""Image data: loaders and their errors, images of mixed sizes and modes, CNN search on digits, predicting .npz
files and image folders (in batches)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from automl import AutoML, data
from automl.errors import InputError
from automl.images import MAX_IMAGE_SIDE, PixelScaler, iter_image_batches, load_images
from automl.training import KerasNetwork
from conftest import run_module

TINT = (1.0, 0.55, 0.2)  # an orange digit on black


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """Forty real digit images as 8-bit PNGs in one folder per class."""
    root = tmp_path_factory.mktemp("digits")
    d = load_digits()
    for i in range(40):
        (root / "train" / str(d.target[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray((d.images[i] * 15).astype("uint8")).save(root / "train" / str(d.target[i]) / f"{i}.png")
    return root / "train"


def save_digit(path, image: np.ndarray, size: tuple[int, int], tint: tuple[float, float, float] | None = None) -> None:
    """A scikit-learn digit (0-16) as an 8-bit PNG of ``size`` (width, height): grey, or RGB tinted by ``tint``."""
    grey = np.asarray(Image.fromarray((image * 15).astype("uint8")).resize(size, Image.Resampling.BILINEAR))
    pixels = grey if tint is None else (grey[..., None] * np.asarray(tint)).astype("uint8")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_folder_loader_reads_labels_from_subfolders(digits_folder):
    x, y, files = load_images(digits_folder)
    assert x.shape == (40, 8, 8, 1) and x.dtype == np.uint8  # PixelScaler makes float32 pixels of them
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


def test_mixed_sizes_and_modes_load_at_the_median_size_as_rgb(tmp_path):
    d = load_digits()
    # Five of 16×16 and four of 8×8; every third tinted: colour anywhere makes the whole folder RGB.
    for i in range(9):
        side = 16 if i % 2 == 0 else 8
        save_digit(tmp_path / "mixed" / str(d.target[i]) / f"{i}.png", d.images[i], (side, side),
                   TINT if i % 3 == 0 else None)
    x, y, files = load_images(tmp_path / "mixed")
    assert x.shape == (9, 16, 16, 3) and x.dtype == np.uint8
    grey, tinted = files.index(f"{d.target[2]}/2.png"), files.index(f"{d.target[0]}/0.png")
    assert (x[grey] == x[grey][..., :1]).all()  # a grey image's three channels are equal
    assert x[tinted][..., 0].max() > 2 * x[tinted][..., 2].max()
    # An 8×8 image is enlarged to 16×16 and keeps its digit: it matches the same digit saved at 16×16.
    small = files.index(f"{d.target[1]}/1.png")
    save_digit(tmp_path / "one" / "1.png", d.images[1], (16, 16))
    (reference,), _, _ = load_images(tmp_path / "one")
    assert np.corrcoef(x[small][..., 0].ravel(), reference.ravel())[0, 1] > 0.9
    # Larger than MAX_IMAGE_SIDE: shrunk, keeping the aspect ratio (200 wide, 100 high: 64 × 32); grey stays grey.
    for i in range(3):
        save_digit(tmp_path / "wide" / f"{i}.png", d.images[i], (200, 100))
    x, y, _ = load_images(tmp_path / "wide")
    assert x.shape == (3, MAX_IMAGE_SIDE // 2, MAX_IMAGE_SIDE, 1) and y is None
    save_digit(tmp_path / "wide_ref" / "0.png", d.images[0], (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE // 2))
    (reference,), _, _ = load_images(tmp_path / "wide_ref")
    assert np.corrcoef(x[0].ravel().astype(float), reference.ravel())[0, 1] > 0.95


def test_a_folder_is_read_in_batches_resized_to_the_model_shape(tmp_path):
    d = load_digits()
    for i in range(20):
        save_digit(tmp_path / "rows" / f"{i:02d}.png", d.images[i], (8 + i, 8 + i), TINT if i % 2 else None)
    batches = list(iter_image_batches(tmp_path / "rows", (12, 10, 1), batch=7))
    assert [len(files) for _, files in batches] == [7, 7, 6]
    assert [f for _, files in batches for f in files] == [f"{i:02d}.png" for i in range(20)]
    assert all(x.shape == (len(files), 12, 10, 1) and x.dtype == np.uint8 for x, files in batches)


def test_rgb_images_of_mixed_sizes_train_and_predict_at_a_third_size_through_the_cli(tmp_path):
    d = load_digits()
    for i in range(600):  # 16×16 (three in five) and 8×8, half of them tinted: trained at 16×16 in RGB
        side = 16 if i % 5 < 3 else 8
        save_digit(tmp_path / "train" / str(d.target[i]) / f"{i}.png", d.images[i], (side, side),
                   TINT if i % 2 else None)
    held_out = range(len(d.images) - 100, len(d.images))
    for i in held_out:  # never trained on, and 24×24
        save_digit(tmp_path / "new" / f"{i}.png", d.images[i], (24, 24), TINT if i % 2 else None)
    proc = run_module("automl.run", tmp_path / "train", "--max-runtime-secs", "40", "--include-algos", "CNN,GLM",
                      "--output", tmp_path / "run", cwd=tmp_path, CI="true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "leader" / "model.json").read_text())["schema"]["image_shape"] == [16, 16, 3]
    # The search workers read the stored images by their file's name: their split holds no copy of the pixels.
    local = tmp_path / "run" / "search" / "local"
    assert (local / "y_train.npy").exists() and not list(local.glob("x_*.npy"))
    proc = run_module("automl.predict", tmp_path / "run" / "leader", tmp_path / "new", "--output",
                      tmp_path / "preds.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    preds = pd.read_csv(tmp_path / "preds.csv")
    assert sorted(preds["file"]) == sorted(f"{i}.png" for i in held_out)
    truth = preds["file"].str.removesuffix(".png").astype(int).map(lambda i: d.target[i])
    assert (preds["predict"] == truth).mean() > 0.5  # ten classes: chance is 0.1
    # A damaged file is a one-line error naming it, and no output is written.
    (tmp_path / "new" / "zz.png").write_bytes(b"not a png")
    proc = run_module("automl.predict", tmp_path / "run" / "leader", tmp_path / "new", "--output",
                      tmp_path / "broken.csv", cwd=tmp_path)
    assert proc.returncode == 2 and "zz.png: not a readable image" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "broken.csv").exists()


def test_pixel_scaler_rejects_other_shapes():
    scaler = PixelScaler().fit(np.full((3, 8, 8, 1), 16.0))
    assert scaler.transform(np.full((1, 8, 8, 1), 8.0)).max() == pytest.approx(0.5)
    with pytest.raises(InputError, match="resize"):
        scaler.transform(np.zeros((1, 9, 9, 1)))


def test_cnn_search_on_digits_ranks_and_predicts(tmp_path, digits_folder):
    # The last 50 images are held back: the predictions below are scored on images no model trained on.
    d = load_digits()
    np.savez(tmp_path / "train.npz", x=d.images[:-50], y=d.target[:-50])
    # One trial: its configuration is cross-validated once the worker is done, not beside it on 2 cores; on two
    # folds, as five refits of its epochs are estimated at about the minute left (the CNN was then not refit), and
    # on an AMD EPYC three were estimated at 42 s with 45 s left (not refit either: more than REFIT_MARGIN of them).
    # 120 s: on a machine half as fast (2026-12-07, TensorFlow's import 11 s) two were estimated at 38 s with 36 s
    # usable at 85 s, and the run ended at 45 s without a CNN (nothing else to train: CNN and GLM only).
    aml = AutoML(max_runtime_secs=120, max_models=1, nfolds=2, include_algos=["CNN", "GLM"],
                 output_dir=tmp_path / "run", verbose=False).fit(str(tmp_path / "train.npz"))
    board = aml.leaderboard
    assert board.columns[1] == "mean_per_class_error" and "accuracy" in board.columns
    assert {"CNN", "GLM"} <= set(board["algo"])
    cnn = board[board["algo"] == "CNN"].iloc[0]
    assert cnn["accuracy"] > 0.9  # one short trial, refit on 873 training images per fold
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


def _digits_cnn(params: dict, epochs: int = 3) -> tuple[KerasNetwork, np.ndarray, np.ndarray]:
    d = load_digits()
    x, y = (d.images.astype("float32") / 16.0)[..., None], d.target
    net = KerasNetwork(params, "image", epochs=epochs, seed=0, n_classes=10, family="cnn").fit(x[:1200], y[:1200])
    return net, x[1200:], y[1200:]


def test_test_time_augmentation_changes_predictions_only_when_enabled():
    from automl.spaces import CNN_WARM_STARTS

    net, x, _ = _digits_cnn({**CNN_WARM_STARTS[0], "tta": False})
    plain = net.predict_proba(x)
    assert np.allclose(plain, np.asarray(net.model_(x, training=False)), atol=1e-5)  # one view: the model's own
    with_tta = KerasNetwork({**CNN_WARM_STARTS[0], "tta": True}, "image", n_classes=10, family="cnn")
    with_tta.model_ = net.model_  # the same weights, predicted over the shifted views too
    shifted = with_tta.predict_proba(x)
    assert not np.allclose(plain, shifted, atol=1e-4) and np.allclose(shifted.sum(axis=1), 1.0)


@pytest.mark.parametrize("block", ["residual", "separable"])
def test_residual_and_separable_blocks_learn_digits(block):
    from automl.spaces import CNN_WARM_STARTS

    net, x, y = _digits_cnn({**CNN_WARM_STARTS[0], "block": block, "lr_schedule": "constant"}, epochs=5)
    assert (net.predict(x) == y).mean() > 0.8  # chance is 0.1


def test_a_holdout_run_ranks_its_cnn_trials_own_models_instead_of_retraining_them(tmp_path):
    d = load_digits()
    np.savez(tmp_path / "digits.npz", x=d.images, y=d.target)
    aml = AutoML(max_runtime_secs=60, max_models=2, include_algos=["CNN", "GLM"], validation="holdout",
                 output_dir=tmp_path / "run", verbose=False).fit(str(tmp_path / "digits.npz"))
    board = aml.leaderboard
    cnn = board[board["algo"] == "CNN"]
    assert len(cnn) >= 1 and (cnn["accuracy"] > 0.8).all()
    log = pd.read_csv(tmp_path / "run" / "event_log.csv")
    reused = log[log["message"].str.contains("own model .* ranked as it is, not trained again", regex=True)]
    assert {m.split(":")[0] for m in reused["message"]} == set(cnn["model_id"])
    assert not log["message"].str.contains("failed").any()  # the refits on all rows pass over the image pipelines
    saved = list((tmp_path / "run" / "search" / "models").glob("trial_*/model.keras"))
    assert saved and not list((tmp_path / "run" / "search" / "models").glob(".*"))  # no half-written trial


def test_ranking_a_trial_model_is_costed_by_the_holdouts_pixels_and_views():
    """What the search keeps for ranking its last trial's own CNN grows with the holdout's images, their pixels
    and the configuration's test-time views (the decision, on the protocol's shape alone)."""
    from types import SimpleNamespace

    from automl import search
    from automl.spaces import CNN_WARM_STARTS

    def state(holdout_images: int, shape: list[int]) -> SimpleNamespace:
        return SimpleNamespace(protocol=SimpleNamespace(folds=[(np.arange(10), np.arange(holdout_images))]),
                               schema=SimpleNamespace(image_shape=shape))

    small, large = state(300, [8, 8, 1]), state(4_000, [34, 34, 3])
    assert search.reuse_seconds(small) == search.REUSE_SECONDS  # a few hundred digits: the floor
    plain, tta = ({**CNN_WARM_STARTS[0], "tta": flag} for flag in (False, True))
    assert search.reuse_seconds(large, tta) == pytest.approx(5 * search.reuse_seconds(large, plain))
    assert search.reuse_seconds(large) == pytest.approx(6 * 4_000 * 34 * 34 * 3 * search.CNN_PREDICT_SECONDS_PER_PIXEL)
