"""Loading datasets by release name or by path: the entry point of lrml's data code.

`load_dataset` takes a MovieLens release name from `DATASETS`, or the path of a
user's interaction file (CSV, TSV, parquet) or of a folder in a MovieLens or
RecBole layout. It fetches a missing release from GroupLens, parses the files
into a `Dataset`, and caches the parsed tables as parquet under
``<data dir>/cache/``, so the next load of unchanged files skips the parse.

The MovieLens licence forbids redistribution, so releases are fetched into
``DEFAULT_DATA_DIR`` at run time and never committed. The modules behind this
one: `lrml.movielens` and `lrml.recbole` (parsers), `lrml.custom_data` (user
files), `lrml.fetch` and `lrml.download` (fetching), `lrml.cache`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path

from lrml.cache import load_cached, save_cached
from lrml.custom_data import (
    read_interactions_file,
    sanitise_file_name,
)
from lrml.dataset import DataError, Dataset, check_interaction_counts
from lrml.download import ProgressCallback
from lrml.fetch import (
    DEFAULT_GROUPLENS_URL,
    GROUPLENS_URL_ENV,
    ML100K_URL_ENV,
    Fetched,
    fetch_release,
    locate_release,
)
from lrml.movielens import (
    GROUPLENS_GENRES,
    RELEASES,
    detect_layout,
    read_grouplens_100k,
    read_movielens_folder,
    source_files,
)
from lrml.recbole import find_recbole_prefix, read_recbole_atomic, recbole_source_files

__all__ = [
    "DATASETS",
    "DEFAULT_DATA_DIR",
    "DEFAULT_GROUPLENS_URL",
    "GROUPLENS_GENRES",
    "GROUPLENS_URL_ENV",
    "ML100K_URL_ENV",
    "DataError",
    "Dataset",
    "Fetched",
    "dataset_label",
    "fetch_dataset",
    "fetch_ml100k",
    "load_dataset",
    "load_ml100k",
    "local_datasets",
    "read_grouplens_100k",
    "read_recbole_atomic",
    "resolve_data_dir",
    "save_upload",
]

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = (
    Path(os.environ["LRML_DATA_DIR"]).expanduser()
    if os.environ.get("LRML_DATA_DIR")
    else Path(__file__).resolve().parent.parent / "data"
)
DATASETS = tuple(RELEASES)
CACHE_FOLDER = "cache"
UPLOADS_FOLDER = "uploads"


def resolve_data_dir(data_dir: Path | None = None) -> Path:
    """Return ``data_dir``, or `DEFAULT_DATA_DIR` when it is None."""
    return Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR


def load_dataset(
    name_or_path: str | os.PathLike,
    data_dir: Path | None = None,
    *,
    progress: ProgressCallback | None = None,
    columns: dict[str, str] | None = None,
    sep: str | None = None,
    encoding: str = "utf-8",
    use_cache: bool = True,
) -> Dataset:
    """Load a MovieLens release by name, or a dataset file or folder by path.

    Parameters
    ----------
    name_or_path : str or path-like
        One of `DATASETS` (fetched into ``data_dir`` if missing), or the path of
        a CSV, TSV or parquet interaction file (see `lrml.custom_data`), of a
        MovieLens release folder, or of a folder with one RecBole ``.inter`` file.
    data_dir : pathlib.Path, optional
        Folder for releases, the parse cache and uploads. Defaults to
        `DEFAULT_DATA_DIR`.
    progress : callable, optional
        Called as ``progress(bytes_received, total_bytes)`` during a download.
    columns, sep, encoding
        Options for a user's file, passed to
        `lrml.custom_data.read_interactions_file`.
    use_cache : bool
        Whether to reuse and write the parquet cache under ``data_dir/cache``.

    Raises
    ------
    DataError
        If the name is neither a release nor an existing path, the files
        cannot be fetched, or a file is malformed.
    """
    data_dir = resolve_data_dir(data_dir)
    started = time.perf_counter()
    name = str(name_or_path)

    if name in DATASETS:
        fetched = fetch_release(name, data_dir, progress=progress)
        if fetched.layout == "recbole":
            files = recbole_source_files(fetched.folder, name)

            def parse() -> Dataset:
                return read_recbole_atomic(fetched.folder, name)
        else:
            files = source_files(fetched.folder, fetched.layout)

            def parse() -> Dataset:
                return read_movielens_folder(fetched.folder, name)

        identity = f"release|{name}|{fetched.folder.resolve()}"
        dataset = _cached_parse(data_dir, identity, name, files, parse, use_cache)
        dataset = dataclasses.replace(dataset, source=fetched.source)
    else:
        dataset = _load_path(
            Path(name).expanduser(), data_dir, columns, sep, encoding, use_cache
        )

    logger.info(
        "Loaded %s: %d interactions, %d catalogue items from %s in %.1f s",
        dataset.name,
        len(dataset.interactions),
        len(dataset.items),
        dataset.source,
        time.perf_counter() - started,
    )
    return dataset


def _load_path(
    path: Path,
    data_dir: Path,
    columns: dict[str, str] | None,
    sep: str | None,
    encoding: str,
    use_cache: bool,
) -> Dataset:
    if not path.exists():
        raise DataError(
            f"Unknown dataset {str(path)!r}: it is not a MovieLens release "
            f"({', '.join(DATASETS)}) and no file or folder exists at "
            f"{path.resolve()}."
        )

    path = path.resolve()
    if path.is_file():
        identity = _file_identity(path, columns, sep, encoding)

        def parse() -> Dataset:
            return read_interactions_file(
                path, columns=columns, sep=sep, encoding=encoding
            )

        return _cached_parse(data_dir, identity, path.name, [path], parse, use_cache)

    layout = detect_layout(path)
    prefix = find_recbole_prefix(path)
    if layout is not None:
        files = source_files(path, layout)

        def parse() -> Dataset:
            return read_movielens_folder(path)
    elif prefix is not None:
        files = recbole_source_files(path, prefix)

        def parse() -> Dataset:
            return read_recbole_atomic(path, prefix)
    else:
        found = ", ".join(sorted(child.name for child in path.iterdir())) or "nothing"
        raise DataError(
            f"{path} is not a dataset folder. Expected MovieLens files (u.data, "
            f"ratings.dat or ratings.csv with the movie file beside it) or one "
            f"RecBole .inter file, found {found}. To load a single file, give "
            f"its path."
        )

    identity = f"folder|{path}"
    return _cached_parse(data_dir, identity, path.name, files, parse, use_cache)


def _file_identity(
    path: Path, columns: dict[str, str] | None, sep: str | None, encoding: str
) -> str:
    """Return the cache identity of a user's file read with these options."""
    options = {"columns": columns, "sep": sep, "encoding": encoding}
    return f"file|{path}|{json.dumps(options, sort_keys=True)}"


def _cached_parse(
    data_dir: Path, identity: str, name: str, files: list[Path], parse, use_cache: bool
) -> Dataset:
    cache_dir = data_dir / CACHE_FOLDER
    if use_cache:
        dataset = load_cached(cache_dir, identity, name, files)
        if dataset is not None:
            logger.info("Using the parsed copy of %s in %s", name, cache_dir)
            return dataset

    dataset = parse()
    check_interaction_counts(dataset.interactions, dataset.source)
    if use_cache:
        save_cached(cache_dir, identity, files, dataset)
    return dataset


def fetch_dataset(
    name: str,
    data_dir: Path | None = None,
    *,
    progress: ProgressCallback | None = None,
    timeout: float = 30.0,
) -> Fetched:
    """Find or fetch the release ``name`` and return where its files are.

    See `lrml.fetch` for the sources and their order. The result's ``folder``
    contains the files, in the ``layout`` it names (``"grouplens"``, ``"dat"``,
    ``"csv"``, or ``"recbole"`` for the MovieLens 100K fallback).

    Raises
    ------
    DataError
        If ``name`` is not in `DATASETS`, or every source fails. The message
        describes how to place the files by hand.
    """
    if name not in DATASETS:
        raise DataError(f"Unknown dataset {name!r}. Use one of: {', '.join(DATASETS)}.")
    data_dir = resolve_data_dir(data_dir)
    return fetch_release(name, data_dir, progress=progress, timeout=timeout)


def load_ml100k(data_dir: Path | None = None) -> Dataset:
    """Load MovieLens 100K, fetching it into ``data_dir`` first if needed."""
    return load_dataset("ml-100k", data_dir)


def fetch_ml100k(
    data_dir: Path | None = None, *, timeout: float = 10.0
) -> tuple[Path, str]:
    """Find or fetch MovieLens 100K and return ``(folder, layout)``.

    The layout is ``"grouplens"`` (``u.data`` and friends) or ``"recbole"``
    (atomic files, from a ``ml-100k-recbole`` folder or the recbole wheel).
    """
    fetched = fetch_release("ml-100k", resolve_data_dir(data_dir), timeout=timeout)
    return fetched.folder, fetched.layout


def save_upload(file_name: str, content: bytes, data_dir: Path | None = None) -> Path:
    """Validate an uploaded interaction file and save it under ``data_dir/uploads``.

    The saved name is the sanitised upload name plus a hash of the content,
    such as ``ratings-3f2a9c0b1d4e.csv``, so an upload never replaces another
    file and the same content is saved once. The file is parsed before it is
    saved, and its parse is cached, so `load_dataset` on the returned path is fast.

    Raises
    ------
    DataError
        If the name has an unsupported suffix or the content is not a valid
        interaction file. The message names the upload; nothing is saved.
    """
    safe_name = sanitise_file_name(file_name)
    stem, _, suffix = safe_name.rpartition(".")
    digest = hashlib.sha256(content).hexdigest()[:12]
    uploads = resolve_data_dir(data_dir) / UPLOADS_FOLDER
    target = uploads / f"{stem}-{digest}.{suffix}"
    if target.is_file() and target.stat().st_size == len(content):
        return target

    uploads.mkdir(parents=True, exist_ok=True)
    handle, partial_name = tempfile.mkstemp(
        dir=uploads, prefix=".upload-", suffix=f".{suffix}"
    )
    partial = Path(partial_name)
    try:
        with os.fdopen(handle, "wb") as output:
            output.write(content)
        dataset = read_interactions_file(partial, label=file_name)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)

    identity = _file_identity(target.resolve(), None, None, "utf-8")
    saved = dataclasses.replace(dataset, name=target.name, source=str(target.resolve()))
    save_cached(resolve_data_dir(data_dir) / CACHE_FOLDER, identity, [target], saved)
    logger.info("Saved upload %r as %s", file_name, target)
    return target


def dataset_label(name_or_path: str | os.PathLike) -> str:
    """Return a short name for a dataset that is safe in file names.

    A release name is returned as it is. For a path, the file or folder name
    without its suffix, with characters other than letters, digits, ``.``,
    ``_`` and ``-`` replaced by ``_``: ``/data/uploads/My Ratings.csv`` gives
    ``My_Ratings``.
    """
    name = str(name_or_path)
    if name in DATASETS:
        return name
    stem = Path(name).stem or Path(name).name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-") or "dataset"


def local_datasets(data_dir: Path | None = None) -> list[str]:
    """Return the datasets ready to load: releases on disk, then uploaded files."""
    data_dir = resolve_data_dir(data_dir)
    names = [name for name in DATASETS if locate_release(name, data_dir) is not None]
    uploads = data_dir / UPLOADS_FOLDER
    if uploads.is_dir():
        names += [
            str(path.resolve())
            for path in sorted(uploads.iterdir())
            if path.is_file() and not path.name.startswith(".")
        ]
    return names
