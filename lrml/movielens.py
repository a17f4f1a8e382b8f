"""The MovieLens releases and parsers for their original GroupLens layouts.

=================  ======================================  ==========  ==========
layout             files                                   separator   encoding
=================  ======================================  ==========  ==========
``grouplens``      ``u.data``, ``u.item``, ``u.user``       tab, ``|``  latin-1
``dat`` (1M, 10M)  ``ratings.dat``, ``movies.dat``,         ``::``      latin-1 or
                   ``users.dat`` (1M only)                              UTF-8
``csv`` (20M on)   ``ratings.csv``, ``movies.csv``          ``,``       UTF-8
=================  ======================================  ==========  ==========

Tags, links and genome files are not read.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from lrml.dataset import DataError, Dataset, empty_users
from lrml.fields import parse_integers, sort_unique
from lrml.releases import LAYOUT_FILES, RELEASES
from lrml.tables import (
    Column,
    check_unique_names,
    line_of_row,
    read_columns,
    read_header,
    read_text_table,
)

# Genre flag columns of u.item, in the order of u.genre in ml-100k.zip.
GROUPLENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
# Occupation codes 0 to 20 of users.dat, as listed in the README of ml-1m.zip.
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin",
    "college/grad student", "customer service", "doctor/health care",
    "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed",
    "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip
NO_GENRES = "(no genres listed)"
# The year is four digits in the last parentheses, which end the title:
# "Toy Story (1995)", "Cosmos ( 1980 )", or a range "Fawlty Towers (1975-1979)",
# which gives its first year. "Land Before Time III (1995) (V)" has no year.
_TITLE_YEAR_PATTERN = (
    r"^(?P<title>.*?)\s*\(\s*(?P<year>\d{4})(?:\s*[-\u2013]\s*(?:\d{4})?)?\s*\)$"
)
_RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


def detect_layout(folder: Path) -> str | None:
    """Return the layout whose required files are all in ``folder``, or None."""
    for layout, names in LAYOUT_FILES.items():
        if all((folder / name).is_file() for name in names):
            return layout
    return None


def source_files(folder: Path, layout: str) -> list[Path]:
    """Return the files that the parser of ``layout`` reads in ``folder``."""
    optional = {"grouplens": ("u.genre",), "dat": ("users.dat",), "csv": ()}[layout]
    files = [folder / name for name in LAYOUT_FILES[layout]]
    return files + [folder / name for name in optional if (folder / name).is_file()]


def read_movielens_folder(folder: Path, name: str | None = None) -> Dataset:
    """Parse a MovieLens release folder, whichever its layout.

    Raises
    ------
    DataError
        If the folder matches no layout, or a file is malformed.
    """
    folder = Path(folder)
    layout = detect_layout(folder)
    name = name or folder.name
    if layout == "grouplens":
        return dataclasses.replace(read_grouplens_100k(folder), name=name)
    if layout == "dat":
        return read_movielens_dat(folder, name)
    if layout == "csv":
        return read_movielens_csv(folder, name)

    expected = "; ".join(" + ".join(names) for names in LAYOUT_FILES.values())
    found = ", ".join(sorted(path.name for path in folder.iterdir())) or "nothing"
    raise DataError(
        f"{folder} is not a MovieLens folder. Expected one of these sets of files: "
        f"{expected}. Found {found}."
    )


def _fix(name: str) -> str:
    release = RELEASES.get(name)
    if release is None:
        return "Copy the original file from the MovieLens zip."
    return f"Copy the original file from {release.zip_name} ({release.page})."


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
    fix = _fix("ml-100k")
    ratings = _read_ratings(folder / "u.data", "\t", "latin-1", 0, fix)

    genres = _read_grouplens_genres(folder / "u.genre", fix)
    movies = read_text_table(
        folder / "u.item", "|", ("latin-1",), fix, field_count=5 + len(genres)
    )
    items = _grouplens_items(movies, genres, folder / "u.item", fix)

    people = read_text_table(folder / "u.user", "|", ("latin-1",), fix, field_count=5)
    people.columns = ["user_id", "age", "gender", "occupation", "zip_code"]
    users = _users_table(people, folder / "u.user", fix)

    _check_references(ratings, items, users, folder / "u.data", 0, fix)
    return Dataset("ml-100k", ratings, items, users, str(folder))


def read_movielens_dat(folder: Path, name: str = "ml-1m") -> Dataset:
    """Parse MovieLens 1M or 10M: ``ratings.dat``, ``movies.dat``, ``users.dat``.

    Fields are separated by ``::``. A title may contain ``::`` itself, because
    a movie line is split at its first and last ``::`` only. ``users.dat`` is
    optional (10M has none); its age is the code of an age group, which is the
    group's lower bound except 1 for "under 18". Text is read as UTF-8 when it
    decodes as such, else as latin-1.

    Raises
    ------
    DataError
        If a file is missing, empty or malformed, or a rating refers to an
        unknown user or item.
    """
    folder = Path(folder)
    fix = _fix(name)
    ratings = _read_ratings(folder / "ratings.dat", "::", "latin-1", 0, fix)

    # NOTE: the encoding of ml-10m's .dat files is unconfirmed, so UTF-8 is
    # tried first. A latin-1 file that happens to decode as UTF-8 would get
    # wrong accents.
    movies = read_text_table(
        folder / "movies.dat",
        "::",
        ("utf-8", "latin-1"),
        fix,
        field_count=3,
        split=_split_first_and_last,
    )
    items = _movie_items(movies[0], movies[1], movies[2], folder / "movies.dat", fix)

    users = empty_users()
    users_path = folder / "users.dat"
    if users_path.is_file():
        people = read_text_table(
            users_path, "::", ("utf-8", "latin-1"), fix, field_count=5
        )
        people.columns = ["user_id", "gender", "age", "occupation", "zip_code"]
        users = _users_table(people, users_path, fix)
        codes = users["occupation"].map(_occupation_name)
        users["occupation"] = codes.astype(str)

    _check_references(ratings, items, users, folder / "ratings.dat", 0, fix)
    return Dataset(name, ratings, items, users, str(folder))


def read_movielens_csv(folder: Path, name: str = "ml-latest-small") -> Dataset:
    """Parse a CSV release (20M, 25M, 32M, latest): ``ratings.csv``, ``movies.csv``.

    Columns are found by their header names (``userId``, ``movieId``, ``rating``,
    ``timestamp``; ``movieId``, ``title``, ``genres``). Titles may be quoted and
    contain commas. The releases have no demographics, so ``users`` is empty.

    Raises
    ------
    DataError
        If a file is missing, empty or malformed, lacks a column, or a rating
        refers to a movie that ``movies.csv`` does not list.
    """
    folder = Path(folder)
    fix = _fix(name)
    ratings_path = folder / "ratings.csv"
    header_line, header = read_header(
        ratings_path, ",", "utf-8", True, str(ratings_path), fix
    )
    positions = _find_columns(
        header,
        ("userId", "movieId", "rating", "timestamp"),
        header_line,
        ratings_path,
        fix,
    )
    columns = [
        Column(name, position, kind, label)
        for name, kind, label, position in zip(
            _RATING_COLUMNS,
            ("int", "int", "float", "int"),
            ("userId", "movieId", "rating", "timestamp"),
            positions,
        )
    ]
    ratings = _typed_ratings(
        read_columns(
            ratings_path,
            columns,
            delimiter=",",
            encoding="utf-8",
            field_count=len(header),
            header_line=header_line,
            quoting=True,
            fix=fix,
        )
    )

    movies_path = folder / "movies.csv"
    header_line, header = read_header(
        movies_path, ",", "utf-8", True, str(movies_path), fix
    )
    positions = _find_columns(
        header, ("movieId", "title", "genres"), header_line, movies_path, fix
    )
    movies = read_columns(
        movies_path,
        [
            Column("item_id", positions[0], "text", "movieId"),
            Column("title", positions[1], "text"),
            Column("genres", positions[2], "text"),
        ],
        delimiter=",",
        encoding="utf-8",
        field_count=len(header),
        header_line=header_line,
        quoting=True,
        fix=fix,
    )
    # Row i of the table is line header_line + 1 + i when no line is blank.
    movies.index = movies.index + header_line + 1
    items = _movie_items(
        movies["item_id"], movies["title"], movies["genres"], movies_path, fix
    )

    users = empty_users()
    _check_references(ratings, items, users, ratings_path, header_line, fix)
    return Dataset(name, ratings, items, users, str(folder))


def _find_columns(
    header: list[str], names: tuple[str, ...], line: int, path: Path, fix: str
) -> list[int]:
    check_unique_names(header, line, str(path), fix)
    missing = [name for name in names if name not in header]
    if missing:
        raise DataError(
            f"{path}, line {line}: the header is missing {', '.join(missing)}. "
            f"Expected columns {', '.join(names)}, found {', '.join(header)}. {fix}"
        )
    return [header.index(name) for name in names]


def _read_ratings(
    path: Path, delimiter: str, encoding: str, header_line: int, fix: str
) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path} not found. {fix}")

    columns = [
        Column(name, position, kind)
        for position, (name, kind) in enumerate(
            zip(_RATING_COLUMNS, ("int", "int", "float", "int"))
        )
    ]
    ratings = read_columns(
        path,
        columns,
        delimiter=delimiter,
        encoding=encoding,
        field_count=4,
        header_line=header_line,
        fix=fix,
    )
    if ratings.empty:
        raise DataError(f"{path} contains no data rows. {fix}")
    return _typed_ratings(ratings)


def _typed_ratings(ratings: pd.DataFrame) -> pd.DataFrame:
    return ratings.astype(
        {"user_id": "int64", "item_id": "int64", "rating": "float32"}
    ).astype({"timestamp": "int64"})


def _split_first_and_last(line: str) -> list[str]:
    """Split ``id::title::genres`` at the first and last ``::`` only."""
    head, separator, rest = line.partition("::")
    if not separator:
        return [head]
    middle, separator, tail = rest.rpartition("::")
    if not separator:
        return [head, rest]
    return [head, middle, tail]


def split_titles(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Split ``"Title (1995)"`` into the title and an Int64 year (``<NA>`` if none).

    A title whose last parentheses hold no year is kept whole.
    """
    stripped = raw.str.strip()
    parts = stripped.str.extract(_TITLE_YEAR_PATTERN)
    has_year = parts["year"].notna()
    titles = parts["title"].where(has_year, stripped).astype(str)
    years = pd.to_numeric(parts["year"]).astype("Int64")
    return titles, years


def _movie_items(
    ids: pd.Series, titles: pd.Series, genres: pd.Series, path: Path, fix: str
) -> pd.DataFrame:
    title, year = split_titles(titles)
    genres = genres.str.strip()
    items = pd.DataFrame(
        {
            "item_id": parse_integers(ids, "movie id", str(path), fix),
            "title": title,
            "year": year,
            "genres": genres.where(genres != NO_GENRES, "").astype(str),
        }
    )
    return sort_unique(items, "item_id", str(path), fix)


def _read_grouplens_genres(path: Path, fix: str) -> tuple[str, ...]:
    if not path.is_file():
        return GROUPLENS_GENRES

    table = read_text_table(path, "|", ("latin-1",), fix, field_count=2)
    positions = parse_integers(table[1], "genre index", str(path), fix)
    if sorted(positions) != list(range(len(table))):
        raise DataError(
            f"{path}: genre indexes must be 0 to {len(table) - 1}, "
            f"found {positions.tolist()}. {fix}"
        )
    return tuple(table[0].to_numpy()[np.argsort(positions.to_numpy())])


def _grouplens_items(
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
    genre_column = pd.Series(genre_strings, index=movies.index, dtype=str)
    return _movie_items(movies[0], movies[1], genre_column, path, fix)


def _users_table(people: pd.DataFrame, path: Path, fix: str) -> pd.DataFrame:
    where = str(path)
    users = pd.DataFrame(
        {
            "user_id": parse_integers(people["user_id"], "user_id", where, fix),
            "age": parse_integers(people["age"], "age", where, fix, nullable=True),
            "gender": people["gender"].str.strip().astype(str),
            "occupation": people["occupation"].str.strip().astype(str),
            "zip_code": people["zip_code"].str.strip().astype(str),
        }
    )
    return sort_unique(users, "user_id", where, fix)


def _occupation_name(code: str) -> str:
    if code.isdigit() and int(code) < len(ML1M_OCCUPATIONS):
        return ML1M_OCCUPATIONS[int(code)]
    return code


def _check_references(
    ratings: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    path: Path,
    header_line: int,
    fix: str,
) -> None:
    """Raise unless every rating names a listed item, and a listed user if any are."""
    tables = [("item_id", items, "movie")]
    if not users.empty:
        tables.append(("user_id", users, "user"))

    for column, table, kind in tables:
        unknown = ~ratings[column].isin(table[column]).to_numpy()
        if unknown.any():
            row = int(unknown.argmax())
            line = line_of_row(path, row, header_line)
            raise DataError(
                f"{path}, line {line}: {column} {ratings[column].iloc[row]} is not "
                f"in the {kind} file, and neither are those of {unknown.sum() - 1} "
                f"other ratings. {fix}"
            )
