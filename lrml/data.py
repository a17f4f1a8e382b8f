"""Fetching and parsing of the MovieLens 100K ratings, movies and users.

Two on-disk layouts of the same data are supported:

- ``grouplens``: the files of the official ``ml-100k.zip`` (``u.data``, ``u.item``,
  ``u.user`` and optionally ``u.genre``).
- ``recbole``: the RecBole atomic files (``ml-100k.inter``, ``.item``, ``.user``)
  that ship inside the ``recbole==1.2.1`` wheel. They are the fallback when
  files.grouplens.org is unreachable but a package index is not.

The MovieLens licence forbids redistribution, so the files are fetched into
``DEFAULT_DATA_DIR`` at run time and never committed.
"""

from __future__ import annotations

import csv
import dataclasses
import http.client
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = (
    Path(os.environ["LRML_DATA_DIR"]).expanduser()
    if os.environ.get("LRML_DATA_DIR")
    else Path(__file__).resolve().parent.parent / "data"
)
ML100K_URL_ENV = "LRML_ML100K_URL"
ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
DATASETS = ("ml-100k",)

# Genre flag columns of u.item, in the order of u.genre in ml-100k.zip.
GROUPLENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_GROUPLENS_FILES = ("u.data", "u.item", "u.user")
_GROUPLENS_PAGE = "https://grouplens.org/datasets/movielens/100k/"
_RECBOLE_SUFFIXES = ("inter", "item", "user")
_RECBOLE_REQUIREMENT = "recbole==1.2.1"
_RECBOLE_SOURCE = f"{_RECBOLE_REQUIREMENT} wheel from the package index"
_RECBOLE_WHEEL_FOLDER = "recbole/dataset_example/ml-100k/"
# Generous for the 2 MB wheel, but bounded so a stalled index cannot hang the app.
_PIP_TIMEOUT_S = 300.0
_DOWNLOAD_CHUNK_BYTES = 1 << 16
# Matches a title that ends in a four-digit year in parentheses: "Toy Story (1995)".
_TITLE_YEAR_PATTERN = r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)$"


class DataError(ValueError):
    """Missing, unreadable or malformed dataset files.

    The message names the file, line or value at fault and how to fix it.
    """


class _FetchFailed(Exception):
    """Failure of one source of the dataset, with the reason as the message."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """One MovieLens dataset as three tables.

    ``eq=False`` because a generated ``__eq__`` would compare DataFrames
    element-wise and raise.

    Attributes
    ----------
    name : str
        Dataset name, such as ``"ml-100k"``.
    interactions : pandas.DataFrame
        One row per rating, in file order: ``user_id`` int64, ``item_id`` int64,
        ``rating`` float32, ``timestamp`` int64 (Unix seconds).
    items : pandas.DataFrame
        One row per movie in the catalogue, sorted by ``item_id``: ``item_id``
        int64, ``title`` str without the ``" (1995)"`` suffix, ``year`` Int64
        (``<NA>`` when the title has no year), ``genres`` str (``"|"``-joined
        genre names, ``""`` when there are none).
    users : pandas.DataFrame
        One row per user, sorted by ``user_id``: ``user_id`` int64, ``age`` Int64,
        ``gender`` str, ``occupation`` str, ``zip_code`` str.
    source : str
        Origin for logs and the UI: a folder or zip path, a download URL or the
        ``recbole==1.2.1`` wheel.
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


def load_dataset(name: str, data_dir: Path | None = None) -> Dataset:
    """Load a dataset by name, fetching its files if needed.

    Parameters
    ----------
    name : str
        One of ``DATASETS``.
    data_dir : pathlib.Path, optional
        Folder that contains the dataset folders. Defaults to ``DEFAULT_DATA_DIR``.

    Raises
    ------
    DataError
        If ``name`` is not in ``DATASETS``, or the files cannot be obtained or parsed.
    """
    if name not in DATASETS:
        raise DataError(f"Unknown dataset {name!r}. Use one of: {', '.join(DATASETS)}.")

    return load_ml100k(data_dir)


def load_ml100k(data_dir: Path | None = None) -> Dataset:
    """Load MovieLens 100K, fetching it into ``data_dir`` first if needed.

    See `fetch_ml100k` for where the files come from.

    Raises
    ------
    DataError
        If no source works or a file is malformed.
    """
    folder, layout, source = _fetch_ml100k(_resolve_data_dir(data_dir), timeout=10.0)
    if layout == "grouplens":
        dataset = read_grouplens_100k(folder)
    else:
        dataset = read_recbole_atomic(folder)

    logger.info(
        "Loaded ml-100k: %d ratings, %d users, %d items from %s",
        len(dataset.interactions),
        len(dataset.users),
        len(dataset.items),
        source,
    )
    return dataclasses.replace(dataset, source=source)


def fetch_ml100k(
    data_dir: Path | None = None, *, timeout: float = 10.0
) -> tuple[Path, str]:
    """Find or fetch the MovieLens 100K files and return ``(folder, layout)``.

    The sources are tried in this order, and the one used is logged at INFO:

    1. ``data_dir/ml-100k/`` with ``u.data``, ``u.item`` and ``u.user``
       (layout ``"grouplens"``).
    2. ``data_dir/ml-100k-recbole/`` with ``ml-100k.inter``, ``.item`` and
       ``.user`` (layout ``"recbole"``).
    3. ``data_dir/ml-100k.zip`` if it is a valid archive, else a fresh download
       from ``$LRML_ML100K_URL`` or ``ML100K_URL``, extracted to
       ``data_dir/ml-100k/``. A failure is logged as a WARNING.
    4. ``pip download --no-deps recbole==1.2.1`` through the configured package
       index, with the three atomic files extracted from the wheel to
       ``data_dir/ml-100k-recbole/``. Nothing is installed or imported.

    Downloads and extractions go to temporary names inside ``data_dir`` and are
    renamed into place only when complete, so an interrupted fetch never leaves
    a folder that step 1 or 2 would accept.

    Parameters
    ----------
    data_dir : pathlib.Path, optional
        Defaults to ``DEFAULT_DATA_DIR``. Created if missing.
    timeout : float
        Socket timeout in seconds for the zip download (step 3).

    Raises
    ------
    DataError
        If steps 3 and 4 both fail (the message gives both reasons and how to
        place the files by hand), or a dataset folder exists but is missing files.
    """
    folder, layout, _ = _fetch_ml100k(_resolve_data_dir(data_dir), timeout=timeout)
    return folder, layout


def _resolve_data_dir(data_dir: Path | None) -> Path:
    return Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR


def _missing_files(folder: Path, names: tuple[str, ...]) -> list[str]:
    return [name for name in names if not (folder / name).is_file()]


def _recbole_names(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{suffix}" for suffix in _RECBOLE_SUFFIXES)


def _fetch_ml100k(data_dir: Path, timeout: float) -> tuple[Path, str, str]:
    grouplens_folder = data_dir / "ml-100k"
    recbole_folder = data_dir / "ml-100k-recbole"
    recbole_files = _recbole_names("ml-100k")

    if not _missing_files(grouplens_folder, _GROUPLENS_FILES):
        logger.info("Using MovieLens 100K from %s", grouplens_folder)
        return grouplens_folder, "grouplens", str(grouplens_folder)

    if not _missing_files(recbole_folder, recbole_files):
        logger.info("Using MovieLens 100K (RecBole files) from %s", recbole_folder)
        return recbole_folder, "recbole", str(recbole_folder)

    # A partial folder is something a person placed there, and renaming a
    # complete one over it would fail, so ask them to finish or remove it.
    for folder, names in (
        (grouplens_folder, _GROUPLENS_FILES),
        (recbole_folder, recbole_files),
    ):
        missing = _missing_files(folder, names)
        if missing and folder.exists():
            raise DataError(
                f"{folder} exists but is missing {', '.join(missing)}. Add the "
                f"missing files or delete the folder to fetch it again."
            )

    data_dir.mkdir(parents=True, exist_ok=True)
    url = os.environ.get(ML100K_URL_ENV) or ML100K_URL
    try:
        source = _obtain_grouplens_zip(data_dir, url, timeout)
        _extract_grouplens_zip(data_dir / "ml-100k.zip", grouplens_folder)
        logger.info("Using MovieLens 100K from %s, extracted to %s", source, data_dir)
        return grouplens_folder, "grouplens", source
    except _FetchFailed as error:
        download_reason = str(error)
        logger.warning(
            "Download of MovieLens 100K from %s failed: %s. Trying %s next.",
            url,
            download_reason,
            _RECBOLE_SOURCE,
        )

    try:
        _extract_recbole_wheel(data_dir, recbole_folder)
    except _FetchFailed as error:
        raise DataError(
            f"Failed to obtain MovieLens 100K. Download from {url} failed: "
            f"{download_reason}. Fallback 'pip download {_RECBOLE_REQUIREMENT}' "
            f"failed: {error}. Download ml-100k.zip by hand from {_GROUPLENS_PAGE} "
            f"and unzip it in {data_dir} so that "
            f"{grouplens_folder / 'u.data'} exists."
        ) from error

    logger.info("Using MovieLens 100K from %s, saved in %s", _RECBOLE_SOURCE, data_dir)
    return recbole_folder, "recbole", _RECBOLE_SOURCE


def _obtain_grouplens_zip(data_dir: Path, url: str, timeout: float) -> str:
    """Ensure ``data_dir/ml-100k.zip`` is valid, downloading it if needed.

    Returns the source of the zip: its path when it was already there, else ``url``.
    """
    archive = data_dir / "ml-100k.zip"
    if archive.is_file():
        try:
            _validate_grouplens_zip(archive, str(archive))
            return str(archive)
        except _FetchFailed as error:
            logger.warning("Ignoring %s and downloading again: %s", archive, error)

    logger.info("Downloading MovieLens 100K from %s", url)
    handle, partial_name = tempfile.mkstemp(
        dir=data_dir, prefix=".ml-100k.zip.", suffix=".part"
    )
    partial = Path(partial_name)
    try:
        with os.fdopen(handle, "wb") as output:
            _download(url, output, timeout)
        _validate_grouplens_zip(partial, "the downloaded file")
        partial.replace(archive)
    finally:
        partial.unlink(missing_ok=True)

    return url


def _download(url: str, output: io.BufferedWriter, timeout: float) -> None:
    """Copy the body at ``url`` to ``output`` and check it against Content-Length."""
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            expected = response.headers.get("Content-Length")
            while chunk := response.read(_DOWNLOAD_CHUNK_BYTES):
                output.write(chunk)
                received += len(chunk)
    except (OSError, http.client.HTTPException, ValueError) as error:
        # URLError, HTTPError and socket timeouts are OSErrors. ValueError is
        # what urlopen raises for a malformed URL.
        raise _FetchFailed(f"{type(error).__name__}: {error}") from error

    # http.client returns a short body without error when the server closes
    # the connection early, so a truncated download is caught only here.
    if expected is not None and expected.isdigit() and int(expected) != received:
        raise _FetchFailed(
            f"incomplete download: received {received} of {expected} bytes"
        )


def _validate_grouplens_zip(archive: Path, description: str) -> None:
    required = [f"ml-100k/{name}" for name in _GROUPLENS_FILES]
    try:
        with zipfile.ZipFile(archive) as bundle:
            missing = [name for name in required if name not in bundle.namelist()]
            corrupt = bundle.testzip()
    except (zipfile.BadZipFile, OSError) as error:
        raise _FetchFailed(f"{description} is not a valid zip file: {error}") from error

    if missing:
        raise _FetchFailed(f"{description} is missing {', '.join(missing)}")
    if corrupt is not None:
        raise _FetchFailed(f"{description} has a corrupt member {corrupt}")


def _extract_grouplens_zip(archive: Path, target: Path) -> None:
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".ml-100k.extract."))
    try:
        with zipfile.ZipFile(archive) as bundle:
            # ZipFile.extract drops ".." and absolute parts from member names.
            for member in bundle.infolist():
                if member.filename.startswith("ml-100k/"):
                    bundle.extract(member, staging)
        _move_into_place(staging / "ml-100k", target, _GROUPLENS_FILES)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract_recbole_wheel(data_dir: Path, target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".recbole.") as temporary:
        download_dir = Path(temporary) / "download"
        staging = Path(temporary) / "ml-100k-recbole"
        download_dir.mkdir()
        staging.mkdir()

        _pip_download_recbole(download_dir)
        wheels = sorted(download_dir.glob("recbole-*.whl"))
        if not wheels:
            found = ", ".join(path.name for path in download_dir.iterdir())
            raise _FetchFailed(
                f"pip reported success but downloaded no recbole wheel, only "
                f"{found or 'no files'}"
            )

        names = _recbole_names("ml-100k")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                for name in names:
                    member = _RECBOLE_WHEEL_FOLDER + name
                    with (
                        wheel.open(member) as source,
                        open(staging / name, "wb") as output,
                    ):
                        shutil.copyfileobj(source, output)
        except (zipfile.BadZipFile, KeyError) as error:
            raise _FetchFailed(
                f"{wheels[0].name} is not a valid recbole wheel: {error}"
            ) from error

        _move_into_place(staging, target, names)


def _pip_download_recbole(download_dir: Path) -> None:
    """Run ``pip download`` of the recbole wheel into ``download_dir``."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps",
        "--disable-pip-version-check", "--only-binary", ":all:",
        "-d", str(download_dir), _RECBOLE_REQUIREMENT,
    ]  # fmt: skip
    logger.info("Running %s", " ".join(command))
    try:
        completed = subprocess.run(
            command,
            check=False,
            capture_output=True,
            text=True,
            timeout=_PIP_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as error:
        raise _FetchFailed(f"pip timed out after {_PIP_TIMEOUT_S:.0f} s") from error
    except OSError as error:
        raise _FetchFailed(f"failed to run {sys.executable}: {error}") from error

    if completed.returncode != 0:
        output = (completed.stderr or completed.stdout).strip().splitlines()
        raise _FetchFailed(
            f"pip exited with status {completed.returncode}: " + " / ".join(output[-3:])
        )


def _move_into_place(staging: Path, target: Path, names: tuple[str, ...]) -> None:
    """Rename ``staging`` to ``target``, unless another process filled it first."""
    missing = _missing_files(staging, names)
    if missing:
        raise _FetchFailed(f"the extracted files are missing {', '.join(missing)}")

    try:
        staging.rename(target)
    except OSError:
        if _missing_files(target, names):
            raise
        logger.info("Another process has already created %s, so it is used", target)


def read_grouplens_100k(folder: Path) -> Dataset:
    """Parse MovieLens 100K in the layout of the official ``ml-100k.zip``.

    Reads ``u.data`` (tab-separated ``user item rating timestamp``), ``u.item``
    and ``u.user`` (pipe-separated, latin-1), and takes genre names from
    ``u.genre`` when present, else `GROUPLENS_GENRES`.

    Raises
    ------
    DataError
        If a file is missing, empty or malformed, or a rating refers to an
        unknown user or item.
    """
    folder = Path(folder)
    fix = f"Copy the original file from ml-100k.zip ({_GROUPLENS_PAGE})."

    ratings = _read_table(folder / "u.data", "\t", "latin-1", fix, field_count=4)
    ratings.columns = ["user_id", "item_id", "rating", "timestamp"]
    ratings = _parse_interactions(ratings, folder / "u.data", fix)

    genres = _read_grouplens_genres(folder / "u.genre", fix)
    movies = _read_table(
        folder / "u.item", "|", "latin-1", fix, field_count=5 + len(genres)
    )
    items = _parse_grouplens_items(movies, genres, folder / "u.item", fix)

    people = _read_table(folder / "u.user", "|", "latin-1", fix, field_count=5)
    people.columns = ["user_id", "age", "gender", "occupation", "zip_code"]
    users = _parse_users(people, folder / "u.user", fix)

    interactions = _check_references(ratings, items, users, folder / "u.data", fix)
    return Dataset("ml-100k", interactions, items, users, str(folder))


def read_recbole_atomic(folder: Path, prefix: str = "ml-100k") -> Dataset:
    """Parse RecBole atomic files ``<prefix>.inter``, ``.item`` and ``.user``.

    The files are tab-separated UTF-8 with a ``name:type`` header row, and
    columns are found by name, so extra columns are ignored. Genres in the
    ``class`` column are space-separated and come out ``"|"``-joined.

    Raises
    ------
    DataError
        If a file is missing, empty or malformed, lacks a required column, or a
        rating refers to an unknown user or item.
    """
    folder = Path(folder)
    fix = (
        f"Delete {folder} so that it is extracted again from the "
        f"{_RECBOLE_REQUIREMENT} wheel."
    )

    inter_path = folder / f"{prefix}.inter"
    ratings = _read_recbole_columns(
        inter_path, ["user_id", "item_id", "rating", "timestamp"], fix
    )
    ratings = _parse_interactions(ratings, inter_path, fix)

    item_path = folder / f"{prefix}.item"
    movies = _read_recbole_columns(
        item_path, ["item_id", "movie_title", "release_year", "class"], fix
    )
    # RecBole 1.2.1 spells the placeholder title of item 267 "unkonwn", where
    # u.item has "unknown".
    titles = movies["movie_title"].str.strip().replace("unkonwn", "unknown")
    # Years are tokens such as "1995", "unkonwn" or "V" (item 1412), so any
    # token that is not all digits means the year is unknown.
    year_text = movies["release_year"].str.strip()
    year_text = year_text.where(year_text.str.fullmatch(r"\d+"))
    years = pd.to_numeric(year_text).astype("Int64")
    items = pd.DataFrame(
        {
            "item_id": _parse_integers(movies["item_id"], "item_id", item_path, fix),
            "title": titles.astype(str),
            "year": years,
            "genres": movies["class"].str.split().str.join("|").astype(str),
        }
    )
    items = _sort_unique(items, "item_id", item_path, fix)

    user_path = folder / f"{prefix}.user"
    people = _read_recbole_columns(
        user_path, ["user_id", "age", "gender", "occupation", "zip_code"], fix
    )
    users = _parse_users(people, user_path, fix)

    interactions = _check_references(ratings, items, users, inter_path, fix)
    return Dataset(prefix, interactions, items, users, str(folder))


def _read_table(
    path: Path,
    sep: str,
    encoding: str,
    fix: str,
    *,
    field_count: int | None = None,
    header: bool = False,
) -> pd.DataFrame:
    """Read a delimited file as str columns indexed by 1-based line number.

    Blank lines are skipped. Every other line must have ``field_count`` fields,
    or as many as the first line when ``field_count`` is None.
    """
    if not path.is_file():
        raise DataError(f"{path} not found. {fix}")

    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path} is not valid {encoding} text: {error}. {fix}"
        ) from error

    # str.splitlines would also split at "\x85", which latin-1 decodes from a
    # plain byte, so split at newlines only.
    numbered = [
        (number, line.rstrip("\r"))
        for number, line in enumerate(text.split("\n"), start=1)
        if line.strip()
    ]
    if len(numbered) <= int(header):
        raise DataError(f"{path} contains no data rows. {fix}")

    expected = field_count or numbered[0][1].count(sep) + 1
    for number, line in numbered:
        found = line.count(sep) + 1
        if found != expected:
            raise DataError(
                f"{path}, line {number}: expected {expected} fields separated by "
                f"{sep!r}, found {found}. {fix}"
            )

    frame = pd.read_csv(
        io.StringIO("\n".join(line for _, line in numbered)),
        sep=sep,
        header=0 if header else None,
        dtype=str,
        quoting=csv.QUOTE_NONE,
        keep_default_na=False,
        engine="c",
    )
    frame.index = [number for number, _ in numbered[int(header) :]]
    return frame


def _read_recbole_columns(path: Path, names: list[str], fix: str) -> pd.DataFrame:
    """Read an atomic file and return the ``names`` columns, found by header name."""
    frame = _read_table(path, "\t", "utf-8", fix, header=True)
    frame.columns = [column.split(":", 1)[0].strip() for column in frame.columns]

    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: the header is missing {', '.join(missing)}. Expected columns "
            f"{', '.join(names)}, found {', '.join(frame.columns)}. {fix}"
        )
    return frame[names]


def _read_grouplens_genres(path: Path, fix: str) -> tuple[str, ...]:
    if not path.is_file():
        return GROUPLENS_GENRES

    table = _read_table(path, "|", "latin-1", fix, field_count=2)
    positions = _parse_integers(table[1], "genre index", path, fix)
    if sorted(positions) != list(range(len(table))):
        raise DataError(
            f"{path}: genre indexes must be 0 to {len(table) - 1}, "
            f"found {positions.tolist()}. {fix}"
        )
    return tuple(table[0].to_numpy()[np.argsort(positions.to_numpy())])


def _parse_grouplens_items(
    movies: pd.DataFrame, genres: tuple[str, ...], path: Path, fix: str
) -> pd.DataFrame:
    flags = movies.iloc[:, 5:]
    valid = flags.isin(["0", "1"])
    if not valid.all(axis=None):
        line = valid.all(axis=1).idxmin()
        raise DataError(
            f"{path}, line {line}: genre flags must be 0 or 1, "
            f"found {'|'.join(flags.loc[line])}. {fix}"
        )
    genre_names = np.array(genres, dtype=object)
    genre_strings = ["|".join(genre_names[row]) for row in (flags == "1").to_numpy()]

    # NOTE: the year must be the last parenthesised group, so item 1412 "Land
    # Before Time III: ... (1995) (V)" keeps its whole title and gets no year.
    parts = movies[1].str.strip().str.extract(_TITLE_YEAR_PATTERN)
    has_year = parts["year"].notna()
    items = pd.DataFrame(
        {
            "item_id": _parse_integers(movies[0], "movie id", path, fix),
            "title": parts["title"].where(has_year, movies[1].str.strip()).astype(str),
            "year": pd.to_numeric(parts["year"]).astype("Int64"),
            "genres": pd.Series(genre_strings, index=movies.index, dtype=str),
        }
    )
    return _sort_unique(items, "item_id", path, fix)


def _parse_interactions(ratings: pd.DataFrame, path: Path, fix: str) -> pd.DataFrame:
    """Convert the rating columns, keeping the line-number index for later errors."""
    return pd.DataFrame(
        {
            "user_id": _parse_integers(ratings["user_id"], "user_id", path, fix),
            "item_id": _parse_integers(ratings["item_id"], "item_id", path, fix),
            "rating": _parse_floats(ratings["rating"], "rating", path, fix),
            "timestamp": _parse_integers(ratings["timestamp"], "timestamp", path, fix),
        }
    )


def _parse_users(people: pd.DataFrame, path: Path, fix: str) -> pd.DataFrame:
    users = pd.DataFrame(
        {
            "user_id": _parse_integers(people["user_id"], "user_id", path, fix),
            "age": _parse_integers(people["age"], "age", path, fix, nullable=True),
            "gender": people["gender"].str.strip().astype(str),
            "occupation": people["occupation"].str.strip().astype(str),
            "zip_code": people["zip_code"].str.strip().astype(str),
        }
    )
    return _sort_unique(users, "user_id", path, fix)


def _parse_integers(
    text: pd.Series, column: str, path: Path, fix: str, *, nullable: bool = False
) -> pd.Series:
    """Convert str values to int64, or Int64 with ``<NA>`` for blanks if ``nullable``.

    Integral floats such as ``"881250949.0"`` are accepted, because RecBole
    declares timestamps as ``float``.
    """
    stripped = text.str.strip()
    values = pd.to_numeric(stripped, errors="coerce")
    invalid = values.isna() | (values % 1 != 0)
    if nullable:
        invalid &= stripped != ""
    _raise_at_first(invalid, text, f"{column} must be an integer", path, fix)
    return values.astype("Int64" if nullable else "int64")


def _parse_floats(text: pd.Series, column: str, path: Path, fix: str) -> pd.Series:
    values = pd.to_numeric(text.str.strip(), errors="coerce").astype("float64")
    invalid = ~np.isfinite(values)
    _raise_at_first(invalid, text, f"{column} must be a finite number", path, fix)
    return values.astype("float32")


def _raise_at_first(
    invalid: pd.Series, text: pd.Series, rule: str, path: Path, fix: str
) -> None:
    if invalid.any():
        line = invalid.idxmax()
        raise DataError(f"{path}, line {line}: {rule}, found {text[line]!r}. {fix}")


def _sort_unique(frame: pd.DataFrame, key: str, path: Path, fix: str) -> pd.DataFrame:
    duplicated = frame[key].duplicated()
    if duplicated.any():
        line = duplicated.idxmax()
        raise DataError(
            f"{path}, line {line}: {key} {frame[key][line]} appears twice. {fix}"
        )
    return frame.sort_values(key, kind="stable").reset_index(drop=True)


def _check_references(
    ratings: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    path: Path,
    fix: str,
) -> pd.DataFrame:
    """Raise unless every rating names a known user and item, then drop line numbers."""
    for column, table in (("user_id", users), ("item_id", items)):
        unknown = ~ratings[column].isin(table[column])
        if unknown.any():
            line = unknown.idxmax()
            raise DataError(
                f"{path}, line {line}: {column} {ratings[column][line]} is not in "
                f"the {column.removesuffix('_id')} file, and neither are those of "
                f"{unknown.sum() - 1} other ratings. {fix}"
            )
    return ratings.reset_index(drop=True)
