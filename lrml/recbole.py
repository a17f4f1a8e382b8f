"""RecBole atomic files, and MovieLens 100K taken from the ``recbole`` wheel.

Atomic files are tab-separated UTF-8 with a ``name:type`` header line:
``<prefix>.inter`` contains the interactions, ``<prefix>.item`` and ``<prefix>.user``
the item and user features. The ``recbole==1.2.1`` wheel on PyPI contains
MovieLens 100K in this form, which is the fallback when files.grouplens.org is
unreachable but a package index is not.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from lrml.dataset import DataError, Dataset, empty_users
from lrml.download import DownloadFailed, move_into_place
from lrml.fields import parse_integers, sort_unique
from lrml.movielens import split_titles
from lrml.tables import (
    Column,
    check_unique_names,
    line_of_row,
    read_columns,
    read_header,
    read_text_table,
)

logger = logging.getLogger(__name__)

RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_SOURCE = f"{RECBOLE_REQUIREMENT} wheel from the package index"
RECBOLE_SUFFIXES = ("inter", "item", "user")
_WHEEL_FOLDER = "recbole/dataset_example/ml-100k/"
# Generous for the 2 MB wheel, but bounded so a stalled index cannot hang the app.
_PIP_TIMEOUT_S = 300.0


def recbole_names(prefix: str) -> tuple[str, ...]:
    """Return the file names ``<prefix>.inter``, ``.item`` and ``.user``."""
    return tuple(f"{prefix}.{suffix}" for suffix in RECBOLE_SUFFIXES)


def find_recbole_prefix(folder: Path) -> str | None:
    """Return the prefix of the only ``*.inter`` file in ``folder``, or None."""
    inter_files = sorted(Path(folder).glob("*.inter"))
    return inter_files[0].stem if len(inter_files) == 1 else None


def recbole_source_files(folder: Path, prefix: str) -> list[Path]:
    """Return the atomic files of ``prefix`` that exist in ``folder``."""
    return [path for name in recbole_names(prefix) if (path := folder / name).is_file()]


def read_recbole_atomic(folder: Path, prefix: str = "ml-100k") -> Dataset:
    """Parse RecBole atomic files ``<prefix>.inter``, ``.item`` and ``.user``.

    Columns are found by the name before ``:`` in the header, so extra columns
    are ignored. ``.inter`` needs ``user_id`` and ``item_id``, while ``rating``
    defaults to 1 and ``timestamp`` to the line order. ``.item`` and ``.user``
    are optional. From ``.item``, ``movie_title`` (or ``title``),
    ``release_year`` and ``class`` (space-separated genres, which come out
    ``"|"``-joined) are read when present.

    Raises
    ------
    DataError
        If a file is empty or malformed, lacks ``user_id`` or ``item_id``, or an
        interaction refers to an item or user that the other files do not list.
    """
    folder = Path(folder)
    fix = (
        f"Fix the file, or delete {folder} so that it is fetched again if it "
        f"came from the {RECBOLE_REQUIREMENT} wheel."
    )
    inter_path = folder / f"{prefix}.inter"
    header_line, interactions = _read_inter(inter_path, fix)

    item_path = folder / f"{prefix}.item"
    if item_path.is_file():
        items = _read_items(item_path, fix)
    else:
        ids = np.sort(interactions["item_id"].unique())
        items = _plain_items(ids)

    user_path = folder / f"{prefix}.user"
    users = _read_users(user_path, fix) if user_path.is_file() else empty_users()

    tables = [("item_id", items, "item")]
    if not users.empty:
        tables.append(("user_id", users, "user"))
    for column, table, kind in tables:
        unknown = ~interactions[column].isin(table[column]).to_numpy()
        if unknown.any():
            row = int(unknown.argmax())
            raise DataError(
                f"{inter_path}, line {line_of_row(inter_path, row, header_line)}: "
                f"{column} {interactions[column].iloc[row]} is not in the {kind} "
                f"file, and neither are those of {unknown.sum() - 1} other "
                f"interactions. {fix}"
            )
    return Dataset(prefix, interactions, items, users, str(folder))


def _header_names(path: Path, fix: str) -> tuple[int, list[str]]:
    line, header = read_header(path, "\t", "utf-8", False, str(path), fix)
    names = [field.split(":", 1)[0].strip() for field in header]
    check_unique_names(names, line, str(path), fix)
    return line, names


def _require(names: list[str], required: list[str], line: int, path: Path, fix: str):
    missing = [name for name in required if name not in names]
    if missing:
        raise DataError(
            f"{path}, line {line}: the header is missing {', '.join(missing)}. "
            f"Expected columns {', '.join(required)}, found {', '.join(names)}. {fix}"
        )


def _read_inter(path: Path, fix: str) -> tuple[int, pd.DataFrame]:
    header_line, names = _header_names(path, fix)
    _require(names, ["user_id", "item_id"], header_line, path, fix)
    kinds = {"user_id": "int", "item_id": "int", "rating": "float", "timestamp": "int"}
    columns = [
        Column(name, names.index(name), kind)
        for name, kind in kinds.items()
        if name in names
    ]
    frame = read_columns(
        path,
        columns,
        delimiter="\t",
        encoding="utf-8",
        field_count=len(names),
        header_line=header_line,
        fix=fix,
    )
    if frame.empty:
        raise DataError(f"{path} contains no data rows. {fix}")

    if "rating" not in frame:
        frame["rating"] = 1.0
    if "timestamp" not in frame:
        frame["timestamp"] = np.arange(len(frame), dtype=np.int64)
    frame = frame[list(kinds)].astype(
        {"user_id": "int64", "item_id": "int64", "rating": "float32"}
    )
    return header_line, frame.astype({"timestamp": "int64"})


def _plain_items(ids: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ids.astype("int64"),
            "title": pd.array([f"item {i}" for i in ids], dtype=str),
            "year": pd.array([pd.NA] * len(ids), dtype="Int64"),
            "genres": pd.array([""] * len(ids), dtype=str),
        }
    )


def _read_items(path: Path, fix: str) -> pd.DataFrame:
    table = read_text_table(path, "\t", ("utf-8",), fix, header=True)
    table.columns = [str(name).split(":", 1)[0].strip() for name in table.columns]
    _require(list(table.columns), ["item_id"], 1, path, fix)
    ids = parse_integers(table["item_id"], "item_id", str(path), fix)

    title_column = next((c for c in ("movie_title", "title") if c in table), None)
    if title_column is None:
        titles = pd.Series([f"item {i}" for i in ids], index=table.index, dtype=str)
        years = pd.Series(pd.NA, index=table.index, dtype="Int64")
    elif "release_year" in table:
        # RecBole 1.2.1 spells the placeholder title of item 267 "unkonwn", where
        # u.item has "unknown".
        titles = table[title_column].str.strip().replace("unkonwn", "unknown")
        # Years are tokens such as "1995", "unkonwn" or "V" (item 1412), so any
        # token that is not all digits means the year is unknown.
        year_text = table["release_year"].str.strip()
        year_text = year_text.where(year_text.str.fullmatch(r"\d+"))
        years = pd.to_numeric(year_text).astype("Int64")
    else:
        titles, years = split_titles(table[title_column])

    genres = table["class"].str.split().str.join("|") if "class" in table else ""
    items = pd.DataFrame(
        {"item_id": ids, "title": titles.astype(str), "year": years, "genres": genres}
    )
    items["genres"] = items["genres"].astype(str)
    return sort_unique(items, "item_id", str(path), fix)


def _read_users(path: Path, fix: str) -> pd.DataFrame:
    table = read_text_table(path, "\t", ("utf-8",), fix, header=True)
    table.columns = [str(name).split(":", 1)[0].strip() for name in table.columns]
    _require(list(table.columns), ["user_id"], 1, path, fix)
    where = str(path)

    def text(name: str) -> pd.Series:
        if name not in table:
            return pd.Series("", index=table.index, dtype=str)
        return table[name].str.strip().astype(str)

    ages = table["age"] if "age" in table else pd.Series("", index=table.index)
    users = pd.DataFrame(
        {
            "user_id": parse_integers(table["user_id"], "user_id", where, fix),
            "age": parse_integers(ages.astype(str), "age", where, fix, nullable=True),
            "gender": text("gender"),
            "occupation": text("occupation"),
            "zip_code": text("zip_code"),
        }
    )
    return sort_unique(users, "user_id", where, fix)


def extract_recbole_wheel(data_dir: Path, target: Path) -> None:
    """Fetch the recbole wheel with pip and put its ml-100k files in ``target``.

    Raises
    ------
    DownloadFailed
        If pip fails or the wheel lacks the files, with the reason as message.
    """
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".recbole.") as temporary:
        download_dir = Path(temporary) / "download"
        staging = Path(temporary) / "ml-100k-recbole"
        download_dir.mkdir()
        staging.mkdir()

        pip_download_recbole(download_dir)
        wheels = sorted(download_dir.glob("recbole-*.whl"))
        if not wheels:
            found = ", ".join(path.name for path in download_dir.iterdir())
            raise DownloadFailed(
                f"pip reported success but downloaded no recbole wheel, only "
                f"{found or 'no files'}"
            )

        names = recbole_names("ml-100k")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                for name in names:
                    with (
                        wheel.open(_WHEEL_FOLDER + name) as source,
                        open(staging / name, "wb") as output,
                    ):
                        shutil.copyfileobj(source, output)
        except (zipfile.BadZipFile, KeyError) as error:
            raise DownloadFailed(
                f"{wheels[0].name} is not a valid recbole wheel: {error}"
            ) from error

        move_into_place(staging, target, names)


def pip_download_recbole(download_dir: Path) -> None:
    """Run ``pip download`` of the recbole wheel into ``download_dir``."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps",
        "--disable-pip-version-check", "--only-binary", ":all:",
        "-d", str(download_dir), RECBOLE_REQUIREMENT,
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
        raise DownloadFailed(f"pip timed out after {_PIP_TIMEOUT_S:.0f} s") from error
    except OSError as error:
        raise DownloadFailed(f"failed to run {sys.executable}: {error}") from error

    if completed.returncode != 0:
        output = (completed.stderr or completed.stdout).strip().splitlines()
        raise DownloadFailed(
            f"pip exited with status {completed.returncode}: " + " / ".join(output[-3:])
        )
