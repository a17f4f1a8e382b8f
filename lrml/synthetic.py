"""Synthetic interaction tables with MovieLens-like shape, for scale benchmarks."""

from __future__ import annotations

import numpy as np
import pandas as pd


def powerlaw_interactions(
    n_users: int,
    n_items: int,
    n_interactions: int,
    seed: int = 0,
    item_exponent: float = 1.0,
    user_exponent: float = 0.6,
) -> pd.DataFrame:
    """Draw distinct (user, item) pairs with power-law item popularity and user activity.

    Item ``i`` (0-based) is drawn with probability proportional to
    ``(i + 1) ** -item_exponent`` and user ``u`` likewise with ``user_exponent``,
    so a few items and users take most interactions, as in MovieLens. Repeated
    pairs are dropped and replaced until ``n_interactions`` distinct pairs exist.

    Returns
    -------
    pd.DataFrame
        Columns user_id, item_id (1-based int64), rating (float32, 0.5 to 5.0)
        and timestamp (int64), ``n_interactions`` rows.

    Raises
    ------
    ValueError
        If ``n_interactions`` exceeds half of ``n_users * n_items``, where
        drawing distinct pairs this way becomes slow.
    """
    if n_interactions > n_users * n_items // 2:
        raise ValueError(
            f"n_interactions={n_interactions} is more than half of the "
            f"{n_users} x {n_items} possible pairs; use fewer interactions"
        )
    rng = np.random.default_rng(seed)
    item_weights = np.arange(1, n_items + 1, dtype=np.float64) ** -item_exponent
    user_weights = np.arange(1, n_users + 1, dtype=np.float64) ** -user_exponent
    item_weights /= item_weights.sum()
    user_weights /= user_weights.sum()

    keys = np.empty(0, dtype=np.int64)
    while len(keys) < n_interactions:
        missing = n_interactions - len(keys)
        draw = int(missing * 1.1) + 1000
        users = rng.choice(n_users, size=draw, p=user_weights)
        items = rng.choice(n_items, size=draw, p=item_weights)
        keys = np.unique(np.concatenate([keys, users * n_items + items]))
    keys = rng.permutation(keys)[:n_interactions]

    return pd.DataFrame(
        {
            "user_id": keys // n_items + 1,
            "item_id": keys % n_items + 1,
            "rating": (rng.integers(1, 11, size=n_interactions) / 2).astype(np.float32),
            "timestamp": rng.integers(
                9 * 10**8, 15 * 10**8, size=n_interactions, dtype=np.int64
            ),
        }
    )
