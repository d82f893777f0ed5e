"""Keras Tuner's oracle and tuner, taught our ways: warm starts first, a stop rule of ours, trials trained with the
fast loop every engine shares, and their records kept in the trials' own files."""

from __future__ import annotations

import functools
import math
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

from automl.engines.base import HYPERBAND_MIN_EPOCHS, SearchJob, TrialRecord
from automl.engines.keras_tuner_engine.space import params_of, render
from automl.spaces import Param

__all__ = ["make_oracle", "tuner_class", "records", "HYPERBAND_FACTOR"]

#: Hyperband's shortest trial is :data:`automl.engines.HYPERBAND_MIN_EPOCHS`: Keras Tuner would fix it at
#: 1 epoch, and with 100 epochs its first bracket would train 98 two-epoch models.
HYPERBAND_FACTOR = 3


def make_oracle(job: SearchJob) -> Any:
    """The job's tuner as a budgeted oracle (no trials yet)."""
    import keras_tuner as kt

    _quiet_keras_tuner()
    objective = kt.Objective("score", "max" if job.metric.higher_is_better else "min")
    # Keras Tuner reads seed 0 as "no seed" and draws a random one.
    options: dict[str, Any] = dict(objective=objective, hyperparameters=render(job.space), seed=job.config.seed + 1,
                                   allow_new_entries=False, tune_new_entries=False,
                                   # Its own limit raises in the middle of saving the oracle: we count failures.
                                   max_consecutive_failed_trials=sys.maxsize)
    if job.config.search.tuner == "hyperband":  # brackets repeat until the budget or max_trials ends the search
        options.update(max_epochs=job.max_epochs, factor=HYPERBAND_FACTOR, hyperband_iterations=None,
                       min_epochs=min(HYPERBAND_MIN_EPOCHS, job.max_epochs))
    oracle = _oracle_class(job.config.search.tuner)(**options)
    # Not an argument of Hyperband's oracle, but every oracle's create_trial honours it.
    oracle.max_trials = job.config.search.max_models
    return oracle


def _quiet_keras_tuner() -> None:
    """Keras Tuner prints every failed trial's traceback while its DEBUG flag is on; trials.csv has the error.

    The flag has no public setter: this is the one place that touches ``keras_tuner.src``.
    """
    from keras_tuner.src import config as kt_config

    kt_config.DEBUG = False


def records(oracle: Any, space: tuple[Param, ...]) -> list[TrialRecord]:
    """The finished trials in the order they started (a resumed, interrupted trial keeps its place)."""
    return [_record(number, oracle.trials[trial_id], space) for number, trial_id in enumerate(oracle.start_order)
            if oracle.trials[trial_id].status in ("COMPLETED", "FAILED", "INVALID")]


def _record(number: int, trial: Any, space: tuple[Param, ...]) -> TrialRecord:
    complete = trial.status == "COMPLETED"
    metrics = trial.metrics

    def last(name: str, default: float) -> float:
        return metrics.get_last_value(name) if metrics.exists(name) else default

    return TrialRecord(number, "COMPLETE" if complete else "FAIL", float(trial.score) if complete else math.nan,
                       int(last("best_epoch", 0)), round(float(last("duration_s", math.nan)), 3),
                       params_of(space, trial.hyperparameters.values), "" if complete else (trial.message or ""))


@functools.cache
def _oracle_class(tuner: str) -> type:
    """The tuner's oracle, taught to try warm starts first and to stop when the budget says so."""
    import keras_tuner as kt
    from sklearn.exceptions import ConvergenceWarning

    base = {"hyperband": kt.oracles.HyperbandOracle, "bayesian": kt.oracles.BayesianOptimizationOracle,
            "random": kt.oracles.RandomSearchOracle}[tuner]

    class BudgetedOracle(base):
        warm_starts: list[dict[str, Any]]
        should_stop: Callable[[], bool]
        proposal_seconds: float  # how long the last new configuration took to choose

        def __init__(self, *, min_epochs: int | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.warm_starts, self.should_stop, self.proposal_seconds = [], lambda: False, 0.0
            if min_epochs is not None:
                # Hyperband fixed min_epochs=1 and planned its first bracket with it: plan it again. Its
                # planning methods are private (no public min_epochs); this is the one place they are used.
                self.min_epochs = min_epochs
                self._current_bracket = self._get_num_brackets() - 1
                self._brackets = []
                self._start_new_bracket()

        def populate_space(self, trial_id: str) -> dict[str, Any]:
            if self.should_stop():
                return {"status": "STOPPED", "values": None}
            started = time.monotonic()
            with warnings.catch_warnings():
                # Bayesian optimisation's Gaussian process warns whenever a length scale meets its bound.
                warnings.simplefilter("ignore", ConvergenceWarning)
                response = super().populate_space(trial_id)
            self.proposal_seconds = time.monotonic() - started
            return response

        def _random_values(self) -> dict[str, Any] | None:
            # Every oracle draws new configurations here (Hyperband for a bracket's first
            # round, Bayesian optimisation for its initial points), so warm starts go first.
            while self.warm_starts:
                values = self.warm_starts.pop(0)
                if not self._duplicate(values):  # else it ran before this search was resumed
                    return dict(values)
            return super()._random_values()

    return BudgetedOracle


@functools.cache
def tuner_class() -> type:
    """A ``BaseTuner`` whose trials are :func:`train_trial` calls (defined on first use: it imports TF)."""
    from keras_tuner.engine.base_tuner import BaseTuner
    from keras_tuner.errors import FailedTrialError

    class FastTuner(BaseTuner):
        def __init__(self, oracle: Any, *, space: tuple[Param, ...],
                     run: Callable[[int, dict[str, Any], int], tuple[float, int]],
                     after_trial: Callable[[TrialRecord], None], max_epochs: int, **kwargs: Any) -> None:
            super().__init__(oracle, **kwargs)
            self.space, self.run, self.after_trial, self.max_epochs = space, run, after_trial, max_epochs
            self._started, self._error = 0.0, ""

        def on_trial_begin(self, trial: Any) -> None:
            self._started, self._error = time.monotonic(), ""

        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
            values = trial.hyperparameters.values
            number = self.oracle.start_order.index(trial.trial_id)
            epochs = int(values.get("tuner/epochs", self.max_epochs))  # Hyperband's share for this trial
            try:
                value, best_epoch = self.run(number, params_of(self.space, values), epochs)
            except Exception as exc:  # any failure of one trial is recorded; the search goes on
                self._error = f"{type(exc).__name__}: {exc}"
                raise FailedTrialError(self._error) from exc
            return {"score": value, "best_epoch": best_epoch}

        def on_trial_end(self, trial: Any) -> None:
            # What trials.csv needs goes into the trial's own file, so a resumed search can list it.
            if not trial.metrics.exists("duration_s"):
                trial.metrics.register("duration_s")
            trial.metrics.update("duration_s", time.monotonic() - self._started)
            if trial.status != "COMPLETED":
                # Keras Tuner stores the whole traceback; keep the one line that says what went wrong.
                trial.message = self._error or ((trial.message or "").strip().splitlines() or [""])[-1]
            super().on_trial_end(trial)  # the oracle ends the trial and saves the project
            self.after_trial(_record(self.oracle.start_order.index(trial.trial_id), trial, self.space))

    return FastTuner
