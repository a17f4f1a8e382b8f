"""The columns of a user's interaction file: finding them by name, and converting them.

A role (user, item, rating, timestamp, title, genres) is found by the column's
name with case, punctuation and a RecBole ``:type`` suffix ignored, so
``userId``, ``user_id`` and ``User ID`` all name the user column.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from lrml.dataset import DataError
from lrml.movielens import split_titles

ROLES = ("user", "item", "rating", "timestamp", "title", "genres")
COLUMN_ALIASES = {
    "user": ("user_id", "userId", "user", "uid", "customer_id", "reviewer_id"),
    "item": ("item_id", "itemId", "item", "iid", "movie_id", "movieId", "movie",
             "product_id", "productId", "product", "asin", "book_id", "track_id"),
    "rating": ("rating", "score", "stars", "value", "preference"),
    "timestamp": ("timestamp", "time", "ts", "unix_time", "datetime", "date",
                  "created_at"),
    "title": ("title", "movie_title", "item_title", "name", "item_name"),
    "genres": ("genres", "genre", "class", "categories", "category"),
}  # fmt: skip


def _normalise(name: str) -> str:
    """Return a column name without RecBole type, case or punctuation (userid)."""
    return re.sub(r"[^a-z0-9]", "", name.split(":", 1)[0].lower())


_ALIAS_ROLES = {
    _normalise(alias): role
    for role, aliases in COLUMN_ALIASES.items()
    for alias in aliases
}


def assign_roles(
    header: list[str], chosen: dict[str, str], line: int, where: str
) -> dict[str, int]:
    """Return ``{role: position}``, from ``chosen`` names first, then from aliases."""
    positions: dict[str, int] = {}
    for role, name in chosen.items():
        if name not in header:
            raise DataError(
                f"{where}, line {line}: expected a column {name!r} for the {role}, "
                f"found columns {', '.join(header)}. Choose one of those."
            )
        positions[role] = header.index(name)

    assigned = set(positions.values())
    for position, name in enumerate(header):
        role = _ALIAS_ROLES.get(_normalise(name))
        if role is not None and role not in positions and position not in assigned:
            positions[role] = position
            assigned.add(position)

    for role in ("user", "item"):
        if role not in positions:
            raise DataError(
                f"{where}, line {line}: no {role} column. Expected a column named "
                f"{', '.join(COLUMN_ALIASES[role])} (any case), found "
                f"{', '.join(header)}. Rename the column or choose it explicitly."
            )
    return positions


def standard_columns(
    frame: pd.DataFrame, positions: dict[str, int], names: list[str], where: str, locate
) -> pd.DataFrame:
    """Return ``frame`` with the `Dataset` interaction columns, title and genres."""
    result = pd.DataFrame(
        {
            "user_id": frame["user"].astype("int64"),
            "item_id": frame["item"].astype("int64"),
        }
    )
    result["rating"] = frame["rating"].astype("float32") if "rating" in frame else 1.0
    result["rating"] = result["rating"].astype("float32")

    if "timestamp" not in frame:
        result["timestamp"] = np.arange(len(frame), dtype=np.int64)
    else:
        label = names[positions["timestamp"]]
        result["timestamp"] = _unix_seconds(frame["timestamp"], label, where, locate)

    for role in ("title", "genres"):
        if role in frame:
            result[role] = frame[role].fillna("").astype(str)
    return result


def _unix_seconds(values: pd.Series, label: str, where: str, locate) -> np.ndarray:
    """Convert numbers (Unix seconds, fractions dropped) or ISO 8601 dates to int64."""
    if pd.api.types.is_integer_dtype(values):
        return values.to_numpy(np.int64)
    if pd.api.types.is_numeric_dtype(values):
        seconds = values.to_numpy(np.float64)
        invalid = ~np.isfinite(seconds)
        if invalid.any():
            row = int(invalid.argmax())
            raise DataError(
                f"{where}, {locate(row)}: {label} must be a finite number of "
                f"seconds, found {values.iloc[row]!r}."
            )
        return np.floor(seconds).astype(np.int64)
    if pd.api.types.is_datetime64_any_dtype(values):
        dates = pd.to_datetime(values, utc=True)
    else:
        dates = pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
    missing = dates.isna().to_numpy()
    if missing.any():
        row = int(missing.argmax())
        raise DataError(
            f"{where}, {locate(row)}: {label} must be Unix seconds or an ISO 8601 "
            f"date such as 2024-01-31 12:00:00, found {values.iloc[row]!r}."
        )
    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    return ((dates - epoch) // pd.Timedelta(seconds=1)).to_numpy(np.int64)


def items_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Return one row per item id, with the first title and genres given for it."""
    firsts = frame.drop_duplicates("item_id").sort_values("item_id", kind="stable")
    ids = firsts["item_id"].to_numpy(np.int64)
    if "title" in firsts:
        titles, years = split_titles(firsts["title"].reset_index(drop=True))
    else:
        titles = pd.Series([f"item {i}" for i in ids], dtype=str)
        years = pd.Series(pd.NA, index=titles.index, dtype="Int64")
    genres = firsts["genres"].reset_index(drop=True) if "genres" in firsts else ""
    items = pd.DataFrame(
        {"item_id": ids, "title": titles, "year": years, "genres": genres}
    )
    items["genres"] = items["genres"].astype(str)
    return items
