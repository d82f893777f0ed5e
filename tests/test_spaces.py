"""Search spaces: one engine-neutral definition per family, rendered alike for Optuna and Keras Tuner."""

from __future__ import annotations

import optuna
import pytest

from automl.engines.keras_tuner_engine import render
from automl.spaces import FAMILIES, MAX_EPOCHS, Choice, Float, Int, family_space, suggest

#: Every space a search renders: each family's, GBM's with the target's scale (a skewed target), the MLP's on a
#: table with categorical columns (their embedding searched), and the CNN's on photos (mirror images too).
SPACES = [(family, False, False, False) for family in sorted(FAMILIES)] + [
    ("gbm", True, False, False), ("mlp", False, True, False), ("cnn", False, False, True)]


@pytest.mark.parametrize(("family", "skewed", "categorical", "photos"), SPACES)
def test_warm_starts_lie_inside_their_space(family, skewed, categorical, photos):
    space, warm_starts = family_space(family, skewed, categorical, photos)
    names = [p.name for p in space]
    assert len(names) == len(set(names)), "a parameter is defined twice"
    for warm in warm_starts:
        assert list(warm) == names, "a warm start must name every parameter, in the space's order"
        for p in space:
            value = warm[p.name]
            assert value in p.choices if isinstance(p, Choice) else p.low <= value <= p.high, (p, value)


@pytest.mark.parametrize(("family", "skewed", "categorical", "photos"), SPACES)
def test_optuna_and_keras_tuner_see_the_same_parameters(family, skewed, categorical, photos):
    space, _ = family_space(family, skewed, categorical, photos)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        params = suggest(space, study.ask())
        assert list(params) == [p.name for p in space]
        for p in space:
            if isinstance(p, Int):
                assert isinstance(params[p.name], int) and p.low <= params[p.name] <= p.high
            elif isinstance(p, Float):
                assert p.low <= params[p.name] <= p.high
            else:
                assert params[p.name] in p.choices
    rendered = {h.name: h for h in render(space).space}
    assert list(rendered) == [p.name for p in space]
    for p in space:
        if isinstance(p, Choice) and len(p.choices) > 1 and not all(isinstance(c, bool) for c in p.choices):
            assert list(rendered[p.name].values) == list(p.choices)
        elif isinstance(p, Int | Float) and p.low < p.high:
            assert (rendered[p.name].min_value, rendered[p.name].max_value) == (p.low, p.high)


def test_the_epoch_bound_reaches_the_search_and_binds_a_trial(tmp_path):
    """A run's search job carries MAX_EPOCHS, and a trial trains no more epochs than its job's bound, however
    long its patience (a real network on Pima, reporting after each chunk of epochs)."""
    from automl.config import RunConfig
    from automl.engines.trainers import train_trial
    from automl.search import search_data, search_job
    from automl.spaces import MLP_WARM_STARTS
    from automl.state import start

    state = start(RunConfig.from_options(dataset="diabetes", output_dir=str(tmp_path), verbose=False, workers=1))
    assert search_job(state).max_epochs == MAX_EPOCHS
    epochs: list[int] = []
    _, best = train_trial(dict(MLP_WARM_STARTS[0]), search_data(state), state.metric, 0,
                          lambda value, epoch: epochs.append(epoch), None, max_epochs=3)
    assert epochs and max(epochs) <= 3 and 1 <= best <= 3


def test_photos_may_be_mirrored_and_digits_may_not():
    grey, grey_starts = family_space("cnn")
    photo, photo_starts = family_space("cnn", photos=True)
    augmentation = {p.name: p for p in grey}["augmentation"].choices
    assert not any("flip" in a for a in augmentation)
    assert "translate+flip" in {p.name: p for p in photo}["augmentation"].choices
    assert [w["augmentation"] for w in grey_starts] == ["translate"] * len(grey_starts)
    assert [w["augmentation"] for w in photo_starts] == ["translate+flip"] * len(photo_starts)


@pytest.mark.parametrize("rows", [10, 228, 5_000])
def test_a_small_tables_gbm_leaves_may_not_outgrow_it(rows):
    """help_baseline's 228 search rows: leaves of at least 128-181 rows made constant models (AUC 0.5)."""
    space, warm_starts = family_space("gbm", rows=rows)
    leaf = next(p for p in space if p.name == "min_child_samples")
    assert leaf.high == {10: 16, 228: 76, 5_000: 200}[rows]
    assert all(leaf.low <= w["min_child_samples"] <= leaf.high for w in warm_starts)
    assert [p.name for p in space] == [p.name for p in family_space("gbm")[0]]


@pytest.mark.parametrize("categorical", [False, True])
def test_every_searched_network_starts_as_the_glm(categorical):
    """Cross-validation keeps a network's GLM start where its training does not beat it out of fold, so no
    searched network can rank below the GLM: the warm starts and every sampled configuration have the start."""
    space, warm_starts = family_space("mlp", categorical=categorical)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    sampled = [suggest(space, study.ask()) for _ in range(20)]
    assert all(c["linear_start"] is True for c in (*warm_starts, *sampled))
    assert len(warm_starts) == len({repr(w) for w in warm_starts}), "each portfolio configuration once"
