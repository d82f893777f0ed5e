"""RunConfig: one validated value, built from the CLI's flat options, carried as JSON."""

from __future__ import annotations

import json
import os

import pytest

from automl.config import ALGOS, EvaluationSettings, RunConfig, SearchSettings
from automl.errors import InputError
from automl.run import build_parser, options


def test_flat_options_round_trip_through_json():
    config = RunConfig.from_options(dataset="diabetes", max_runtime_secs=30, max_models=4, nfolds=3,
                                    include_algos=["glm", "deeplearning"], workers=2, seed=7)
    assert config.search == SearchSettings(max_models=4, workers=2)
    assert config.evaluation.include_algos == ("GLM", "MLP")  # names resolved once, in any case
    assert config.evaluation.algos == {"GLM", "MLP"}
    again = RunConfig.from_json(config.to_json())
    assert again == config
    assert RunConfig.from_options(**config.options()) == config
    assert json.loads(config.to_json())["search"]["max_models"] == 4


def test_the_cli_builds_the_same_config():
    args = build_parser().parse_args(["diabetes", "--max-models", "4", "--nfolds", "3", "--include-algos",
                                      "glm,deeplearning", "--workers", "2", "--seed", "7", "--quiet"])
    config = RunConfig.from_options(dataset=args.dataset, **options(args))
    expected = RunConfig.from_options(dataset="diabetes", max_models=4, nfolds=3, include_algos=["GLM", "MLP"],
                                      workers=2, seed=7, verbose=False, started_at=config.started_at)
    assert config == expected


@pytest.mark.parametrize(("option", "value", "match"), [
    ("max_runtime_secs", 0, "--max-runtime-secs"),
    ("max_runtime_secs", -5, "--max-runtime-secs"),
    ("max_models", -1, "--max-models"),
    ("nfolds", 1, "--nfolds"),
    ("workers", 0, "--workers"),  # once meant "all cores" silently
    ("engine", "sklearn", "--engine"),
    ("tuner", "grid", "--tuner"),
    ("validation", "bootstrap", "--validation"),
    ("max_runtime_secs_per_model", 0, "--max-runtime-secs-per-model"),
    # Infinite or NaN seconds once ran forever or broke the schedule's window arithmetic.
    ("max_runtime_secs", float("inf"), "--max-runtime-secs must be positive and finite .* got inf"),
    ("max_runtime_secs", float("nan"), "--max-runtime-secs must be positive and finite .* got nan"),
    ("max_runtime_secs_per_model", float("inf"), "--max-runtime-secs-per-model .* got inf"),
    ("max_runtime_secs_per_model", float("nan"), "--max-runtime-secs-per-model .* got nan"),
    ("max_runtime_secs_per_model", -1, "--max-runtime-secs-per-model .* got -1"),
    # A negative seed failed deep in the folds (StratifiedKFold), after the server had started.
    ("seed", -1, "--seed must be between 0 and 2147483647, but got seed=-1"),
    ("seed", 2**31, "--seed .* got seed=2147483648"),
    ("include_algos", ["XGBoost"], "'XGBoost'"),
    ("task", "ranking", "--task"),
    ("colour", "blue", "unknown option 'colour'"),
])
def test_bad_values_are_named(option, value, match):
    with pytest.raises(InputError, match=match):
        RunConfig.from_options(**{option: value})


def test_the_seeds_at_the_edges_are_accepted():
    assert RunConfig(seed=0).seed == 0 and RunConfig(seed=2**31 - 1).seed == 2**31 - 1


def test_combinations_that_cannot_work_are_refused():
    with pytest.raises(InputError, match="not both"):
        EvaluationSettings(include_algos=("GLM",), exclude_algos=("GBM",))
    with pytest.raises(InputError, match="--engine optuna"):
        SearchSettings(engine="keras-tuner", workers=2)
    with pytest.raises(InputError, match="--engine optuna"):
        SearchSettings(engine="keras-tuner", storage="postgresql://x/y")
    with pytest.raises(InputError, match="needs cross-validation"):
        EvaluationSettings(validation="holdout", nfolds=3)
    # Fan-out: pool workers on other machines share the study only through a database; --workers 0 means
    # "no trials here", which only fan-out makes sense of.
    with pytest.raises(InputError, match="--fan-out 2 needs --storage with a database URL"):
        SearchSettings(fan_out=2)
    with pytest.raises(InputError, match="storage='runs/x/search/study.journal'"):
        SearchSettings(fan_out=1, storage="runs/x/search/study.journal")
    with pytest.raises(InputError, match="--fan-out must be 0 or more"):
        SearchSettings(fan_out=-1, storage="postgresql://x/y")
    with pytest.raises(InputError, match="--engine optuna"):
        SearchSettings(engine="keras-tuner", fan_out=1, storage="postgresql://x/y")
    assert SearchSettings(workers=0, fan_out=2, storage="postgresql://x/y").n_workers == 0


def test_defaults_resolve_per_engine(tmp_path, monkeypatch):
    assert SearchSettings().n_workers == (os.cpu_count() or 1)
    assert SearchSettings(engine="keras-tuner").n_workers == 1
    assert EvaluationSettings(exclude_algos=("MLP",)).algos == set(ALGOS) - {"MLP"}
    # Paths become absolute once, so worker processes started elsewhere find the same files.
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    monkeypatch.chdir(tmp_path)
    config = RunConfig(dataset="data.csv", output_dir="out")
    assert config.dataset == str(tmp_path / "data.csv") and config.output_dir == str(tmp_path / "out")
    assert RunConfig(dataset="diabetes").dataset == "diabetes"  # a built-in name is not a path


def test_frozen():
    config = RunConfig()
    with pytest.raises(AttributeError):
        config.seed = 3  # type: ignore[misc]
    assert config.replace(seed=3).seed == 3 and config.seed == 1


def test_population_is_auto_by_default_and_one_at_a_time_on_request():
    parse = build_parser().parse_args
    assert RunConfig.from_options(**options(parse(["diabetes"]))).search.population is None
    assert RunConfig.from_options(**options(parse(["diabetes", "--population", "1"]))).search.population == 1
    assert RunConfig.from_options(**options(parse(["diabetes", "--population", "auto"]))).search.population is None
    assert RunConfig.from_options(**options(parse(["diabetes", "--population", "16"]))).search.population == 16
    with pytest.raises(InputError, match="--population must be 1 or more"):
        RunConfig.from_options(population=0)


def test_the_workers_warmed_up_at_start_are_those_the_search_will_start(monkeypatch):
    """As many as ``automl.state`` gives the search (one beside the run's process on 2 cores, at 30 s or more), none
    where the search runs in the run's process or no network family is allowed."""
    from automl import devices
    from automl.config import RunConfig
    from automl.state import WORKERS_MIN_BUDGET, expected_workers

    monkeypatch.setattr(devices, "usable_cores", lambda *a: 2)
    monkeypatch.setattr(devices, "default_workers", lambda *a, **k: 1)
    assert expected_workers(RunConfig.from_options(max_runtime_secs=30)) == 1
    assert expected_workers(RunConfig.from_options()) == 1  # the default budget
    assert expected_workers(RunConfig.from_options(max_runtime_secs=WORKERS_MIN_BUDGET - 1)) == 0
    assert expected_workers(RunConfig.from_options(max_runtime_secs=60, include_algos=["GBM", "GLM"])) == 0
    assert expected_workers(RunConfig.from_options(max_runtime_secs=60, engine="keras-tuner")) == 0
    assert expected_workers(RunConfig.from_options(max_runtime_secs=60, workers=3)) == 3
    monkeypatch.setattr(devices, "usable_cores", lambda *a: 1)
    assert expected_workers(RunConfig.from_options(max_runtime_secs=60)) == 0
