"""``python -m automl.predict MODEL_DIR DATA --output preds.csv``: predictions from an exported model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m automl.predict",
                                description="Predict raw rows (the training columns; a target column is "
                                            "ignored) with a model folder from models/ or leader/.")
    p.add_argument("model_dir", help="a model folder holding model.json")
    p.add_argument("data", help="a .csv or .parquet file of rows to predict")
    p.add_argument("--output", default="preds.csv", help="where to write predictions (default preds.csv)")
    args = p.parse_args(argv)

    from automl.data import read_table
    from automl.errors import InputError
    from automl.export import load_model
    from automl.io import write_csv

    try:
        model = load_model(args.model_dir)
        frame = read_table(Path(args.data))
        model.check_columns(frame, args.data)
        preds = model.predict(frame)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_csv(preds, Path(args.output))
    print(f"wrote {len(preds)} predictions to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
