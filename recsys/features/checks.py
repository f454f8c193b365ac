"""Checks of raw values that the transforms themselves must tolerate.

Online, `as_float` turns a value that is not a number into a missing one (the fill value), so one
odd request never fails. Offline the same leniency would hide a broken column: text in a numeric
column would train the model on the fill value, silently. A feature build therefore refuses it.
"""

from __future__ import annotations

import pandas as pd

from recsys.errors import DataError
from recsys.features.transforms import as_dictionary
from recsys.spec import FeatureSpec, NumericFeature

__all__ = ["check_numeric_columns"]

_EXAMPLES = 3


def check_numeric_columns(spec: FeatureSpec, frame: pd.DataFrame) -> None:
    """Refuse a numeric feature's column holding non-empty text that is not a number, naming the
    feature, the table, examples and the fix. Looks at the distinct values only (never per row)."""
    for name, feat in spec.features.items():
        if not isinstance(feat, NumericFeature):
            continue
        column = feat.column or name
        if column not in frame or frame[column].dtype.kind in "iufb":
            continue
        _, distinct = as_dictionary(frame[column])
        text = pd.Series(distinct, dtype=object)
        parsed = pd.to_numeric(text, errors="coerce")
        bad = text[parsed.isna() & (text.str.strip() != "") & (text.str.lower() != "nan")]
        if len(bad):
            table = next((spec.tables[t] for t in ("impressions", "users", "items")
                          if column in spec.source_columns(t)), "?")
            examples = ", ".join(repr(v) for v in bad.iloc[:_EXAMPLES])
            raise DataError(f"feature '{name}' is numeric, but column '{column}' of table '{table}' holds "
                            f"{len(bad)} distinct value(s) that are not numbers, e.g. {examples} (fix: clean the "
                            f"column to numbers, leaving missing values empty, or declare the feature categorical)")
