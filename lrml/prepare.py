"""Implicit feedback from ratings: a rating threshold, k-core filtering and statistics.

LRML learns from implicit feedback. By default every rating counts as a
positive, whatever its value, which is how this project trains LRML. A
threshold keeps only ratings at or above it, and a k-core keeps only users and
items with at least k interactions each.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pandas as pd

from lrml.dataset import DataError

logger = logging.getLogger(__name__)

MAX_K_CORE = 10_000


@dataclasses.dataclass(frozen=True)
class InteractionStats:
    """Size and shape of an interaction table.

    Attributes
    ----------
    users, items, interactions : int
        Distinct users, distinct items and rows.
    density : float
        Distinct (user, item) pairs over ``users * items``, or 0 when empty.
    user_counts, item_counts : numpy.ndarray of int64, shape (users,), (items,)
        Distinct items per user and distinct users per item.
    rating_counts : pandas.Series
        Rows per rating value, indexed by the sorted rating values.
    """

    users: int
    items: int
    interactions: int
    density: float
    user_counts: np.ndarray
    item_counts: np.ndarray
    rating_counts: pd.Series


def prepare_interactions(
    interactions: pd.DataFrame,
    min_rating: float | None = None,
    k_core: int | None = None,
) -> pd.DataFrame:
    """Keep the interactions that count as implicit positives.

    Parameters
    ----------
    interactions : pandas.DataFrame
        Columns ``user_id``, ``item_id``, ``rating`` and ``timestamp``.
    min_rating : float, optional
        Keep only ratings at or above this value. None keeps every rating.
    k_core : int, optional
        Then repeatedly drop users and items with fewer than ``k_core``
        distinct partners, until every remaining user has rated at least
        ``k_core`` remaining items and every remaining item has been rated by at
        least ``k_core`` remaining users. None (or 1) drops nothing.

    Returns
    -------
    pandas.DataFrame
        The kept rows, in their original order, with the original index.

    Raises
    ------
    ValueError
        If ``min_rating`` is not a finite number or ``k_core`` is not an integer
        from 1 to 10000.
    DataError
        If no interaction is left.
    """
    _check_options(min_rating, k_core)
    kept = interactions
    if min_rating is not None:
        kept = kept[kept["rating"].to_numpy() >= min_rating]
    if k_core is not None and k_core > 1:
        kept = k_core_filter(kept, k_core)

    if kept.empty:
        steps = []
        if min_rating is not None:
            steps.append(f"ratings >= {min_rating:g}")
        if k_core is not None and k_core > 1:
            steps.append(f"the {k_core}-core")
        raise DataError(
            f"No interactions are left after keeping {' and '.join(steps)}, out of "
            f"{len(interactions)}. Lower min_rating or k_core."
        )
    logger.info(
        "Kept %d of %d interactions (min_rating=%s, k_core=%s)",
        len(kept),
        len(interactions),
        min_rating,
        k_core,
    )
    return kept


def _check_options(min_rating: float | None, k_core: int | None) -> None:
    if min_rating is not None:
        valid = isinstance(min_rating, (int, float, np.integer, np.floating))
        if isinstance(min_rating, bool) or not valid or not math.isfinite(min_rating):
            raise ValueError(
                f"min_rating must be a finite number or None; got {min_rating!r}"
            )
    if k_core is not None:
        valid = isinstance(k_core, (int, np.integer)) and not isinstance(k_core, bool)
        if not valid or not 1 <= k_core <= MAX_K_CORE:
            raise ValueError(
                f"k_core must be an integer from 1 to {MAX_K_CORE} or None; "
                f"got {k_core!r}"
            )


def k_core_filter(interactions: pd.DataFrame, k: int) -> pd.DataFrame:
    """Return the rows of the ``k``-core of the user-item graph.

    Degrees count distinct partners, so a repeated (user, item) pair counts once.
    """
    users, user_ids = pd.factorize(interactions["user_id"])
    items, item_ids = pd.factorize(interactions["item_id"])
    pairs = np.unique(users.astype(np.int64) * len(item_ids) + items)
    pair_users = pairs // len(item_ids)
    pair_items = pairs % len(item_ids)

    alive = np.ones(len(pairs), dtype=bool)
    while True:
        user_degree = np.bincount(pair_users[alive], minlength=len(user_ids))
        item_degree = np.bincount(pair_items[alive], minlength=len(item_ids))
        keep = alive & (user_degree[pair_users] >= k) & (item_degree[pair_items] >= k)
        if keep.sum() == alive.sum():
            break
        alive = keep

    user_kept = np.bincount(pair_users[alive], minlength=len(user_ids)) > 0
    item_kept = np.bincount(pair_items[alive], minlength=len(item_ids)) > 0
    return interactions[user_kept[users] & item_kept[items]]


def describe_interactions(interactions: pd.DataFrame) -> InteractionStats:
    """Return the counts, density and degree distributions of ``interactions``."""
    users, user_ids = pd.factorize(interactions["user_id"])
    items, item_ids = pd.factorize(interactions["item_id"])
    pairs = np.unique(users.astype(np.int64) * max(len(item_ids), 1) + items)
    pair_users = pairs // max(len(item_ids), 1)
    pair_items = pairs % max(len(item_ids), 1)
    cells = len(user_ids) * len(item_ids)
    return InteractionStats(
        users=len(user_ids),
        items=len(item_ids),
        interactions=len(interactions),
        density=len(pairs) / cells if cells else 0.0,
        user_counts=np.bincount(pair_users, minlength=len(user_ids)),
        item_counts=np.bincount(pair_items, minlength=len(item_ids)),
        rating_counts=interactions["rating"].value_counts().sort_index(),
    )


def degree_histogram(counts: np.ndarray) -> pd.DataFrame:
    """Bin interaction counts into powers of two: 1, 2, 3-4, 5-8, 9-16 and so on.

    Returns
    -------
    pandas.DataFrame
        One row per bin up to the largest count: ``low`` and ``high`` (inclusive
        bounds), ``label`` such as ``"5-8"`` and ``count`` (how many users or
        items fall in the bin).
    """
    counts = np.asarray(counts, dtype=np.int64)
    largest = int(counts.max()) if len(counts) else 1
    lows, highs = [1, 2], [1, 2]
    while highs[-1] < largest:
        lows.append(highs[-1] + 1)
        highs.append(highs[-1] * 2)
    lows, highs = np.array(lows), np.array(highs)
    if largest == 1:
        lows, highs = lows[:1], highs[:1]

    # Bin i contains the counts from lows[i] to highs[i], found by upper bound.
    positions = np.searchsorted(highs, counts[counts >= 1])
    return pd.DataFrame(
        {
            "low": lows,
            "high": highs,
            "label": [
                str(low) if low == high else f"{low}-{high}"
                for low, high in zip(lows, highs)
            ],
            "count": np.bincount(positions, minlength=len(lows)),
        }
    )
