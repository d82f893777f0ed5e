"""``AutoML``: the scikit-learn-style face of the library over the run's stages.

``__init__`` only stores its parameters; ``fit`` builds the one :class:`RunConfig`
(validated there, once), starts a fresh :class:`RunState` and runs the stages that
``flows/automl_flow.py`` runs as Prefect tasks.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pandas as pd

from automl import data as data_mod
from automl.config import RunConfig

__all__ = ["AutoML", "run_stages"]


class AutoML:
    """Search networks and reference models under a time budget; rank them on one protocol.

    >>> aml = AutoML(max_runtime_secs=60).fit("diabetes")      # doctest: +SKIP
    >>> aml.leaderboard.head(); aml.predict(new_rows)          # doctest: +SKIP

    Parameters are the options of ``python -m automl.run`` (see ``--help``);
    ``leaderboard_frame`` may also be a DataFrame. ``query``, ``newest_days`` and ``date_column`` say what
    ``fit`` reads of a database URL, folder or glob pattern (see :class:`automl.sources.Source`).
    """

    def __init__(self, max_runtime_secs: float | None = None, max_models: int | None = None, seed: int = 1,
                 nfolds: int | None = None, validation: str = "auto", sort_metric: str | None = None,
                 engine: str = "optuna", tuner: str = "hyperband", workers: int | None = None,
                 storage: str | None = None, max_runtime_secs_per_model: float | None = None,
                 include_algos: list[str] | None = None, exclude_algos: list[str] | None = None,
                 leaderboard_frame: str | Path | pd.DataFrame | None = None, project: str | None = None,
                 output_dir: str | Path | None = None, verbose: bool | None = None, started_at: float | None = None,
                 distribute: str | None = None, tensorboard: str | Path | None = None,
                 population: int | None = None, query: str | None = None, newest_days: float | None = None,
                 date_column: str | None = None) -> None:
        for name, value in locals().items():
            if name != "self":
                setattr(self, name, value)
        self.state_ = None

    def get_params(self) -> dict[str, Any]:
        """The constructor's parameters and their values (scikit-learn's convention)."""
        return {name: getattr(self, name) for name in inspect.signature(type(self).__init__).parameters
                if name != "self"}

    def fit(self, data: str | pd.DataFrame | data_mod.Dataset, target: str | None = None,
            task: str | None = None) -> AutoML:
        """Run every stage on ``data`` (a built-in name, a path, a glob pattern, a database URL, a DataFrame or a
        Dataset)."""
        from automl.state import start

        options = self.get_params()
        frame = options.pop("leaderboard_frame")
        for path_option in ("output_dir", "tensorboard"):
            options[path_option] = None if options[path_option] is None else str(options[path_option])
        self.state_ = None  # a second fit starts from nothing
        config = RunConfig.from_options(**options, target=target, task=task,
                                        dataset=data if isinstance(data, str) else None,
                                        leaderboard_frame=None if isinstance(frame, pd.DataFrame) or frame is None
                                        else str(frame))
        state = start(config, data, leaderboard_frame=frame if isinstance(frame, pd.DataFrame) else None)
        run_stages(state)
        self.state_ = state
        return self

    def _fitted(self) -> Any:
        if self.state_ is None:
            raise RuntimeError("call fit() first")
        return self.state_

    @property
    def leaderboard(self) -> pd.DataFrame:
        """The ranked models (a copy), best first."""
        return self._fitted().board.copy()

    @property
    def leader(self) -> Any:
        """The best model on the leaderboard."""
        return self._fitted().leader

    @property
    def evaluated(self) -> list[Any]:
        """Every ranked model with its scored predictions (``automl.evaluation.Evaluated``)."""
        return self._fitted().evaluated

    @property
    def events(self) -> Any:
        """The run's event log."""
        return self._fitted().events

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The leader's predictions: ``predict`` and ``p_<class>`` columns."""
        return self.leader.predict(frame)

    def get_best_model(self, algorithm: str | None = None, criterion: str | None = None) -> Any:
        """The best model of a family by a leaderboard column, with H2O's semantics.

        ``algorithm``: None (any), ``"basemodel"`` (anything but an ensemble), or a family
        (``glm``, ``gbm``, ``drf``, ``xrt``, ``mlp``/``deeplearning``, ``stackedensemble``;
        any case). ``criterion``: a metric of the task, ``training_time_ms`` or
        ``predict_time_per_row_ms`` (lower is better); default the sort metric.
        """
        from automl.outputs import best_model

        return best_model(self._fitted(), algorithm, criterion)


def run_stages(state: Any) -> pd.DataFrame:
    """Every training job by the scheduler's queue (``automl.jobs``: reference models, the GBM and network
    searches and their best configurations, ensembles, refits), then the outputs; return the board."""
    from automl import jobs, outputs

    jobs.run_jobs(state)
    return outputs.finish(state)
