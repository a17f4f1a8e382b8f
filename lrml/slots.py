"""Slot statistics: what each memory slot attends to across the training pairs.

For every slot, the training pairs with the largest attention weight on it
(the top ``top_fraction`` of all pairs) form the slot's pair set. The set is
described by the genres over-represented in it, the movies and users that put
the most weight on the slot, and the mean explicit rating of its pairs.

LRML trains on implicit feedback and never sees a rating. A slot whose pairs
rate clearly above or below the overall mean has therefore learned something
about the rating on its own, and a slot whose pairs rate like all pairs has not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from lrml.attention import pair_weights
from lrml.inference import LoadedRun
from lrml.runs import WEIGHT_NAMES

logger = logging.getLogger(__name__)

CACHE_FOLDER = "slot-stats"
# Part of the cache key: bump it when the tables' columns or meaning change.
CACHE_VERSION = 1
# Cached results kept per run: those of the latest weights and settings.
CACHE_KEEP = 8
TABLES = ("slots", "genres", "movies", "users")
# The scalar fields of SlotStats and their types, kept in slots.parquet's metadata.
SCALARS = {
    "overall_mean_rating": float,
    "n_pairs": int,
    "mean_max_weight": float,
    "top_fraction": float,
    "min_pairs": int,
}
NAME_GENRES = 2
SUMMARY_GENRES = 3
NO_GENRE_NAME = "mixed genres"


@dataclasses.dataclass(frozen=True, eq=False)
class SlotStats:
    """What each memory slot attends to, as described in the module docstring.

    ``eq=False`` because a generated ``__eq__`` would compare DataFrames
    element-wise and raise.

    Attributes
    ----------
    slots : pd.DataFrame
        One row per slot, with the columns

        - slot, and name: its top over-represented genres;
        - top_genres: up to three genres with their lift, as text;
        - mean_weight: the slot's mean attention over all pairs;
        - dominant_pairs: pairs whose largest weight is on this slot;
        - pairs: the size of the slot's pair set;
        - mean_rating and rating_stderr: the set's mean rating and its
          standard error;
        - rating_difference: mean_rating minus the overall mean;
        - weighted_mean_rating: the mean rating of all pairs, weighted by
          the slot's attention;
        - rating_correlation: Pearson r between the slot's weight and the
          rating over all pairs, NaN when either is constant.
    genres : pd.DataFrame
        One row per (slot, genre), by slot then lift, highest first: slot,
        genre, pairs (in the slot's set with that genre), share (of the set),
        base_rate (share among all training pairs) and lift (share divided by
        base_rate).
    movies, users : pd.DataFrame
        Up to ``top_n`` rows per slot, ranked by mean_weight, the mean
        attention on the slot over the movie's (user's) training pairs. Only
        movies (users) with at least ``min_pairs`` training pairs qualify.
        Columns slot, rank, item_index (user_index), pairs, mean_weight, then
        the metadata that `slot_statistics` adds: item_id, title, year,
        genres for movies, user_id, age, gender, occupation for users.
    overall_mean_rating : float
        Mean rating of all training pairs.
    n_pairs : int
        Number of training pairs.
    mean_max_weight : float
        Mean over the pairs of their largest slot weight: ``1 / memory_size``
        when the attention is uniform, 1 when each pair uses a single slot.
    top_fraction, min_pairs : float, int
        The settings the statistics were computed with.
    """

    slots: pd.DataFrame
    genres: pd.DataFrame
    movies: pd.DataFrame
    users: pd.DataFrame
    overall_mean_rating: float
    n_pairs: int
    mean_max_weight: float
    top_fraction: float
    min_pairs: int

    def label(self, slot: int) -> str:
        """Return the slot's display label, such as ``slot 3: Horror · Thriller``."""
        return f"slot {slot}: {self.slots['name'].iloc[slot]}"


def compute_slot_statistics(
    weights: np.ndarray,
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    genre_matrix: np.ndarray,
    genre_names: Sequence[str],
    top_fraction: float = 0.05,
    min_pairs: int = 10,
    top_n: int = 10,
) -> SlotStats:
    """Describe every slot from the attention weights of a set of pairs.

    Parameters
    ----------
    weights : np.ndarray, shape (n_pairs, memory_size)
        Attention of each pair. Rows sum to 1.
    users, items : np.ndarray of int, shape (n_pairs,)
        Row indices of each pair's user and item.
    ratings : np.ndarray, shape (n_pairs,)
        Explicit rating of each pair.
    genre_matrix : np.ndarray of bool, shape (n_items, n_genres)
        Whether item i has genre g.
    genre_names : sequence of str, length n_genres
    top_fraction : float
        Share of the pairs, in (0, 1], that forms each slot's pair set.
    min_pairs : int
        Minimum pairs for a genre to name a slot and for a movie or user to
        be ranked.
    top_n : int
        Movies and users listed per slot.

    Returns
    -------
    SlotStats
        Without the id and metadata columns of `slot_statistics`.

    Raises
    ------
    ValueError
        If a setting is out of range or the arrays disagree in shape.
    """
    _check_settings(top_fraction, min_pairs, top_n)
    weights = np.asarray(weights, dtype=np.float64)
    ratings = np.asarray(ratings, dtype=np.float64)
    n_pairs, memory_size = weights.shape
    if not len(users) == len(items) == len(ratings) == n_pairs or n_pairs == 0:
        raise ValueError(
            "weights, users, items and ratings must describe the same non-empty "
            f"set of pairs; got {n_pairs} weight rows, {len(users)} users, "
            f"{len(items)} items and {len(ratings)} ratings"
        )
    if genre_matrix.shape[1] != len(genre_names):
        raise ValueError(
            f"genre_matrix has {genre_matrix.shape[1]} columns but "
            f"{len(genre_names)} genre names were given"
        )

    set_size = max(1, round(top_fraction * n_pairs))
    # Column j contains the pair indices of slot j's pair set, in no order.
    top_pairs = np.argpartition(-weights, set_size - 1, axis=0)[:set_size]
    top_ratings = ratings[top_pairs]  # (set_size, memory_size)
    overall = float(ratings.mean())
    total_weight = np.maximum(weights.sum(axis=0), np.finfo(float).tiny)
    weighted_ratings = (weights * ratings[:, None]).sum(axis=0) / total_weight

    genres = _genre_table(top_pairs, np.asarray(genre_matrix)[items], genre_names)
    slots = pd.DataFrame(
        {
            "slot": np.arange(memory_size),
            "mean_weight": weights.mean(axis=0),
            "dominant_pairs": np.bincount(
                weights.argmax(axis=1), minlength=memory_size
            ),
            "pairs": set_size,
            "mean_rating": top_ratings.mean(axis=0),
            "rating_stderr": _standard_error(top_ratings),
            "rating_difference": top_ratings.mean(axis=0) - overall,
            "weighted_mean_rating": weighted_ratings,
            "rating_correlation": _column_correlations(weights, ratings),
        }
    )
    names, summaries = _slot_names(genres, memory_size, min_pairs)
    slots.insert(1, "name", names)
    slots.insert(2, "top_genres", summaries)

    return SlotStats(
        slots=slots,
        genres=genres,
        movies=_top_members(weights, items, "item_index", min_pairs, top_n),
        users=_top_members(weights, users, "user_index", min_pairs, top_n),
        overall_mean_rating=overall,
        n_pairs=n_pairs,
        mean_max_weight=float(weights.max(axis=1).mean()),
        top_fraction=top_fraction,
        min_pairs=min_pairs,
    )


def slot_statistics(
    loaded: LoadedRun,
    top_fraction: float = 0.05,
    min_pairs: int = 10,
    top_n: int = 10,
) -> SlotStats:
    """Describe every slot of a run from the attention of its training pairs.

    See `compute_slot_statistics` for the settings. Movies and users come
    with their ids and metadata.
    """
    _check_settings(top_fraction, min_pairs, top_n)
    started = time.perf_counter()
    split = loaded.split
    weights = pair_weights(loaded.model, split.train_users, split.train_items)
    stats = compute_slot_statistics(
        weights,
        split.train_users,
        split.train_items,
        split.train_ratings,
        loaded.genre_matrix,
        loaded.genres,
        top_fraction=top_fraction,
        min_pairs=min_pairs,
        top_n=top_n,
    )

    item_meta = loaded.items[["item_id", "title", "year", "genres"]]
    movies = stats.movies.join(item_meta, on="item_index")
    user_meta = loaded.users[loaded.users["user_index"] >= 0].set_index("user_index")
    users = stats.users.join(
        user_meta[["user_id", "age", "gender", "occupation"]], on="user_index"
    )
    logger.info(
        "slot statistics of run %s: %d pairs, %d slots in %.2f s",
        loaded.run.name,
        stats.n_pairs,
        len(stats.slots),
        time.perf_counter() - started,
    )
    return dataclasses.replace(stats, movies=movies, users=users)


def cached_slot_statistics(
    loaded: LoadedRun,
    cache_dir: Path | None = None,
    top_fraction: float = 0.05,
    min_pairs: int = 10,
    top_n: int = 10,
) -> SlotStats:
    """Return `slot_statistics`, read from or written to parquet files.

    The files sit in ``cache_dir`` (by default ``slot-stats/`` in the run
    folder), in a subfolder named by a hash of the model's weights and the
    settings, so new weights or settings compute anew. Only the `CACHE_KEEP`
    newest subfolders are kept, since a training run saves new weights at
    every improving epoch. A cache that cannot be written, such as in a
    read-only run folder, is logged and skipped.
    """
    _check_settings(top_fraction, min_pairs, top_n)
    settings = {"top_fraction": top_fraction, "min_pairs": min_pairs, "top_n": top_n}
    cache_dir = Path(cache_dir) if cache_dir else loaded.run.path / CACHE_FOLDER
    folder = cache_dir / _cache_key(loaded, settings)
    if all((folder / f"{table}.parquet").is_file() for table in TABLES):
        try:
            return _read_stats(folder)
        except (OSError, ValueError, KeyError) as error:
            logger.warning(
                "ignoring unreadable slot statistics in %s: %s", folder, error
            )

    stats = slot_statistics(loaded, **settings)
    try:
        _write_stats(stats, folder)
        _remove_old_entries(cache_dir, CACHE_KEEP)
    except OSError as error:
        logger.warning("could not cache slot statistics in %s: %s", folder, error)
    return stats


def _check_settings(top_fraction: float, min_pairs: int, top_n: int) -> None:
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1]; got {top_fraction!r}")
    if isinstance(min_pairs, bool) or not isinstance(min_pairs, int) or min_pairs < 1:
        raise ValueError(
            f"min_pairs must be an integer of at least 1; got {min_pairs!r}"
        )
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise ValueError(f"top_n must be an integer of at least 1; got {top_n!r}")


def _genre_table(
    top_pairs: np.ndarray, pair_genres: np.ndarray, genre_names: Sequence[str]
) -> pd.DataFrame:
    """Return the slot-by-genre lift table; see `SlotStats.genres`."""
    set_size, memory_size = top_pairs.shape
    counts = pair_genres[top_pairs].sum(axis=0)  # (memory_size, n_genres)
    base_rate = pair_genres.mean(axis=0)  # (n_genres,)
    share = counts / set_size
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = np.where(base_rate > 0, share / base_rate, np.nan)
    frame = pd.DataFrame(
        {
            "slot": np.repeat(np.arange(memory_size), len(genre_names)),
            "genre": np.tile(np.asarray(genre_names, dtype=object), memory_size),
            "pairs": counts.ravel().astype(np.int64),
            "share": share.ravel(),
            "base_rate": np.tile(base_rate, memory_size),
            "lift": lift.ravel(),
        }
    )
    frame = frame.sort_values(["slot", "lift"], ascending=[True, False])
    return frame.reset_index(drop=True)


def _slot_names(
    genres: pd.DataFrame, memory_size: int, min_pairs: int
) -> tuple[list[str], list[str]]:
    """Name each slot by its over-represented genres (lift above 1)."""
    eligible = genres[(genres["lift"] > 1.0) & (genres["pairs"] >= min_pairs)]
    names, summaries = [], []
    for slot in range(memory_size):
        rows = eligible[eligible["slot"] == slot]
        top = rows.head(NAME_GENRES)["genre"].tolist()
        names.append(" · ".join(top) if top else NO_GENRE_NAME)

        shown = rows.head(SUMMARY_GENRES)
        lifts = [f"{genre} ×{lift:.2f}" for genre, lift in zip(shown.genre, shown.lift)]
        summaries.append(", ".join(lifts))
    return names, summaries


def _standard_error(values: np.ndarray) -> np.ndarray:
    """Return the standard error of each column's mean; NaN for one row."""
    if len(values) < 2:
        return np.full(values.shape[1], np.nan)
    return values.std(axis=0, ddof=1) / np.sqrt(len(values))


def _column_correlations(weights: np.ndarray, ratings: np.ndarray) -> np.ndarray:
    """Return Pearson r between each column of ``weights`` and ``ratings``."""
    centred_weights = weights - weights.mean(axis=0)  # (n_pairs, memory_size)
    centred_ratings = ratings - ratings.mean()  # (n_pairs,)
    covariance = centred_ratings @ centred_weights  # (memory_size,)
    scale = np.sqrt((centred_weights**2).sum(axis=0) * (centred_ratings**2).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, covariance / scale, np.nan)


def _top_members(
    weights: np.ndarray, members: np.ndarray, column: str, min_pairs: int, top_n: int
) -> pd.DataFrame:
    """Rank the movies or users of the pairs by their mean weight on each slot."""
    members = np.asarray(members, dtype=np.int64)
    n_members = int(members.max()) + 1
    n_pairs, memory_size = weights.shape
    # A (members, pairs) indicator matrix sums each member's weights in one product.
    indicator = sp.csr_matrix(
        (np.ones(n_pairs), (members, np.arange(n_pairs))), shape=(n_members, n_pairs)
    )
    counts = np.bincount(members, minlength=n_members)
    sums = np.asarray(indicator @ weights)  # (n_members, memory_size)
    eligible = np.flatnonzero(counts >= min_pairs)

    rows = []
    for slot in range(memory_size):
        means = sums[eligible, slot] / counts[eligible]
        order = np.argsort(-means, kind="stable")[:top_n]
        for rank, position in enumerate(order, start=1):
            member = eligible[position]
            rows.append((slot, rank, member, counts[member], means[position]))
    return pd.DataFrame(
        rows, columns=["slot", "rank", column, "pairs", "mean_weight"]
    ).astype({"slot": np.int64, "rank": np.int64, column: np.int64, "pairs": np.int64})


def _cache_key(loaded: LoadedRun, settings: dict) -> str:
    """Hash the loaded weights, the settings and the number of training pairs.

    The tensors in memory are hashed rather than the weights file, because a
    training run may replace the file after the model was loaded.
    """
    digest = hashlib.sha256()
    with torch.inference_mode():
        for name in WEIGHT_NAMES:
            digest.update(getattr(loaded.model, name).numpy().tobytes())
    payload = {
        "version": CACHE_VERSION,
        "settings": settings,
        "n_pairs": len(loaded.split.train_users),
    }
    digest.update(json.dumps(payload, sort_keys=True).encode())
    return digest.hexdigest()[:20]


def _write_stats(stats: SlotStats, folder: Path) -> None:
    """Write the four tables into ``folder`` through a temporary folder and a rename."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        slots = stats.slots.copy()
        slots.attrs = {name: getattr(stats, name) for name in SCALARS}
        slots.to_parquet(staging / "slots.parquet", index=False)
        for table in TABLES[1:]:
            getattr(stats, table).to_parquet(staging / f"{table}.parquet", index=False)
        try:
            staging.rename(folder)
        except OSError:
            # Another process wrote the same statistics first; keep its files.
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_old_entries(cache_dir: Path, keep: int) -> None:
    """Delete all but the ``keep`` most recently written subfolders of the cache."""
    entries = [path for path in cache_dir.iterdir() if path.is_dir()]
    entries.sort(key=lambda path: path.stat().st_mtime_ns, reverse=True)
    for path in entries[keep:]:
        if not path.name.startswith("."):
            shutil.rmtree(path, ignore_errors=True)


def _read_stats(folder: Path) -> SlotStats:
    tables = {table: pd.read_parquet(folder / f"{table}.parquet") for table in TABLES}
    attrs = tables["slots"].attrs
    tables["slots"].attrs = {}
    return SlotStats(
        **tables, **{name: kind(attrs[name]) for name, kind in SCALARS.items()}
    )
