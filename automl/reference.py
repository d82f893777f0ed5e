"""The reference models: H2O's families (GBM first, then GLM, DRF, XRT; GLM and SVM on images), in a portfolio
order, each a scheduler job (:mod:`automl.jobs`).

A candidate's estimate is its cost formula (rows × the columns it trains on) times the protocol's folds; the
scheduler corrects it by how its family's earlier models did against theirs, and starts it only when it fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from automl.devices import free_cores
from automl.models import Candidate, reference_candidates
from automl.preprocess import dense_width
from automl.state import RunState

__all__ = ["ReferenceCandidate", "reference_portfolio"]


@dataclass
class ReferenceCandidate:
    """A reference model to rank, its estimated seconds on the protocol, and whether it is its family's first."""

    candidate: Candidate
    estimate: float
    first_of_family: bool


def reference_portfolio(state: RunState) -> list[ReferenceCandidate]:
    """The reference families the run allows, in the portfolio's order, with their estimates."""
    protocol = state.protocol
    train_rows = len(protocol.folds[0][0])
    n_features = len(state.schema.features) or math.prod(state.schema.image_shape or [1])  # an image's pixels
    # Estimates are costed on the matrix each candidate sees: LightGBM splits the raw columns, the GLM and the
    # forests the one-hot encoding (280 columns of the synthetic table's 35).
    widths = {"trees": n_features, "dense": dense_width(state.x, state.schema) if state.schema.task != "image"
              else n_features}
    candidates = [c for c in reference_candidates(state.schema.task, state.config.seed, n_rows=train_rows,
                                                  n_features=n_features, n_jobs=free_cores(),
                                                  skewed_positive=state.skewed_target)
                  if c.algo in state.config.evaluation.algos]
    seen: set[str] = set()
    portfolio = []
    for c in candidates:
        rows = train_rows if c.max_rows is None else min(train_rows, c.max_rows)
        portfolio.append(ReferenceCandidate(c, len(protocol.folds) * c.estimate_seconds(rows, widths.get(c.features,
                                                                                                   n_features)),
                                            c.algo not in seen))
        seen.add(c.algo)
    return portfolio
