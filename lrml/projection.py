"""2-D projections of user and item vectors, with UMAP or PCA."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

logger = logging.getLogger(__name__)

METHODS = ("umap", "pca")


def project(
    vectors: np.ndarray,
    method: str = "umap",
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
    seed: int = 0,
) -> np.ndarray:
    """Project ``vectors`` (n, d) to (n, 2).

    UMAP needs more points than neighbours, so ``n_neighbors`` is lowered to
    ``n - 1`` for small inputs; below four points, and for any input where UMAP
    cannot run, PCA is used instead. umap-learn is imported here only, because
    importing it compiles code and takes seconds.

    Raises
    ------
    ValueError
        If ``vectors`` holds NaN or infinite values, or ``method`` is unknown.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array; got shape {vectors.shape}")
    bad_rows = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if len(bad_rows):
        raise ValueError(
            f"{len(bad_rows)} vector(s) hold NaN or infinite values (first row "
            f"{bad_rows[0]}); the run's weights are broken, train it again"
        )
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")

    n = len(vectors)
    if n == 0:
        return np.zeros((0, 2), dtype=np.float32)
    if method == "pca" or n < 4:
        return _pca(vectors)

    import umap

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=max(2, min(n_neighbors, n - 1)),
        min_dist=min_dist,
        metric=metric,
        random_state=seed,
        init="spectral" if n > 10 else "random",
    )
    return reducer.fit_transform(vectors).astype(np.float32)


def _pca(vectors: np.ndarray) -> np.ndarray:
    n, d = vectors.shape
    out = np.zeros((n, 2), dtype=np.float32)
    components = min(2, n, d)
    if n < 2 or np.allclose(vectors, vectors[0]):
        return out
    out[:, :components] = PCA(n_components=components).fit_transform(vectors)
    return out


def cached_projection(
    cache_dir: Path, key: dict, vectors: np.ndarray, **settings
) -> np.ndarray:
    """Return `project` of ``vectors``, reading or writing a parquet file in ``cache_dir``.

    The file name hashes ``key`` (what the vectors are, for example the weights'
    epoch) together with the settings, so a change to either computes anew.
    """
    payload = json.dumps(
        {"key": key, "settings": settings}, sort_keys=True, default=str
    )
    digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"projection-{digest}.parquet"
    if path.exists():
        frame = pd.read_parquet(path)
        if len(frame) == len(vectors):
            return frame[["x", "y"]].to_numpy(np.float32)
    coords = project(vectors, **settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1]}).to_parquet(tmp, index=False)
    tmp.replace(path)
    return coords
