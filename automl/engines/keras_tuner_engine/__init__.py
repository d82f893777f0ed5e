"""The Keras Tuner engine: Hyperband, Bayesian optimisation or random search over the same spaces.

Trials train with the fast loop every engine shares (:func:`automl.engines.trainers.train_trial`),
not with ``model.fit``: the tuner is a ``BaseTuner`` whose ``run_trial`` turns the
trial's hyperparameters back into the space's names. (``BaseTuner`` rather than
``keras_tuner.Tuner``: the latter builds, fits and saves a Keras model per trial, with
TensorBoard callbacks, which is exactly the slow path we avoid.)

Keras Tuner keeps its state in ``<storage_dir>/keras_tuner/<tuner>/<study_name>``; running
the same project again reloads it and continues (``overwrite=False``). Keras Tuner has no
time budget of its own: the oracle stops handing out trials when the engines' stop rule
(:class:`automl.engines.stop.StopRule`) says so, and each trial ends at the trials' deadline.

Modules: :mod:`.space` (our spaces as ``HyperParameters``), :mod:`.tuner` (the oracle and tuner classes) and
:mod:`.stage` (the search stage's entry).
"""

from __future__ import annotations

from automl.engines.base import SearchJob
from automl.engines.keras_tuner_engine.space import render
from automl.engines.keras_tuner_engine.stage import search

__all__ = ["search", "render", "param_importances", "SUPPORTS_WORKERS"]

#: Keras Tuner runs its trials in this process (its own multi-worker mode needs a chief/worker setup).
SUPPORTS_WORKERS = False


def param_importances(job: SearchJob) -> None:
    """Keras Tuner has no hyperparameter importances."""
    return None
