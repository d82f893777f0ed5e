"""The Keras Tuner engine: Hyperband, Bayesian optimisation or random search over the same spaces.

Trials train with the fast loop every engine shares (:func:`automl.engines.train_trial`),
not with ``model.fit``: the tuner is a ``BaseTuner`` whose ``run_trial`` turns the
trial's hyperparameters back into the space's names. (``BaseTuner`` rather than
``keras_tuner.Tuner``: the latter builds, fits and saves a Keras model per trial, with
TensorBoard callbacks, which is exactly the slow path we avoid.)

Keras Tuner keeps its state in ``<storage_dir>/keras_tuner/<tuner>/<study_name>``; running
the same project again reloads it and continues (``overwrite=False``). Keras Tuner has no
time budget of its own: the oracle stops handing out trials when
:func:`automl.budget.search_should_stop` says so, and each trial ends at :func:`automl.budget.search_deadline`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

from automl.budget import Budget, model_deadline, search_deadline, search_should_stop
from automl.engines import (
    HYPERBAND_MIN_EPOCHS,
    MAX_CONSECUTIVE_FAILURES,
    SearchData,
    SearchJob,
    TrialRecord,
    check_identity,
    progress_line,
    train_trial,
)
from automl.events import EventLog
from automl.io import atomic_write_text
from automl.spaces import Choice, Float, Int, Param

__all__ = ["search", "render", "param_importances", "SUPPORTS_WORKERS"]

#: Keras Tuner runs its trials in this process (its own multi-worker mode needs a chief/worker setup).
SUPPORTS_WORKERS = False
#: Hyperband's shortest trial is :data:`automl.engines.HYPERBAND_MIN_EPOCHS`: Keras Tuner would fix it at
#: 1 epoch, and with 100 epochs its first bracket would train 98 two-epoch models.
HYPERBAND_FACTOR = 3


def render(space: tuple[Param, ...]) -> Any:
    """Render ``space`` as Keras Tuner ``HyperParameters`` (the counterpart of :func:`automl.spaces.suggest`)."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for p in space:
        if p.name.startswith("tuner/"):
            raise ValueError(f"parameter names starting with 'tuner/' belong to Keras Tuner, but got {p.name=}")
        if isinstance(p, Int | Float) and p.low == p.high:
            # A zero-width range breaks Bayesian optimisation (it scales values by high - low).
            hp.Fixed(p.name, _typed(p, p.low))
        elif isinstance(p, Int):
            hp.Int(p.name, p.low, p.high, sampling="log" if p.log else "linear")
        elif isinstance(p, Float):
            hp.Float(p.name, float(p.low), float(p.high), sampling="log" if p.log else "linear")
        elif len(p.choices) == 1:
            hp.Fixed(p.name, p.choices[0])
        elif all(isinstance(c, bool) for c in p.choices):
            hp.Boolean(p.name)  # hp.Choice would turn False/True into the ints 0/1
        else:
            try:
                hp.Choice(p.name, list(p.choices))
            except TypeError:
                raise ValueError(f"Keras Tuner needs one value type per Choice, but got {p.name}: {p.choices=}") \
                    from None
    return hp


def _typed(p: Param, value: Any) -> Any:
    """``value`` with the type the Optuna engine gives ``p`` (JSON and Keras Tuner may change it)."""
    if isinstance(p, Int):
        return int(value)
    if isinstance(p, Float):
        return float(value)
    return value


def _params(space: tuple[Param, ...], values: dict[str, Any]) -> dict[str, Any]:
    """The space's parameters out of a trial's values (which also hold Hyperband's ``tuner/*``)."""
    return {p.name: _typed(p, values[p.name]) for p in space}


def _warm_start(space: tuple[Param, ...], values: dict[str, Any]) -> dict[str, Any]:
    """A warm start as trial values; it must lie inside the space (Bayesian optimisation embeds it there)."""
    missing = [p.name for p in space if p.name not in values]
    if missing:
        raise ValueError(f"warm start {values} lacks {missing}")
    for p in space:
        v = values[p.name]
        inside = v in p.choices if isinstance(p, Choice) else p.low <= v <= p.high
        if not inside:
            raise ValueError(f"warm start value {p.name}={v!r} lies outside the space: {p}")
    return _params(space, values)


def param_importances(job: SearchJob) -> None:
    """Keras Tuner has no hyperparameter importances."""
    return None


def search(job: SearchJob, data: SearchData, budget: Budget, events: EventLog, started: None = None,
           remote: None = None) -> list[TrialRecord]:
    """Run trials until the budget, ``max_models`` or the failure limit says stop.

    The tuner is ``hyperband`` (each trial trains at most the epochs its bracket gives
    it), ``bayesian`` or ``random``. Warm starts are the first configurations tried.
    """
    tuner, space, metric, max_epochs = job.config.search.tuner, job.space, job.metric, job.max_epochs
    max_trials, seed = job.config.search.max_models, job.config.seed
    warm = [_warm_start(space, w) for w in job.warm_starts]
    oracle = _oracle(job)
    durations: list[float] = []  # of completed trials: what search_should_stop calls a trial's length
    failures = 0
    stop = False

    def run(number: int, params: dict[str, Any], epochs: int) -> tuple[float, int]:
        deadline = model_deadline(search_deadline(budget, job.stop.finish_seconds, job.stop.keep_share),
                                  job.config.search.max_runtime_secs_per_model)
        return train_trial(params, data, metric, seed + number, None, deadline, epochs,
                           name=f"trial_{number}")

    def after_trial(record: TrialRecord) -> None:
        nonlocal failures, stop
        if record.state == "COMPLETE":
            durations.append(record.duration_s)
        failures = failures + 1 if record.state == "FAIL" else 0
        best = [t.score for t in oracle.get_best_trials(1) if t.status == "COMPLETED"]
        events.add("search", progress_line(record.number, record.state, metric,
                                           record.value if record.state == "COMPLETE" else None,
                                           best[0] if best else None, budget.left(), record.number + 1, max_trials))
        if failures >= MAX_CONSECUTIVE_FAILURES:
            events.warn("search", f"stopping: {failures} trials in a row failed; see the error column of trials.csv")
            stop = True

    def should_stop() -> bool:
        # The next trial also waits for its configuration: Bayesian optimisation's Gaussian
        # process took 1-15 s a proposal on 2 busy cores, longer than a diabetes trial.
        policy = job.stop
        return stop or budget.left() <= 0 or search_should_stop(
            budget, durations, policy.refit_trials, policy.finish_seconds + oracle.proposal_seconds, policy.keep_share)

    oracle.warm_starts, oracle.should_stop = warm, should_stop
    project = job.storage_dir / "keras_tuner" / tuner / job.study_name
    identity = project / "identity.json"
    check_identity(job.study_name, json.loads(identity.read_text()) if identity.exists() else None, job)
    # Keras Tuner prints "Reloading Tuner from ..." when it resumes; the event log says so instead.
    with contextlib.redirect_stdout(io.StringIO()):
        kt_tuner = _tuner_class()(oracle, space=space, run=run, after_trial=after_trial, max_epochs=max_epochs,
                                directory=str(project.parent), project_name=job.study_name,
                                overwrite=False)
    atomic_write_text(identity, json.dumps(job.identity, sort_keys=True))
    earlier = _records(oracle, space)
    durations += [r.duration_s for r in earlier if r.state == "COMPLETE"]
    if oracle.trials:
        events.add("search", f"resuming {tuner} search {job.study_name} with {len(earlier)} finished trials")
    # max_trials=0 reads as "no limit" to Keras Tuner, so a reached limit is checked here.
    if (max_trials is None or len(oracle.trials) < max_trials) and not should_stop():
        kt_tuner.search(verbose=0)
    return _records(oracle, space)


def _oracle(job: SearchJob) -> Any:
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


def _records(oracle: Any, space: tuple[Param, ...]) -> list[TrialRecord]:
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
                       _params(space, trial.hyperparameters.values), "" if complete else (trial.message or ""))


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
def _tuner_class() -> type:
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
                value, best_epoch = self.run(number, _params(self.space, values), epochs)
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
