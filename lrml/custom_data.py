"""The user's own interaction files: CSV, TSV or other delimited text, or parquet.

A file needs a user column and an item column, both of integer ids. Rating,
timestamp, title and genres columns are optional. Columns are found by name
(``user_id``, ``userId``, ``user``, ``movieId``, ``item``, ``score``, ``time``
and other common spellings, see `COLUMN_ALIASES`) or chosen explicitly. A text
file whose first line is all numbers has no header, and its columns are taken
in the order of MovieLens ``u.data``: user, item, rating, timestamp.

Without a rating column every row counts as a rating of 1. Without a timestamp
column the line order is used as time, so a user's last line counts as their
latest interaction in the leave-one-out split.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lrml.columns import (
    ROLES,
    assign_roles,
    items_table,
    standard_columns,
)
from lrml.dataset import DataError, Dataset, check_interaction_counts, empty_users
from lrml.tables import (
    Column,
    check_unique_names,
    decoded_lines,
    line_of_row,
    read_columns,
)

SEPARATORS = (",", "\t", ";", "|", "::")
TEXT_SUFFIXES = (".csv", ".tsv", ".tab", ".txt", ".dat")
PARQUET_SUFFIXES = (".parquet", ".pq")
_SUFFIX_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".dat": "::"}
_SNIFF_LINES = 20
_FIX = (
    "Expected a header line naming a user and an item column, such as "
    "'user_id,item_id,rating,timestamp', and one line per interaction."
)


def read_interactions_file(
    path: Path,
    *,
    columns: dict[str, str] | None = None,
    sep: str | None = None,
    encoding: str = "utf-8",
    label: str | None = None,
) -> Dataset:
    """Parse a user's interaction file into a `Dataset`.

    Parameters
    ----------
    path : pathlib.Path
        A ``.parquet`` or ``.pq`` file, or delimited text of any other suffix.
    columns : dict, optional
        Explicit column names by role, such as ``{"user": "reader", "item":
        "book"}``. Roles are those of `ROLES`. Other roles are found by name.
    sep : str, optional
        Field separator of a text file. By default the suffix's usual one
        (``.csv`` comma, ``.tsv`` tab) if the first line splits into two or more
        fields with it, else the first of `SEPARATORS` that does.
    encoding : str
        ``"utf-8"`` (default) or ``"latin-1"``.
    label : str, optional
        Name of the file in error messages, such as an upload's original name.

    Raises
    ------
    DataError
        If the file is empty, unreadable or malformed, lacks a user or item
        column, contains a non-integer id, a non-finite rating or an invalid
        timestamp, or has fewer than two users or items. The message names the
        file, the line (or row) or column, what was expected and what was found.
    """
    path = Path(path)
    where = label or str(path)
    if not path.is_file():
        raise DataError(
            f"{where} not found. Give the path of a CSV, TSV or parquet file."
        )
    if path.stat().st_size == 0:
        raise DataError(f"{where} is empty. {_FIX}")
    unknown_roles = sorted(set(columns or {}) - set(ROLES))
    if unknown_roles:
        raise ValueError(
            f"columns has unknown roles {', '.join(unknown_roles)}. "
            f"Use {', '.join(ROLES)}."
        )

    if path.suffix.lower() in PARQUET_SUFFIXES:
        frame = _read_parquet(path, columns or {}, where)
    else:
        frame = _read_text(path, columns or {}, sep, encoding, where)

    items = items_table(frame)
    interactions = frame[["user_id", "item_id", "rating", "timestamp"]]
    check_interaction_counts(interactions, where)
    return Dataset(
        path.name, interactions.reset_index(drop=True), items, empty_users(), str(path)
    )


def _read_text(
    path: Path, chosen: dict[str, str], sep: str | None, encoding: str, where: str
) -> pd.DataFrame:
    sample = _sample_lines(path, encoding, where)
    if not sample:
        raise DataError(f"{where} contains only blank lines. {_FIX}")
    header_number, header_text = sample[0]
    separator = sep or _sniff_separator(path, header_text)
    fields = _split(header_text, separator)
    if len(fields) < 2:
        raise DataError(_separator_message(where, header_number, header_text, sep))

    header = [field.strip() for field in fields]
    if all(_is_number(field) for field in header):
        if chosen:
            raise DataError(
                f"{where}, line {header_number}: expected a header line to choose "
                f"columns {', '.join(chosen.values())} by name, found the data "
                f"line {header_text!r}. Add a header line."
            )
        positions = {
            role: index
            for index, role in enumerate(("user", "item", "rating", "timestamp"))
            if index < len(header)
        }
        names = [f"field {index + 1}" for index in range(len(header))]
        header_line = 0
        first_data = header
    else:
        check_unique_names(header, header_number, where, "")
        positions = assign_roles(header, chosen, header_number, where)
        names = header
        header_line = header_number
        first_data = _split(sample[1][1], separator) if len(sample) > 1 else []

    kinds = {
        "user": "int",
        "item": "int",
        "rating": "float",
        "title": "text",
        "genres": "text",
    }
    kinds["timestamp"] = _timestamp_kind(first_data, positions.get("timestamp"))
    to_read = [
        Column(role, position, kinds[role], names[position])
        for role, position in positions.items()
    ]
    frame = read_columns(
        path,
        to_read,
        delimiter=separator,
        encoding=encoding,
        field_count=len(header),
        header_line=header_line,
        quoting=len(separator) == 1,
        fix="Correct or remove that line.",
        where=where,
    )
    if frame.empty:
        raise DataError(f"{where} has a header line but no data lines. {_FIX}")

    def locate(row: int) -> str:
        return f"line {line_of_row(path, row, header_line)}"

    return standard_columns(frame, positions, names, where, locate)


def _sample_lines(path: Path, encoding: str, where: str) -> list[tuple[int, str]]:
    sample = []
    for number, line in enumerate(decoded_lines(path, encoding, where, ""), start=1):
        if line.strip():
            sample.append((number, line.rstrip("\r\n")))
        if len(sample) == _SNIFF_LINES:
            break
    return sample


def _split(line: str, separator: str) -> list[str]:
    if len(separator) > 1:
        return line.split(separator)
    return next(csv.reader([line], delimiter=separator))


def _sniff_separator(path: Path, line: str) -> str:
    """Return the suffix's separator if it splits ``line``, else the first that does."""
    preferred = _SUFFIX_SEPARATORS.get(path.suffix.lower())
    candidates = ([preferred] if preferred else []) + list(SEPARATORS)
    for candidate in candidates:
        if len(_split(line, candidate)) >= 2:
            return candidate
    return preferred or ","


def _separator_message(where: str, number: int, line: str, sep: str | None) -> str:
    shown = line if len(line) <= 80 else line[:77] + "..."
    others = [s for s in SEPARATORS if s != sep and len(_split(line, s)) >= 2]
    if sep is not None and others:
        return (
            f"{where}, line {number}: expected fields separated by {sep!r}, found "
            f"one field {shown!r}. The line splits at {others[0]!r}, so choose that "
            f"separator."
        )
    return (
        f"{where}, line {number}: expected at least two fields (user and item) "
        f"separated by ',', tab, ';', '|' or '::', found one field {shown!r}. "
        f"Save the file as CSV or TSV."
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _timestamp_kind(first_row: list[str], position: int | None) -> str:
    """Return how to read the timestamp column, judged by its first value.

    Integers stay exact as int64. Fractional Unix seconds are read as floats,
    and anything else as text holding dates.
    """
    if position is None or position >= len(first_row):
        return "int"
    value = first_row[position].strip()
    if re.fullmatch(r"[+-]?\d+", value):
        return "int"
    return "float" if _is_number(value) else "text"


def _read_parquet(path: Path, chosen: dict[str, str], where: str) -> pd.DataFrame:
    try:
        names = list(pq.read_schema(path).names)
    except (pa.ArrowException, OSError) as error:
        raise DataError(
            f"{where} is not a valid parquet file: {error}. Export it again, or "
            "save it as CSV."
        ) from error

    check_unique_names(names, 1, where + " (schema)", "")
    positions = assign_roles(names, chosen, 1, where + " (schema)")
    table = pq.read_table(path, columns=[names[p] for p in positions.values()])
    raw = table.to_pandas()
    raw.columns = list(positions)
    if raw.empty:
        raise DataError(f"{where} contains no interactions. {_FIX}")

    frame = pd.DataFrame(index=raw.index)
    for role in positions:
        label = names[positions[role]]
        if role in ("user", "item"):
            frame[role] = _parquet_integers(raw[role], label, where)
        elif role == "rating":
            frame[role] = _parquet_floats(raw[role], label, where)
        else:
            frame[role] = raw[role]

    def locate(row: int) -> str:
        return f"row {row + 1}"

    return standard_columns(frame, positions, names, where, locate)


def _parquet_integers(values: pd.Series, label: str, where: str) -> pd.Series:
    numbers = pd.to_numeric(
        values.astype(object).where(values.notna()), errors="coerce"
    )
    invalid = (numbers.isna() | (numbers % 1 != 0)).to_numpy()
    if invalid.any():
        row = int(invalid.argmax())
        raise DataError(
            f"{where}, row {row + 1}: {label} must be an integer id, found "
            f"{values.iloc[row]!r}. Map the ids to integers first."
        )
    return numbers.astype("int64")


def _parquet_floats(values: pd.Series, label: str, where: str) -> pd.Series:
    numbers = pd.to_numeric(
        values.astype(object).where(values.notna()), errors="coerce"
    )
    invalid = ~np.isfinite(numbers.to_numpy(np.float64))
    if invalid.any():
        row = int(invalid.argmax())
        raise DataError(
            f"{where}, row {row + 1}: {label} must be a finite number, found "
            f"{values.iloc[row]!r}."
        )
    return numbers.astype("float32")


def sanitise_file_name(name: str) -> str:
    """Return ``name`` reduced to a safe base name such as ``my_ratings.csv``.

    Folders, ``..``, control characters and anything but letters, digits, ``.``,
    ``_`` and ``-`` are removed, so the result never leaves the folder it is
    joined to.

    Raises
    ------
    DataError
        If the suffix is not one of `TEXT_SUFFIXES` or `PARQUET_SUFFIXES`.
    """
    base = re.split(r"[\\/]", name)[-1]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode()
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base)
    stem, dot, suffix = base.rpartition(".")
    suffix = f".{suffix.lower()}" if dot else ""
    if suffix not in TEXT_SUFFIXES + PARQUET_SUFFIXES:
        allowed = ", ".join(TEXT_SUFFIXES + PARQUET_SUFFIXES)
        raise DataError(
            f"{name!r}: expected a file name ending in {allowed}, found "
            f"{suffix or 'no suffix'}. Rename the file."
        )
    stem = stem.strip("._-")[:60] or "upload"
    return stem + suffix
