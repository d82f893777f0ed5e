"""``python -m automl.predict MODEL_DIR DATA --output preds.csv``: predictions from an exported model.

``preds.csv`` holds ``predict`` (the class label or the value) and, for classification,
one ``p_<class>`` probability column per class. Predicted labels are data, written exactly
as the training labels were (a label ``-x`` or ``=1`` stays ``-x`` or ``=1``), so that they
compare equal to the labels a reader holds; the spreadsheet formula guard (a leading
``'``) applies only to free text copied through, such as the ``file`` column of images.
"""

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
    p.add_argument("data", help="a .csv or .parquet file of rows to predict; for image models an .npz file "
                                "(array x) or a folder of images")
    p.add_argument("--output", default="preds.csv", help="where to write predictions (default preds.csv)")
    args = p.parse_args(argv)

    from automl.data import read_table
    from automl.errors import InputError
    from automl.export import load_model
    from automl.images import is_image_source, load_images
    from automl.io import write_csv

    try:
        model = load_model(args.model_dir)
        source = Path(args.data)
        if model.schema.task == "image":
            if not is_image_source(source):
                raise InputError(f"{source}: model {model.model_id} reads images; give an .npz file or a folder")
            images, _, files = load_images(source)
            preds = model.predict(images)
            if files is not None:
                preds.insert(0, "file", files)
        else:
            frame = read_table(source)
            model.check_columns(frame, args.data)
            preds = model.predict(frame)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_csv(preds, Path(args.output), verbatim=["predict"])
    print(f"wrote {len(preds)} predictions to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
