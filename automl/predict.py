"""``python -m automl.predict MODEL_DIR DATA --output preds.csv``: predictions from an exported model.

``preds.csv`` holds ``predict`` (the class label or the value) and, for classification,
one ``p_<class>`` probability column per class. Predicted labels are data, written exactly
as the training labels were (a label ``-x`` or ``=1`` stays ``-x`` or ``=1``), so that they
compare equal to the labels a reader holds; the spreadsheet formula guard (a leading
``'``) applies only to free text copied through, such as the ``file`` column of images.
A folder of images is read and predicted in batches, each image resized to the model's image shape.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from automl.bagging import Model

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m automl.predict",
                                description="Predict raw rows (the training columns; a target column is "
                                            "ignored) with a model folder from models/ or leader/.")
    p.add_argument("model_dir", help="a model folder holding model.json")
    p.add_argument("data", help="a .csv or .parquet file of rows to predict; for image models an .npz file "
                                "(array x, of the model's image shape) or a folder of images of any size (each "
                                "is resized to the model's)")
    p.add_argument("--output", default="preds.csv", help="where to write predictions (default preds.csv)")
    args = p.parse_args(argv)

    from automl.data import read_table
    from automl.errors import InputError
    from automl.export import load_model
    from automl.images import is_image_source
    from automl.io import write_csv

    try:
        model = load_model(args.model_dir)
        source = Path(args.data)
        if model.schema.task == "image":
            if not is_image_source(source):
                raise InputError(f"{source}: model {model.model_id} reads images; give an .npz file or a folder")
            preds = _predict_images(model, source)
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


def _predict_images(model: Model, source: Path) -> pd.DataFrame:
    """Predictions for an ``.npz`` file (read whole: an array of another shape is an error) or a folder, read
    in batches brought to the model's image shape, so that its pixels are never all in memory at once."""
    import pandas as pd

    from automl.images import iter_image_batches, load_images

    if not source.is_dir():
        return model.predict(load_images(source)[0])
    frames = []
    for images, files in iter_image_batches(source, model.schema.image_shape):
        preds = model.predict(images)
        preds.insert(0, "file", files)
        frames.append(preds)
    return pd.concat(frames, ignore_index=True)


if __name__ == "__main__":
    sys.exit(main())
