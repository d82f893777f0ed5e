"""The search stage's entry for Keras Tuner: a budgeted oracle, a tuner over our fast trainer, run until the
engines' one stop rule says done."""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

from automl.budget import Budget, model_deadline
from automl.engines.base import SearchData, SearchJob, TrialRecord, check_identity, progress_line
from automl.engines.keras_tuner_engine.space import warm_start
from automl.engines.keras_tuner_engine.tuner import make_oracle, records, tuner_class
from automl.engines.stop import Finished, StopRule, announce
from automl.engines.trainers import train_trial
from automl.events import EventLog
from automl.io import atomic_write_text

__all__ = ["search"]


def search(job: SearchJob, data: SearchData, budget: Budget, events: EventLog, started: None = None,
           remote: None = None) -> list[TrialRecord]:
    """Run trials until the budget, ``max_models`` or the failure limit says stop.

    The tuner is ``hyperband`` (each trial trains at most the epochs its bracket gives
    it), ``bayesian`` or ``random``. Warm starts are the first configurations tried.
    """
    oracle = make_oracle(job)
    # The next trial also waits for its configuration: Bayesian optimisation's proposals are part of its cost.
    stop = StopRule(budget, job, overhead=lambda: oracle.proposal_seconds)
    oracle.warm_starts = [warm_start(job.space, w) for w in job.warm_starts]
    oracle.should_stop = lambda: _reason(oracle, job, stop) is not None
    trials = _Trials(job, data, budget, events, oracle, stop)
    tuner = _open(job, oracle, trials)
    earlier = records(oracle, job.space)
    if oracle.trials:
        events.add("search", f"resuming {job.config.search.tuner} search {job.study_name} with {len(earlier)} "
                             "finished trials")
    reason = _reason(oracle, job, stop)
    # max_trials=0 reads as "no limit" to Keras Tuner, so a reached limit is checked here (by the stop rule).
    if reason is None:
        tuner.search(verbose=0)
        reason = _reason(oracle, job, stop)
    announce(events, reason)
    return records(oracle, job.space)


def _reason(oracle: Any, job: SearchJob, stop: StopRule) -> str | None:
    """The stop rule read from the oracle's finished trials."""
    return stop.reason([Finished(r.state, r.duration_s if r.state == "COMPLETE" else None)
                        for r in records(oracle, job.space)])


def _open(job: SearchJob, oracle: Any, trials: _Trials) -> Any:
    """The job's tuner, resumed from its project folder if it has one (whose identity must match the job's)."""
    project = job.storage_dir / "keras_tuner" / job.config.search.tuner / job.study_name
    identity = project / "identity.json"
    check_identity(job.study_name, json.loads(identity.read_text()) if identity.exists() else None, job)
    # Keras Tuner prints "Reloading Tuner from ..." when it resumes; the event log says so instead.
    with contextlib.redirect_stdout(io.StringIO()):
        tuner = tuner_class()(oracle, space=job.space, run=trials.run, after_trial=trials.ended,
                              max_epochs=job.max_epochs, directory=str(project.parent), project_name=job.study_name,
                              overwrite=False)
    atomic_write_text(identity, json.dumps(job.identity, sort_keys=True))
    return tuner


class _Trials:
    """What the tuner's trials do: train under the search's deadline and the per-model cap, and show progress."""

    def __init__(self, job: SearchJob, data: SearchData, budget: Budget, events: EventLog, oracle: Any,
                 stop: StopRule) -> None:
        self.job, self.data, self.budget, self.events, self.oracle, self.stop = job, data, budget, events, oracle, stop

    def run(self, number: int, params: dict[str, Any], epochs: int) -> tuple[float, int]:
        deadline = model_deadline(self.stop.trial_deadline(), self.job.config.search.max_runtime_secs_per_model)
        return train_trial(params, self.data, self.job.metric, self.job.config.seed + number, None, deadline, epochs,
                           name=f"trial_{number}")

    def ended(self, record: TrialRecord) -> None:
        best = [t.score for t in self.oracle.get_best_trials(1) if t.status == "COMPLETED"]
        self.events.add("search", progress_line(record.number, record.state, self.job.metric,
                                                record.value if record.state == "COMPLETE" else None,
                                                best[0] if best else None, self.budget.left(), record.number + 1,
                                                self.job.config.search.max_models))
