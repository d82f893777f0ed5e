"""Progress lines for the trials of a run, whichever process ran them."""

from __future__ import annotations

from datetime import datetime

import optuna

from automl.budget import Budget
from automl.engines.base import SearchJob, progress_line
from automl.engines.optuna_engine.ledger import Ledger
from automl.engines.optuna_engine.study import best_value
from automl.events import EventLog

__all__ = ["Progress"]


class Progress:
    """Progress lines for this run's trials (started at ``since`` or later) as they finish, in any process."""

    def __init__(self, study: optuna.Study, job: SearchJob, budget: Budget, events: EventLog,
                 since: datetime) -> None:
        self.study, self.job, self.budget, self.events = study, job, budget, events
        self.seen = {t.number for t in study.trials if t.state.is_finished() and t.datetime_start is not None
                     and t.datetime_start < since}

    def show(self) -> None:
        ledger = Ledger(self.study.trials)
        for trial in ledger.listed():
            if trial.number in self.seen:
                continue
            self.seen.add(trial.number)
            done = len([t for t in ledger.results() if t.number <= trial.number])
            self.events.add("search", progress_line(trial.number, trial.state.name, self.job.metric, trial.value,
                                                    best_value(self.study), self.budget.left(), done,
                                                    self.job.config.search.max_models))
