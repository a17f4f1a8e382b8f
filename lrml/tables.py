"""Reading delimited text files quickly, with errors that name the line.

`read_columns` reads large tables such as ratings with pyarrow's CSV reader.
When pyarrow rejects the file, or a value breaks a rule that pyarrow does not
check (a rating must be finite), the file is read again line by line. That pass
either raises a `DataError` that names the first bad line, or returns the same
table, because pyarrow rejects a few values that are valid here (an integral
float such as ``5.0`` in an integer column).

`read_text_table` reads small tables such as movie lists line by line, so that
titles never go through CSV quoting rules.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from lrml.dataset import DataError
from lrml.fields import parse_floats, parse_integers

# Lines that the line-by-line reader converts at once, which bounds its memory.
_CHUNK_LINES = 1_000_000
_PYARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "text": pa.string()}
# Larger integers are not exact in float64, so such ids stay on the slow path.
_MAX_EXACT_FLOAT_INTEGER = 2**53


@dataclasses.dataclass(frozen=True)
class Column:
    """One column to read from a delimited file.

    Attributes
    ----------
    name : str
        Name of the column in the returned DataFrame.
    position : int
        0-based position of the field in each line.
    kind : str
        ``"int"`` (int64, integral floats accepted), ``"float"`` (finite float64)
        or ``"text"`` (str).
    label : str, optional
        Name used in error messages, such as the file's own column name.
        Defaults to ``name``.
    """

    name: str
    position: int
    kind: str
    label: str | None = None

    @property
    def message_name(self) -> str:
        return self.label or self.name


def read_columns(
    path: Path,
    columns: list[Column],
    *,
    delimiter: str,
    encoding: str,
    field_count: int,
    header_line: int = 0,
    quoting: bool = False,
    fix: str = "",
    where: str | None = None,
) -> pd.DataFrame:
    """Read ``columns`` of a delimited file, checking every line.

    Parameters
    ----------
    path : pathlib.Path
        The file.
    columns : list of Column
        Fields to return, in this order.
    delimiter : str
        One character, or ``"::"`` as in MovieLens 1M and 10M.
    encoding : str
        ``"utf-8"`` or ``"latin-1"``.
    field_count : int
        Number of fields every non-blank line must have.
    header_line : int
        1-based line number of the header line, or 0 for a file without one.
        Lines up to and including it are skipped.
    quoting : bool
        Whether fields may be quoted with ``"`` as in CSV. Needs a one-character
        delimiter.
    fix : str
        Sentence appended to error messages, saying how to repair the file.
    where : str, optional
        Name of the file in error messages. Defaults to ``str(path)``.

    Returns
    -------
    pandas.DataFrame
        One row per non-blank data line, in file order: int64, float64 or str
        columns.

    Raises
    ------
    DataError
        If a line has another number of fields, a value does not convert, or
        the file does not decode, naming the line.
    """
    where = where or str(path)
    try:
        frame = _read_with_pyarrow(
            path, columns, delimiter, encoding, field_count, header_line, quoting
        )
    except (pa.ArrowInvalid, _SlowPathNeeded):
        frame = None

    if frame is None:
        reader = _LineReader(
            path, columns, delimiter, encoding, field_count, header_line, quoting
        )
        frame = reader.read(where, fix)
    return frame


class _SlowPathNeeded(Exception):
    """The pyarrow reader cannot decide on this file, so read it line by line."""


def _read_with_pyarrow(
    path: Path,
    columns: list[Column],
    delimiter: str,
    encoding: str,
    field_count: int,
    header_line: int,
    quoting: bool,
) -> pd.DataFrame:
    source: Path | io.BytesIO = path
    if len(delimiter) > 1:
        # pyarrow takes one-character delimiters only. MovieLens 1M and 10M
        # ratings contain no tabs, so "::" becomes a tab in a copy in memory.
        data = path.read_bytes()
        if b"\t" in data or delimiter != "::":
            raise _SlowPathNeeded
        source = io.BytesIO(data.replace(b"::", b"\t"))
        delimiter = "\t"

    def read(types: dict[str, pa.DataType]) -> pa.Table:
        return pa_csv.read_csv(
            source,
            read_options=pa_csv.ReadOptions(
                column_names=[f"f{i}" for i in range(field_count)],
                skip_rows=header_line,
                encoding="utf8" if encoding == "utf-8" else encoding,
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter=delimiter,
                quote_char='"' if quoting else False,
                ignore_empty_lines=True,
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types=types,
                include_columns=[f"f{column.position}" for column in columns],
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )

    types = {f"f{c.position}": _PYARROW_TYPES[c.kind] for c in columns}
    try:
        table = read(types)
    except pa.ArrowInvalid as error:
        if "conversion error to int64" not in str(error):
            raise
        # Integral floats such as "881250949.0" are valid integers here.
        if isinstance(source, io.BytesIO):
            source.seek(0)
        float_types = {
            name: pa.float64() if kind == pa.int64() else kind
            for name, kind in types.items()
        }
        table = read(float_types)

    frame = {}
    for column in columns:
        chunked = table.column(f"f{column.position}")
        if column.kind == "text":
            frame[column.name] = chunked.to_pandas()
            continue
        values = chunked.to_numpy()
        if not np.isfinite(values).all():
            raise _SlowPathNeeded
        if column.kind == "int" and values.dtype != np.int64:
            exact = (values % 1 == 0) & (np.abs(values) < _MAX_EXACT_FLOAT_INTEGER)
            if not exact.all():
                raise _SlowPathNeeded
            values = values.astype(np.int64)
        frame[column.name] = values
    return pd.DataFrame(frame)


@dataclasses.dataclass
class _LineReader:
    """Reader that converts a file in chunks of lines and names the first bad line."""

    path: Path
    columns: list[Column]
    delimiter: str
    encoding: str
    field_count: int
    header_line: int
    quoting: bool

    def read(self, where: str, fix: str) -> pd.DataFrame:
        numbers: list[int] = []
        fields: list[list[str]] = [[] for _ in self.columns]
        parts: list[pd.DataFrame] = []
        header: list[str] | None = None

        for number, values in self._rows(where, fix):
            if number <= self.header_line:
                header = values
                continue
            if len(values) != self.field_count:
                raise DataError(
                    f"{where}, line {number}: expected {self.field_count} fields "
                    f"separated by {self.delimiter!r}, found {len(values)}. {fix}"
                )
            if values == header:
                raise DataError(
                    f"{where}, line {number}: expected a data row, found a repeat "
                    f"of the header line {self.header_line}. Remove the repeated "
                    f"header, which concatenating two files leaves behind. {fix}"
                )
            numbers.append(number)
            for target, column in zip(fields, self.columns):
                target.append(values[column.position])
            if len(numbers) == _CHUNK_LINES:
                parts.append(self._convert(numbers, fields, where, fix))
                numbers, fields = [], [[] for _ in self.columns]

        if numbers or not parts:
            parts.append(self._convert(numbers, fields, where, fix))
        return pd.concat(parts, ignore_index=True)

    def _rows(self, where: str, fix: str) -> Iterator[tuple[int, list[str]]]:
        """Yield ``(line number, fields)`` for each non-blank line."""
        lines = decoded_lines(self.path, self.encoding, where, fix)
        if self.quoting:
            reader = csv.reader(lines, delimiter=self.delimiter, strict=True)
            try:
                for row in reader:
                    if row and any(value.strip() for value in row):
                        yield reader.line_num, row
            except csv.Error as error:
                raise DataError(
                    f"{where}, line {reader.line_num}: expected CSV fields, "
                    f"found malformed quoting ({error}). {fix}"
                ) from error
            return

        for number, line in enumerate(lines, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line.split(self.delimiter)

    def _convert(
        self, numbers: list[int], fields: list[list[str]], where: str, fix: str
    ) -> pd.DataFrame:
        index = pd.Index(numbers, dtype="int64")
        frame = {}
        for column, values in zip(self.columns, fields):
            text = pd.Series(values, index=index, dtype=str)
            if column.kind == "int":
                parsed = parse_integers(text, column.message_name, where, fix)
            elif column.kind == "float":
                parsed = parse_floats(text, column.message_name, where, fix)
            else:
                parsed = text
            frame[column.name] = parsed.to_numpy()
        return pd.DataFrame(frame)


def decoded_lines(path: Path, encoding: str, where: str, fix: str) -> Iterator[str]:
    """Yield the lines of ``path`` decoded, each with its line ending.

    Raises
    ------
    DataError
        At the first line that does not decode, naming the line and the byte.
    """
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            if number == 1:
                # Spreadsheet programs often start UTF-8 files with a byte order mark.
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            try:
                yield raw.decode(encoding)
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{where}, line {number}: expected {encoding} text, found the "
                    f"byte {raw[error.start : error.start + 1]!r} at column "
                    f"{error.start + 1}. {fix or _encoding_fix(encoding)}"
                ) from error


def _encoding_fix(encoding: str) -> str:
    if encoding == "utf-8":
        return "Save the file as UTF-8, or read it as latin-1."
    return "Save the file in that encoding."


def read_text_table(
    path: Path,
    sep: str,
    encodings: tuple[str, ...],
    fix: str,
    *,
    field_count: int | None = None,
    header: bool = False,
    split: Callable[[str], list[str]] | None = None,
) -> pd.DataFrame:
    """Read a small delimited file as str columns indexed by 1-based line number.

    The file is decoded with the first of ``encodings`` that decodes all of it.
    Blank lines are skipped. Every other line must have ``field_count`` fields,
    or as many as the first line when ``field_count`` is None. ``split`` replaces
    ``str.split(sep)``, for files whose last or middle field may contain ``sep``.
    No quoting applies, so a title may start with ``"``.
    """
    if not path.is_file():
        raise DataError(f"{path} not found. {fix}")

    text = _decode_whole(path, encodings, fix)
    split = split or (lambda line: line.split(sep))
    # str.splitlines would also split at "\x85", which latin-1 decodes from a
    # plain byte, so split at newlines only.
    numbered = [
        (number, split(line.rstrip("\r")))
        for number, line in enumerate(text.split("\n"), start=1)
        if line.strip()
    ]
    if len(numbered) <= int(header):
        raise DataError(f"{path} contains no data rows. {fix}")

    expected = field_count or len(numbered[0][1])
    for number, fields in numbered:
        if len(fields) != expected:
            raise DataError(
                f"{path}, line {number}: expected {expected} fields separated by "
                f"{sep!r}, found {len(fields)}. {fix}"
            )

    body = numbered[int(header) :]
    names = numbered[0][1] if header else list(range(expected))
    frame = pd.DataFrame([fields for _, fields in body], columns=names, dtype=str)
    frame.index = pd.Index([number for number, _ in body], dtype="int64")
    return frame


def _decode_whole(path: Path, encodings: tuple[str, ...], fix: str) -> str:
    data = path.read_bytes()
    for encoding in encodings[:-1]:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue

    encoding = encodings[-1]
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(
            f"{path}, line {line}: expected {encoding} text, found the byte "
            f"{data[error.start : error.start + 1]!r}. {fix}"
        ) from error


def read_header(
    path: Path, delimiter: str, encoding: str, quoting: bool, where: str, fix: str
) -> tuple[int, list[str]]:
    """Return the line number (1-based) and stripped fields of the first non-blank line.

    Raises
    ------
    DataError
        If the file does not exist or has no non-blank line.
    """
    if not path.is_file():
        raise DataError(f"{where} not found. {fix}")

    for number, line in enumerate(decoded_lines(path, encoding, where, fix), start=1):
        if not line.strip():
            continue
        if quoting:
            fields = next(csv.reader([line], delimiter=delimiter))
        else:
            fields = line.rstrip("\r\n").split(delimiter)
        return number, [field.strip() for field in fields]

    raise DataError(
        f"{where} is empty. Expected a header line and at least one data row. {fix}"
    )


def check_unique_names(names: list[str], line: int, where: str, fix: str) -> None:
    """Raise DataError if a header line names one column twice."""
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if name in seen:
            raise DataError(
                f"{where}, line {line}: expected each column name once, found "
                f"{name!r} as columns {seen[name]} and {position}. Rename or remove "
                f"one of them. {fix}"
            )
        seen[name] = position


def line_of_row(path: Path, row: int, header_line: int = 0) -> int:
    """Return the 1-based line number of data row ``row`` (0-based), skipping blanks.

    Counts physical lines, so it is exact for files without quoted line breaks,
    such as ratings files.
    """
    seen = -1
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            if number <= header_line or not raw.strip():
                continue
            seen += 1
            if seen == row:
                return number
    raise IndexError(f"{path} has no data row {row}")
