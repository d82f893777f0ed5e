"""Prefect flows around the ``automl`` library: orchestration only, no ML logic.

``flows.automl_flow.automl_flow`` and ``flows.retrain.retrain_flow``. Nothing is imported
here: ``flows.server`` must load before Prefect does (the CLI starts the API first).
"""
