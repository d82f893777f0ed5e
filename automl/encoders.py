"""Category codes for networks: what ``make_preprocessor(kind="network")`` appends after the dense matrix."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

__all__ = ["CategoryCodes", "MAX_EMBEDDED_LEVELS"]

#: Levels of a categorical column a network embeds at most (the commonest; :class:`CategoryCodes`).
MAX_EMBEDDED_LEVELS = 1000


class CategoryCodes(BaseEstimator, TransformerMixin):
    """Each categorical column as an integer code for a network's entity embeddings (``automl.layers``): 0 for a
    level unseen in the training rows, then the levels of at least ``min_rows`` training rows, at most
    :data:`MAX_EMBEDDED_LEVELS` of them (the commonest), and one code the rarer levels share (scikit-learn's
    infrequent categories). A missing cell is a level of its own. Float32 out, like the rest of the matrix."""

    def __init__(self, min_rows: int = 5):
        self.min_rows = min_rows

    def fit(self, x: pd.DataFrame, y: Any = None) -> CategoryCodes:
        from sklearn.preprocessing import OrdinalEncoder

        self.encoder_ = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                       min_frequency=self.min_rows, max_categories=MAX_EMBEDDED_LEVELS,
                                       dtype=np.float32)
        self.encoder_.fit(self._text(x))
        return self

    def transform(self, x: pd.DataFrame) -> np.ndarray:
        return (self.encoder_.transform(self._text(x)) + 1.0).astype("float32")  # unseen (-1) becomes 0

    @staticmethod
    def _text(x: pd.DataFrame) -> pd.DataFrame:
        return x.astype(object).where(x.notna(), "(missing)").astype(str)
