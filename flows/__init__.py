"""Prefect flows around the ``automl`` library: orchestration only, no ML logic."""

from flows.automl_flow import automl_flow
from flows.retrain import retrain_flow

__all__ = ["automl_flow", "retrain_flow"]
