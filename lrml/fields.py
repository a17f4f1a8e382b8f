"""Converting text fields to typed columns, with errors that name the line.

Each function takes a Series of str whose index contains line numbers (or row
numbers), and raises a `DataError` naming the first bad value's line.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lrml.dataset import DataError


def parse_integers(
    text: pd.Series,
    column: str,
    where: str,
    fix: str,
    *,
    nullable: bool = False,
    unit: str = "line",
) -> pd.Series:
    """Convert str values to int64, or Int64 with ``<NA>`` for blanks if ``nullable``.

    Integral floats such as ``"881250949.0"`` are accepted, because RecBole
    declares timestamps as ``float``. The index of ``text`` contains line numbers
    (or row numbers, with ``unit="row"``) for the message.
    """
    stripped = text.str.strip()
    values = pd.to_numeric(stripped, errors="coerce")
    invalid = values.isna() | (values % 1 != 0)
    if nullable:
        invalid &= stripped != ""
    raise_at_first(invalid, text, f"{column} must be an integer", where, fix, unit)
    return values.astype("Int64" if nullable else "int64")


def parse_floats(
    text: pd.Series, column: str, where: str, fix: str, *, unit: str = "line"
) -> pd.Series:
    """Convert str values to float32, raising at the first one that is not finite."""
    values = pd.to_numeric(text.str.strip(), errors="coerce").astype("float64")
    invalid = ~np.isfinite(values)
    rule = f"{column} must be a finite number"
    raise_at_first(invalid, text, rule, where, fix, unit)
    return values.astype("float32")


def raise_at_first(
    invalid: pd.Series,
    text: pd.Series,
    rule: str,
    where: str,
    fix: str,
    unit: str = "line",
) -> None:
    """Raise DataError naming the first True entry of ``invalid`` by its index."""
    if invalid.any():
        line = invalid.idxmax()
        raise DataError(f"{where}, {unit} {line}: {rule}, found {text[line]!r}. {fix}")


def sort_unique(frame: pd.DataFrame, key: str, where: str, fix: str) -> pd.DataFrame:
    """Sort ``frame`` by ``key``, raising DataError at the line of a repeated key."""
    duplicated = frame[key].duplicated()
    if duplicated.any():
        line = duplicated.idxmax()
        raise DataError(
            f"{where}, line {line}: {key} {frame[key][line]} appears twice. {fix}"
        )
    return frame.sort_values(key, kind="stable").reset_index(drop=True)
