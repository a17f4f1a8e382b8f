"""The `Dataset` container, its column contract and `DataError`.

Every reader in ``lrml`` (the MovieLens releases, RecBole atomic files and the
user's own interaction files) returns a `Dataset` with the same columns and
dtypes, so the split, the model and the pages never depend on the source format.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

INTERACTION_DTYPES = {
    "user_id": "int64",
    "item_id": "int64",
    "rating": "float32",
    "timestamp": "int64",
}
ITEM_COLUMNS = ("item_id", "title", "year", "genres")
USER_COLUMNS = ("user_id", "age", "gender", "occupation", "zip_code")


class DataError(ValueError):
    """Missing, unreadable or malformed dataset files.

    The message names the file, the line or column at fault, what was expected,
    what was found and how to fix it.
    """

    def __init__(self, message: str) -> None:
        # Messages end in an optional fix sentence, so drop the space left
        # when it is empty.
        super().__init__(message.rstrip())


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """One dataset as three tables.

    ``eq=False`` because a generated ``__eq__`` would compare DataFrames
    element-wise and raise.

    Attributes
    ----------
    name : str
        Dataset name, such as ``"ml-100k"``, or the file name of a user's file.
    interactions : pandas.DataFrame
        One row per rating, in file order: ``user_id`` int64, ``item_id`` int64,
        ``rating`` float32, ``timestamp`` int64 (Unix seconds).
    items : pandas.DataFrame
        One row per item in the catalogue, sorted by ``item_id``: ``item_id``
        int64, ``title`` str without the ``" (1995)"`` suffix, ``year`` Int64
        (``<NA>`` when the title has no year), ``genres`` str (``"|"``-joined
        genre names, ``""`` when there are none). It may list items that have no
        interaction. Those items get no index in the split, so no embedding row.
    users : pandas.DataFrame
        Demographics, one row per user, sorted by ``user_id``: ``user_id`` int64,
        ``age`` Int64, ``gender`` str, ``occupation`` str, ``zip_code`` str. Empty
        for sources without demographics (MovieLens 10M and later, user files).
    source : str
        Origin for logs and the UI: a folder, file or zip path, or a download URL.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    source: str

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, interactions={len(self.interactions)}, "
            f"items={len(self.items)}, users={len(self.users)}, "
            f"source={self.source!r})"
        )


def empty_users() -> pd.DataFrame:
    """Return a users table with the `Dataset` columns and dtypes and no rows."""
    return pd.DataFrame(
        {
            "user_id": np.array([], dtype="int64"),
            "age": pd.array([], dtype="Int64"),
            "gender": pd.array([], dtype=str),
            "occupation": pd.array([], dtype=str),
            "zip_code": pd.array([], dtype=str),
        }
    )


def check_interaction_counts(interactions: pd.DataFrame, where: str) -> None:
    """Raise DataError unless ``interactions`` has at least two users and two items.

    A recommender ranks items across users, so one user or one item leaves
    nothing to learn. ``where`` names the file or dataset in the message.
    """
    if interactions.empty:
        raise DataError(f"{where} contains no interactions.")

    for column, kind in (("user_id", "user"), ("item_id", "item")):
        values = interactions[column]
        # min and max are much faster than unique() on millions of rows.
        if values.min() == values.max():
            raise DataError(
                f"{where}: every interaction belongs to {kind} {values.iloc[0]}. "
                f"Expected interactions of at least 2 {kind}s, found 1. Check that "
                f"the {kind} column is the right one, or add the other interactions."
            )
