"""Projections of a run's vectors to 2-D or 3-D, with UMAP or PCA, cached on disk.

`project` maps an (n, d) array to (n, 2) or (n, 3) and copes with small and
degenerate inputs. `cached_projection` stores its result as parquet. The
vector extraction functions return what LRML scores with: clipped users ``p``
and items ``q``, relation vectors ``r = a M`` and translated users ``p + r``.

umap-learn is imported only inside `project`, because importing it takes
seconds and its first fit in a process compiles numba code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import pairwise_distances
from sklearn.neighbors import NearestNeighbors

from lrml.inference import LoadedRun
from lrml.model import LRML
from lrml.split import Split

logger = logging.getLogger(__name__)

METHODS = ("umap", "pca")
METRICS = ("euclidean", "cosine", "manhattan")
AXES = ("x", "y", "z")

# UMAP needs at least two neighbours per point, and its spectral initialisation
# needs more points than n_components + 2; below this PCA is used instead.
UMAP_MIN_POINTS = 5
# Below this size UMAP starts from a random layout: the spectral one can fail
# on a tiny, disconnected neighbour graph.
SPECTRAL_MIN_POINTS = 16
# From this size UMAP starts from PCA coordinates. On 20,000 relation vectors
# of a trained MovieLens-100K run, the spectral layout's eigensolver took 3/4
# of a 31 CPU-second fit, and the whole fit took 7 with PCA.
PCA_INIT_MIN_POINTS = 10_000
# Bump when the file format or the meaning of a setting changes, so that older
# cache files are not read.
CACHE_VERSION = 2
_METADATA_KEY = b"lrml_projection"


@dataclass(frozen=True)
class ProjectionSettings:
    """Settings of one projection, each checked on creation.

    Raises
    ------
    ValueError
        If a field is outside its range, naming the field, range and value.
    """

    method: str = "umap"
    n_components: int = 2
    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "euclidean"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(
                f"method must be one of {', '.join(METHODS)}; got {self.method!r}"
            )
        if self.metric not in METRICS:
            raise ValueError(
                f"metric must be one of {', '.join(METRICS)}; got {self.metric!r}"
            )
        _check_int("n_components", self.n_components, 2, 3)
        _check_int("n_neighbors", self.n_neighbors, 2, 200)
        _check_int("seed", self.seed, 0, 2**31 - 1)
        if not isinstance(self.min_dist, (int, float)) or not (
            0.0 <= self.min_dist < 1.0
        ):
            raise ValueError(f"min_dist must be in [0, 1); got {self.min_dist!r}")


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or not low <= value <= high
    ):
        raise ValueError(
            f"{name} must be an integer from {low} to {high}; got {value!r}"
        )


@dataclass(frozen=True)
class Projection:
    """Projected coordinates and how they were obtained.

    Attributes
    ----------
    coords : np.ndarray of float32, shape (n, n_components)
    method : str
        The method that produced ``coords``: "pca" also when UMAP was requested
        but the input was too small for it.
    used : dict
        The values used, after any adjustment (for example ``n_neighbors``
        lowered to ``n - 1``), for display beside the plot.
    notes : tuple of str
        One sentence per adjustment or warning, for display beside the plot.
    """

    coords: np.ndarray
    method: str
    used: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()


# Projection --------------------------------------------------------------------


def nonfinite_rows(vectors: np.ndarray) -> np.ndarray:
    """Return the indices of rows that hold a NaN or an infinite value."""
    return np.flatnonzero(~np.isfinite(np.asarray(vectors, dtype=np.float64)).all(1))


def project(vectors: np.ndarray, method: str = "umap", **settings: Any) -> Projection:
    """Project ``vectors`` (n, d) to (n, n_components).

    ``settings`` are the other fields of `ProjectionSettings`. Small and
    degenerate inputs get valid coordinates and a note instead of an error. No
    point gives an empty array, identical vectors all map to the origin,
    ``n_neighbors`` is lowered to ``n - 1``, and fewer than `UMAP_MIN_POINTS`
    distinct vectors are projected with PCA.

    Raises
    ------
    ValueError
        If a setting is invalid, ``vectors`` is not 2-D, or a row holds NaN or
        an infinite value (the message counts them and names the first rows;
        drop them with `nonfinite_rows` first).
    """
    config = ProjectionSettings(method=method, **settings)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array; got shape {vectors.shape}")
    bad = nonfinite_rows(vectors)
    if len(bad):
        raise ValueError(
            f"{len(bad)} of {len(vectors)} vectors hold NaN or infinite values "
            f"(rows {', '.join(map(str, bad[:10]))}); drop them before projecting"
        )

    n, c = len(vectors), config.n_components
    if n == 0:
        return Projection(np.zeros((0, c), np.float32), config.method, {}, ())
    distinct = len(np.unique(vectors, axis=0))
    if distinct == 1:
        note = (
            "A single vector is drawn at the origin."
            if n == 1
            else f"All {n} vectors are identical, so every point is at the origin."
        )
        return Projection(np.zeros((n, c), np.float32), config.method, {}, (note,))
    if config.method == "pca":
        return _pca(vectors, c)
    if distinct < UMAP_MIN_POINTS:
        pca = _pca(vectors, c)
        note = (
            f"UMAP needs at least {UMAP_MIN_POINTS} distinct vectors and got "
            f"{distinct}, so PCA is shown."
        )
        return Projection(pca.coords, "pca", pca.used, (note, *pca.notes))
    return _umap(vectors, config)


def _pca(vectors: np.ndarray, n_components: int) -> Projection:
    n, d = vectors.shape
    fitted = min(n_components, n, d)
    # The "full" solver is deterministic, so a refit reproduces cached coordinates.
    pca = PCA(n_components=fitted, svd_solver="full").fit(vectors)
    coords = np.zeros((n, n_components), dtype=np.float32)
    coords[:, :fitted] = pca.transform(vectors)
    explained = [round(float(v), 4) for v in pca.explained_variance_ratio_]
    return Projection(
        coords, "pca", {"n_components": n_components, "explained_variance": explained}
    )


def _umap(vectors: np.ndarray, config: ProjectionSettings) -> Projection:
    import umap

    enable_umap_disk_cache()
    n = len(vectors)
    notes = []
    n_neighbors = min(config.n_neighbors, n - 1)
    if n_neighbors < config.n_neighbors:
        notes.append(
            f"n_neighbors lowered from {config.n_neighbors} to {n_neighbors}: "
            f"there are only {n} points."
        )
    if n >= PCA_INIT_MIN_POINTS:
        init = "pca"
    elif n >= SPECTRAL_MIN_POINTS:
        init = "spectral"
    else:
        init = "random"
    # umap-learn's own default, made explicit so that it can be shown.
    n_epochs = 500 if n <= 10_000 else 200
    indices, distances = nearest_neighbors(vectors, n_neighbors, config.metric)
    reducer = umap.UMAP(
        n_components=config.n_components,
        n_neighbors=n_neighbors,
        min_dist=config.min_dist,
        metric=config.metric,
        random_state=config.seed,
        n_jobs=1,
        init=init,
        n_epochs=n_epochs,
        # Exact neighbours from scikit-learn's BLAS distances. Without them
        # umap-learn 0.5.12 computes all pairwise distances of fewer than 4,096
        # points through a Python callback: a fit of 2,625 points took 8.5 CPU
        # seconds that way and 2.7 with these (bench/bench_projection.py).
        precomputed_knn=(indices, distances, None),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        coords = reducer.fit_transform(vectors).astype(np.float32)
    for warning in caught:
        text = str(warning.message)
        # Expected: transform() on new points is not needed here.
        if "knn_search_index" not in text:
            notes.append(f"umap-learn warned: {text}")
    used = {
        "n_components": config.n_components,
        "n_neighbors": n_neighbors,
        "min_dist": config.min_dist,
        "metric": config.metric,
        "seed": config.seed,
        "init": init,
        "n_epochs": n_epochs,
    }
    return Projection(coords, "umap", used, tuple(notes))


_umap_cache_lock = threading.Lock()
_umap_cache_enabled = False


def enable_umap_disk_cache() -> None:
    """Turn on numba's on-disk cache for umap-learn's compiled functions.

    umap-learn 0.5 compiles about 100 numba functions without ``cache=True``,
    so every new process spends 10 to 20 s compiling on its first fit. This
    calls each dispatcher's ``enable_caching()``, the same thing ``cache=True``
    does, so later processes load machine code from disk. Numba stores it in
    $NUMBA_CACHE_DIR if set, else in ``__pycache__`` beside umap's sources if
    that is writable, else in the user's cache folder.

    NOTE: numba invalidates a cache entry when its own source file changes, not
    when a jitted function it calls changes in another file. A umap-learn
    upgrade changes both, but a hand-edited umap install could load stale code.
    """
    global _umap_cache_enabled
    with _umap_cache_lock:
        if _umap_cache_enabled:
            return
        import umap.distances
        import umap.layouts
        import umap.sparse
        import umap.spectral
        import umap.umap_
        import umap.utils
        from numba.core.dispatcher import Dispatcher

        count = 0
        modules = (umap.umap_, umap.layouts, umap.distances, umap.utils)
        for module in (*modules, umap.spectral, umap.sparse):
            for value in vars(module).values():
                if isinstance(value, Dispatcher):
                    value.enable_caching()
                    count += 1
        _umap_cache_enabled = True
        logger.info("enabled numba's disk cache for %d umap-learn functions", count)


def nearest_neighbors(
    vectors: np.ndarray, k: int, metric: str = "euclidean"
) -> tuple[np.ndarray, np.ndarray]:
    """Return the exact ``k`` nearest rows of every row, itself included.

    Returns
    -------
    (indices, distances)
        int32 and float32 arrays of shape (n, k), nearest first.
    """
    search = NearestNeighbors(n_neighbors=k, metric=metric, algorithm="brute")
    distances, indices = search.fit(vectors).kneighbors(vectors)
    return indices.astype(np.int32), distances.astype(np.float32)


def neighbors_of(
    vectors: np.ndarray, query: np.ndarray, k: int, metric: str = "euclidean"
) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``k`` rows of ``vectors`` nearest to one ``query`` vector (d,).

    Returns
    -------
    (indices, distances)
        Arrays of shape (min(k, n),), nearest first; ties keep row order.
    """
    distances = pairwise_distances(query[None, :], vectors, metric=metric)[0]  # (n,)
    order = np.argsort(distances, kind="stable")[:k]
    return order, distances[order]


def place_points(
    vectors: np.ndarray,
    coords: np.ndarray,
    new_vectors: np.ndarray,
    method: str,
    n_neighbors: int = 15,
    metric: str = "euclidean",
) -> np.ndarray:
    """Return map coordinates for vectors that were not part of the projection.

    PCA places them exactly, with the same fit. UMAP has no exact out-of-sample map, so a
    new vector goes to the inverse-distance weighted mean of the map positions
    of its ``n_neighbors`` nearest projected vectors; a vector equal to a
    projected one lands on it.

    Returns
    -------
    np.ndarray of float32, shape (len(new_vectors), coords.shape[1])
    """
    new_vectors = np.asarray(new_vectors, dtype=np.float32)
    n, c = coords.shape
    if len(new_vectors) == 0 or n == 0:
        return np.zeros((len(new_vectors), c), dtype=np.float32)
    if method == "pca":
        if len(np.unique(vectors, axis=0)) == 1:
            return np.zeros((len(new_vectors), c), dtype=np.float32)
        fitted = min(c, n, vectors.shape[1])
        pca = PCA(n_components=fitted, svd_solver="full").fit(vectors)
        placed = np.zeros((len(new_vectors), c), dtype=np.float32)
        placed[:, :fitted] = pca.transform(new_vectors)
        return placed

    k = min(n_neighbors, n)
    distances = pairwise_distances(new_vectors, vectors, metric=metric)  # (m, n)
    nearest = np.argsort(distances, axis=1, kind="stable")[:, :k]  # (m, k)
    near = np.take_along_axis(distances, nearest, axis=1)  # (m, k)
    weights = 1.0 / np.maximum(near, 1e-12)
    exact = near[:, :1] <= 1e-12  # (m, 1)
    weights = np.where(exact, np.eye(1, k), weights)  # only the exact match counts
    weights /= weights.sum(axis=1, keepdims=True)
    return np.einsum("mk,mkc->mc", weights, coords[nearest]).astype(np.float32)


# Disk cache --------------------------------------------------------------------


def cache_path(cache_dir: Path, key: dict, settings: ProjectionSettings) -> Path:
    """Return the parquet file for ``key`` (what the vectors are) and ``settings``."""
    payload = json.dumps(
        {"version": CACHE_VERSION, "key": key, "settings": asdict(settings)},
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(payload.encode()).hexdigest()[:20]
    return (
        Path(cache_dir) / f"{settings.method}-{settings.n_components}d-{digest}.parquet"
    )


def read_cached_projection(path: Path, n_points: int) -> Projection | None:
    """Return the projection stored at ``path``, or None if it is missing or stale.

    A file with another number of rows than ``n_points``, or one that cannot be
    read, counts as missing; it is logged and will be replaced.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        table = pq.read_table(path)
        info = json.loads(table.schema.metadata[_METADATA_KEY])
    except (OSError, KeyError, TypeError, ValueError, pa.ArrowException) as error:
        logger.warning("ignoring the unreadable projection cache %s: %s", path, error)
        return None
    if table.num_rows != n_points:
        logger.warning(
            "ignoring %s: it has %d rows, expected %d", path, table.num_rows, n_points
        )
        return None
    columns = [name for name in AXES if name in table.column_names]
    coords = np.column_stack([table[name].to_numpy() for name in columns])
    return Projection(
        coords.astype(np.float32).reshape(n_points, len(columns)),
        info["method"],
        info["used"],
        tuple(info["notes"]),
    )


def write_cached_projection(path: Path, projection: Projection) -> None:
    """Write ``projection`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    coords = projection.coords
    table = pa.table({AXES[i]: coords[:, i] for i in range(coords.shape[1])})
    info = {
        "method": projection.method,
        "used": projection.used,
        "notes": list(projection.notes),
    }
    table = table.replace_schema_metadata({_METADATA_KEY: json.dumps(info)})
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def cached_projection(
    cache_dir: Path, key: dict, vectors: np.ndarray, **settings: Any
) -> Projection:
    """Return `project` of ``vectors``, read from or written to ``cache_dir``.

    ``key`` describes the vectors (for example the weights file's epoch and
    modification time and the sample drawn); the file name hashes it with every
    setting, so a change to either computes anew.
    """
    config = ProjectionSettings(**settings)
    path = cache_path(cache_dir, key, config)
    cached = read_cached_projection(path, len(vectors))
    if cached is not None:
        return cached
    projection = project(vectors, **asdict(config))
    write_cached_projection(path, projection)
    logger.info(
        "cached a %s projection of %d points in %s", config.method, len(vectors), path
    )
    return projection


class ProjectionJobs:
    """Background computation of projections, one at a time, keyed by cache file.

    A web page submits a slow UMAP fit here and keeps drawing. The job writes
    its cache file, and the page reads that file on a later rerun.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="umap")
        self._futures: dict[Path, Future] = {}
        self._lock = threading.Lock()

    def submit(self, path: Path, compute: Callable[[], Projection]) -> Future:
        """Start ``compute`` for ``path`` unless a job for it is queued or running."""
        with self._lock:
            future = self._futures.get(path)
            if future is None or future.done():
                future = self._executor.submit(compute)
                self._futures[path] = future
            return future

    def get(self, path: Path) -> Future | None:
        """Return the latest job for ``path``, finished or not, or None."""
        with self._lock:
            return self._futures.get(path)

    def forget(self, path: Path) -> None:
        with self._lock:
            self._futures.pop(path, None)


# Vectors -----------------------------------------------------------------------


@dataclass(frozen=True)
class PairVectors:
    """LRML's vectors for a batch of (user, item) pairs, as numpy arrays.

    Attributes
    ----------
    users, items : np.ndarray of int64, shape (b,)
    p, q : np.ndarray, shape (b, d)
        Clipped user and item vectors.
    relation : np.ndarray, shape (b, d)
        ``r = a M``.
    translated : np.ndarray, shape (b, d)
        ``p + r``, the point whose distance to ``q`` is the pair's score.
    attention : np.ndarray, shape (b, memory_size)
    dominant_slot : np.ndarray of int64, shape (b,)
        The memory slot with the largest attention weight.
    """

    users: np.ndarray
    items: np.ndarray
    p: np.ndarray
    q: np.ndarray
    relation: np.ndarray
    translated: np.ndarray
    attention: np.ndarray
    dominant_slot: np.ndarray


def user_item_vectors(model: LRML) -> tuple[np.ndarray, np.ndarray]:
    """Return the clipped user (n_users, d) and item (n_items, d) vectors."""
    with torch.inference_mode():
        users = model.users(torch.arange(model.n_users)).numpy()  # (n_users, d)
        items = model.items(torch.arange(model.n_items)).numpy()  # (n_items, d)
    return users, items


def pair_vectors(model: LRML, users: np.ndarray, items: np.ndarray) -> PairVectors:
    """Compute ``p``, ``q``, ``r`` and ``p + r`` of each (user, item) index pair."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    with torch.inference_mode():
        p = model.users(torch.tensor(users))  # (b, d)
        q = model.items(torch.tensor(items))  # (b, d)
        attention = model.attention(p, q)  # (b, memory_size)
        relation = attention @ model.memories  # (b, d)
        translated = p + relation  # (b, d)
    return PairVectors(
        users=users,
        items=items,
        p=p.numpy(),
        q=q.numpy(),
        relation=relation.numpy(),
        translated=translated.numpy(),
        attention=attention.numpy(),
        dominant_slot=attention.argmax(dim=-1).numpy().astype(np.int64),
    )


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """Return ``size`` distinct row numbers below ``n``, sorted, or all if n <= size."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def sample_training_pairs(split: Split, size: int, seed: int) -> np.ndarray:
    """Return the positions of up to ``size`` training pairs drawn with ``seed``."""
    return sample_rows(len(split.train_users), size, seed)


def selected_rows(selection: Any) -> list[int]:
    """Return the point rows of a plot selection, in order and without repeats.

    ``selection`` is the ``selection`` entry of Streamlit's plotly chart state
    (``{"points": [{"customdata": ..., ...}], "point_indices": ..., ...}``).
    The row number is read from each point's ``customdata`` (a number, or a
    list whose first element is the number), because point indices count within
    one trace and differ between traces. Points without customdata, such as
    those of highlight traces, are skipped.
    """
    rows: list[int] = []
    for point in (selection or {}).get("points", []) or []:
        value = point.get("customdata") if isinstance(point, dict) else None
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if isinstance(value, bool) or value is None:
            continue
        try:
            row = int(value)
        except (TypeError, ValueError):
            continue
        if row >= 0 and row not in rows:
            rows.append(row)
    return rows


# Points ------------------------------------------------------------------------

KINDS = {
    "users_items": "Users and movies",
    "users": "Users",
    "items": "Movies",
    "relations": "Relation vectors r of training pairs",
    "translated": "Translated users p + r of training pairs, with the movies",
}
PAIR_KINDS = ("relations", "translated")
SHARE_PREFIX = "share "
# Columns that every points frame has, NaN where they do not apply.
POINT_COLUMNS = (
    "user_id", "item_id", "label", "hover", "genres", "main_genre", "year",
    "popularity", "activity", "age", "gender", "occupation", "rating", "slot",
)  # fmt: skip


@dataclass(frozen=True)
class Points:
    """The points of one projection: metadata rows and the vectors to project.

    Attributes
    ----------
    frame : pd.DataFrame
        One row per point. Columns: kind ("user", "movie", "relation" or
        "p + r"), user_index, item_index (-1 where not applicable), user_id,
        item_id, label, hover, genres, main_genre, year, popularity, activity,
        age, gender, occupation, rating, slot, and one ``"share <genre>"``
        column per genre. See `point_attributes` for what they mean per kind.
    vectors : np.ndarray of float32, shape (len(frame), d)
    key : dict
        What the points are (kind, sample size and seed, point count), for the
        projection cache key.
    """

    frame: pd.DataFrame
    vectors: np.ndarray
    key: dict


def point_attributes(loaded: LoadedRun) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return per-user and per-movie attributes, indexed by model row.

    Counts and means come from the training pairs only. For a movie:
    ``popularity`` (training ratings), ``rating`` (their mean), ``year``,
    ``genres``, ``main_genre`` (its least common genre, the most specific) and
    ``share <genre>`` (1 or 0). For a user: ``activity`` (training ratings),
    ``rating`` (mean rating given), ``year`` and ``popularity`` (means over the
    movies rated), demographics, ``share <genre>`` (fraction of the user's
    movies in that genre) and ``main_genre`` (the genre whose share most
    exceeds its share among all training ratings).
    """
    split = loaded.split
    items = loaded.items.reset_index(drop=True)
    genre_names = loaded.genres
    flags_array = loaded.genre_matrix.astype(np.float64)  # (n_items, n_genres)

    popularity = np.bincount(split.train_items, minlength=split.n_items).astype(float)
    activity = loaded.train_counts.astype(np.float64)
    item_rating = _mean_by(split.train_items, split.train_ratings, split.n_items)
    user_rating = _mean_by(split.train_users, split.train_ratings, split.n_users)

    rarity = np.where(flags_array > 0, flags_array.sum(0), np.inf)  # (n_items, G)
    item_frame = pd.DataFrame(
        {
            "item_id": items["item_id"].to_numpy(),
            "label": [
                _movie_label(t, y) for t, y in zip(items["title"], items["year"])
            ],
            "genres": items["genres"].fillna("").to_numpy(),
            "main_genre": np.where(
                flags_array.sum(1) > 0,
                _pick(genre_names, rarity.argmin(1) if genre_names else None),
                "(no genre)",
            ),
            "year": items["year"]
            .astype("Float64")
            .to_numpy(np.float64, na_value=np.nan),
            "popularity": popularity,
            "rating": item_rating,
        }
    )
    for index, genre in enumerate(genre_names):
        item_frame[SHARE_PREFIX + genre] = flags_array[:, index]

    train_flags = flags_array[split.train_items]  # (n_train, G)
    shares = np.zeros((split.n_users, len(genre_names)))  # (n_users, G)
    for g in range(len(genre_names)):
        shares[:, g] = _mean_by(split.train_users, train_flags[:, g], split.n_users)
    # The main genre is the one whose share most exceeds its share among all
    # training ratings: a plain maximum would be Drama for nearly everyone, and
    # a ratio would favour genres with a handful of movies.
    overall = train_flags.mean(0) if len(train_flags) else np.zeros(len(genre_names))
    excess = np.nan_to_num(shares - overall, nan=-np.inf)  # (n_users, G)
    people = loaded.dataset.users.set_index("user_id")
    user_ids = pd.Index(split.user_vocab.ids)
    people = people.reindex(user_ids)
    user_frame = pd.DataFrame(
        {
            "user_id": user_ids.to_numpy(),
            "label": [f"user {user_id}" for user_id in user_ids],
            "main_genre": np.where(
                activity > 0,
                _pick(genre_names, excess.argmax(1) if genre_names else None),
                None,
            ),
            "year": _mean_by(
                split.train_users,
                item_frame["year"].to_numpy()[split.train_items],
                split.n_users,
            ),
            "popularity": _mean_by(
                split.train_users, popularity[split.train_items], split.n_users
            ),
            "activity": activity,
            "rating": user_rating,
            "age": people["age"]
            .astype("Float64")
            .to_numpy(np.float64, na_value=np.nan),
            "gender": people["gender"].to_numpy(),
            "occupation": people["occupation"].to_numpy(),
        }
    )
    for index, genre in enumerate(genre_names):
        user_frame[SHARE_PREFIX + genre] = shares[:, index]
    return user_frame, item_frame


def _pick(names: list[str], positions: np.ndarray | None) -> np.ndarray | None:
    """Return ``names[positions]`` as objects, or None for a catalogue without genres.

    ``argmin`` and ``argmax`` fail on an array with no genre column, so the
    callers pass None in place of positions when ``names`` is empty.
    """
    if positions is None:
        return None
    return np.array(names, dtype=object)[positions]


def _mean_by(groups: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Return the mean of ``values`` per group, ignoring NaN; NaN for empty groups."""
    values = np.asarray(values, dtype=np.float64)
    known = np.isfinite(values)
    totals = np.bincount(groups[known], weights=values[known], minlength=size)
    counts = np.bincount(groups[known], minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)


def _movie_label(title: Any, year: Any) -> str:
    return str(title) if pd.isna(year) else f"{title} ({int(year)})"


def fit_point_limit(
    kind: str, sample_size: int, n_items: int, max_points: int, min_pairs: int
) -> tuple[int, int | None]:
    """Return the sample size and movie count that keep a map to ``max_points``.

    The translated map draws movies besides its pairs. Its pairs get what the
    movies leave, and at least ``min_pairs``. Movies are sampled when they do
    not all fit. The movie count is None where every movie fits.

    Raises
    ------
    ValueError
        If ``max_points`` is not above ``min_pairs``.
    """
    if max_points <= min_pairs:
        raise ValueError(
            f"max_points must be above min_pairs={min_pairs}; got {max_points}"
        )
    if kind != "translated":
        return min(sample_size, max_points), None
    pairs = min(sample_size, max(max_points - n_items, min_pairs))
    movies = max_points - pairs
    return pairs, (movies if movies < n_items else None)


def build_points(
    loaded: LoadedRun,
    kind: str,
    sample_size: int,
    seed: int,
    max_movies: int | None = None,
) -> Points:
    """Collect the vectors of one projection kind (a key of `KINDS`), with metadata.

    Users and movies are sampled down to ``sample_size`` points when there are
    more; the pair kinds draw ``sample_size`` training pairs with ``seed``.
    "translated" contains every movie ``q`` and the ``p + r`` of the sampled
    pairs, because LRML scores a pair by the distance between the two. With
    ``max_movies`` set, it contains that many movies, sampled with ``seed``.

    Raises
    ------
    ValueError
        If ``kind`` is unknown, or ``sample_size`` or ``max_movies`` is below 1.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    _check_int("sample_size", sample_size, 1, 10_000_000)
    if max_movies is not None:
        _check_int("max_movies", max_movies, 1, 10_000_000)
    users, items = point_attributes(loaded)
    user_vectors, item_vectors = user_item_vectors(loaded.model)
    parts: list[tuple[pd.DataFrame, np.ndarray]] = []

    if kind in ("users_items", "users", "items"):
        chosen = sample_rows(
            (len(users) if kind != "items" else 0)
            + (len(items) if kind != "users" else 0),
            sample_size,
            seed,
        )
        if kind != "items":
            rows = chosen[chosen < len(users)]
            parts.append((_user_rows(users, rows), user_vectors[rows]))
            chosen = chosen[chosen >= len(users)] - len(users)
        if kind != "users":
            parts.append((_item_rows(items, chosen), item_vectors[chosen]))
    else:
        split = loaded.split
        positions = sample_training_pairs(split, sample_size, seed)
        pairs = pair_vectors(
            loaded.model, split.train_users[positions], split.train_items[positions]
        )
        if kind == "translated":
            movies = sample_rows(len(items), max_movies or len(items), seed)
            parts.append((_item_rows(items, movies), item_vectors[movies]))
        label = "relation" if kind == "relations" else "p + r"
        frame = pair_rows(users, items, pairs, split.train_ratings[positions], label)
        parts.append(
            (frame, pairs.relation if kind == "relations" else pairs.translated)
        )

    frame = pd.concat([part[0] for part in parts], ignore_index=True)
    for column in POINT_COLUMNS:
        if column not in frame:
            frame[column] = np.nan
    for column in ("user_id", "item_id"):
        frame[column] = frame[column].astype("Int64")
    vectors = np.concatenate([part[1] for part in parts]).astype(np.float32)
    key = {"kind": kind, "sample_size": sample_size, "seed": seed, "n": len(frame)}
    if kind == "translated" and max_movies is not None:
        key["max_movies"] = max_movies
    return Points(frame=frame, vectors=vectors, key=key)


def _user_rows(users: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    frame = users.iloc[rows].reset_index(drop=True)
    frame.insert(0, "kind", "user")
    frame.insert(1, "user_index", rows.astype(np.int64))
    frame.insert(2, "item_index", -1)
    frame["hover"] = (
        frame["label"]
        + ", "
        + frame["age"].map(lambda age: "?" if pd.isna(age) else f"{age:.0f}")
        + " "
        + frame["gender"].fillna("?").astype(str)
        + " "
        + frame["occupation"].fillna("?").astype(str)
        + "<br>"
        + frame["activity"].map("{:.0f} training ratings".format)
        + ", likes "
        + frame["main_genre"].fillna("?").astype(str)
    )
    return frame


def _item_rows(items: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    frame = items.iloc[rows].reset_index(drop=True)
    frame.insert(0, "kind", "movie")
    frame.insert(1, "user_index", -1)
    frame.insert(2, "item_index", rows.astype(np.int64))
    frame["hover"] = (
        frame["label"]
        + "<br>"
        + frame["genres"].replace("", "no genre")
        + "<br>"
        + frame["popularity"].map("{:.0f} training ratings".format)
    )
    return frame


def pair_rows(
    users: pd.DataFrame,
    items: pd.DataFrame,
    pairs: PairVectors,
    ratings: np.ndarray | None,
    kind: str,
) -> pd.DataFrame:
    """Return one metadata row per pair: the movie's columns and the user's.

    ``ratings`` are the explicit ratings behind the pairs (NaN when None).
    """
    frame = items.iloc[pairs.items].reset_index(drop=True)
    user_part = users.iloc[pairs.users].reset_index(drop=True)
    for column in ("user_id", "activity", "age", "gender", "occupation"):
        frame[column] = user_part[column]
    rating = np.full(len(frame), np.nan) if ratings is None else ratings
    frame["rating"] = np.asarray(rating, dtype=np.float64)
    frame["slot"] = pairs.dominant_slot
    frame.insert(0, "kind", kind)
    frame.insert(1, "user_index", pairs.users)
    frame.insert(2, "item_index", pairs.items)
    movie = frame["label"]
    frame["label"] = user_part["label"] + " → " + movie
    frame["hover"] = (
        frame["label"]
        + "<br>rating "
        + frame["rating"].map(lambda value: "-" if np.isnan(value) else f"{value:.0f}")
        + ", dominant slot "
        + frame["slot"].astype(str)
    )
    return frame
