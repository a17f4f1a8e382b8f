"""Tests for lrml.movielens: the GroupLens layouts of every MovieLens release."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lrml.dataset import DataError
from lrml.movielens import (
    GROUPLENS_GENRES,
    RELEASES,
    detect_layout,
    read_grouplens_100k,
    read_movielens_csv,
    read_movielens_dat,
    read_movielens_folder,
    split_titles,
)
from lrml.split import build_vocabularies
from tests.data_fixtures import (
    EXPECTED_INTERACTIONS,
    EXPECTED_USERS,
    MOVIES_DAT,
    U_GENRE,
    genre_flags,
    write_csv_release,
    write_ml1m,
    write_ml100k,
)

EXPECTED_GENRES = [
    "Animation|Children's|Comedy",
    "unknown",
    "Drama|Musical",
    "Animation|Children's",
    "",
]
STR = pd.StringDtype(na_value=np.nan)


def _replace_line(path: Path, line_number: int, text: str, encoding="latin-1") -> None:
    lines = path.read_text(encoding=encoding).splitlines()
    lines[line_number - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding=encoding)


# MovieLens 100K ---------------------------------------------------------------


def test_grouplens_interactions_and_users(tmp_path):
    dataset = read_grouplens_100k(write_ml100k(tmp_path / "ml-100k"))

    assert dataset.name == "ml-100k"
    assert dataset.source == str(tmp_path / "ml-100k")
    pd.testing.assert_frame_equal(dataset.interactions, EXPECTED_INTERACTIONS)
    pd.testing.assert_frame_equal(dataset.users, EXPECTED_USERS)


def test_grouplens_items(tmp_path):
    items = read_grouplens_100k(write_ml100k(tmp_path / "ml-100k")).items

    assert list(items.columns) == ["item_id", "title", "year", "genres"]
    assert items["item_id"].dtype == np.dtype("int64")
    assert items["title"].dtype == STR
    assert items["year"].dtype == pd.Int64Dtype()
    assert items["genres"].dtype == STR
    assert items["item_id"].tolist() == [1, 267, 543, 1412, 1682]
    assert items["title"].tolist() == [
        "Toy Story",
        "unknown",
        "Misérables, Les",
        "Land Before Time III: The Time of the Great Giving (1995) (V)",
        '"Scream" of Stone (Schrei aus Stein)',
    ]
    assert items["year"].tolist() == [1995, pd.NA, 1995, pd.NA, 1991]
    assert items["genres"].tolist() == EXPECTED_GENRES


def test_grouplens_without_genre_file(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k", genre_file=False)

    assert read_grouplens_100k(folder).items["genres"].tolist() == EXPECTED_GENRES


def test_grouplens_genre_names_from_file(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k")
    # Reversed line order, but each name keeps its index.
    lines = U_GENRE.replace("Children's", "Kids").splitlines()
    (folder / "u.genre").write_text("\n".join(reversed(lines)) + "\n")

    items = read_grouplens_100k(folder).items

    assert items["genres"].tolist()[0] == "Animation|Kids|Comedy"


def test_grouplens_crlf_line_endings(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k")
    for name in ("u.data", "u.user"):
        path = folder / name
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))

    dataset = read_grouplens_100k(folder)

    pd.testing.assert_frame_equal(dataset.interactions, EXPECTED_INTERACTIONS)
    pd.testing.assert_frame_equal(dataset.users, EXPECTED_USERS)


@pytest.mark.parametrize(
    ("file_name", "line_number", "text", "message"),
    [
        ("u.data", 2, "7\t1682\t3", r"u\.data, line 2: expected 4 fields .*found 3"),
        ("u.data", 3, "10\t543\t5\t1\t2", r"u\.data, line 3: expected 4 .*found 5"),
        ("u.data", 4, "3,267,1,880606923", r"u\.data, line 4: expected 4 .*found 1"),
        (
            "u.data",
            1,
            "x10\t1\t4\t1",
            r"u\.data, line 1: user_id must be an integer, found 'x10'",
        ),
        (
            "u.data",
            4,
            "3\t267\tgood\t1",
            r"u\.data, line 4: rating must be a finite number, found 'good'",
        ),
        (
            "u.data",
            4,
            "3\t267\tnan\t1",
            r"u\.data, line 4: rating must be a finite number, found 'nan'",
        ),
        (
            "u.data",
            5,
            "7\t543\t2\t12.5",
            r"u\.data, line 5: timestamp must be an integer, found '12\.5'",
        ),
        (
            "u.data",
            5,
            "7\t999\t2\t1",
            r"u\.data, line 5: item_id 999 is not in the movie file",
        ),
        (
            "u.data",
            5,
            "8\t543\t2\t1",
            r"u\.data, line 5: user_id 8 is not in the user file",
        ),
        (
            "u.user",
            2,
            "3|old|M|writer|T8H1N",
            r"u\.user, line 2: age must be an integer, found 'old'",
        ),
        (
            "u.user",
            3,
            "10|24|M|technician|01002",
            r"u\.user, line 3: user_id 10 appears twice",
        ),
        (
            "u.item",
            3,
            f"267|unknown||||{genre_flags()}|0",
            r"u\.item, line 3: expected 24 fields",
        ),
        (
            "u.item",
            3,
            f"267|unknown||||{genre_flags()[:-1]}x",
            r"u\.item, line 3: genre flags must be 0 or 1",
        ),
        (
            "u.genre",
            1,
            "unknown|zero",
            r"u\.genre, line 1: genre index must be an integer",
        ),
    ],
    ids=[
        "short-row",
        "long-row",
        "wrong-separator",
        "text-user-id",
        "text-rating",
        "nan-rating",
        "fractional-timestamp",
        "unknown-item",
        "unknown-user",
        "text-age",
        "duplicate-user",
        "extra-genre-flag",
        "invalid-genre-flag",
        "text-genre-index",
    ],
)
def test_grouplens_malformed_line(tmp_path, file_name, line_number, text, message):
    folder = write_ml100k(tmp_path / "ml-100k")
    _replace_line(folder / file_name, line_number, text)

    with pytest.raises(DataError, match=message) as caught:
        read_grouplens_100k(folder)

    assert "Copy the original file from ml-100k.zip" in str(caught.value)


def test_grouplens_line_number_after_blank_lines(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k")
    path = folder / "u.data"
    lines = path.read_text().splitlines()
    lines[4] = "7\t999\t2\t1"
    path.write_text("\n\n" + "\n".join(lines) + "\n")

    with pytest.raises(DataError, match=r"u\.data, line 7: item_id 999 is not"):
        read_grouplens_100k(folder)


@pytest.mark.parametrize("file_name", ["u.data", "u.item", "u.user"])
def test_grouplens_missing_file(tmp_path, file_name):
    folder = write_ml100k(tmp_path / "ml-100k")
    (folder / file_name).unlink()

    with pytest.raises(DataError, match=rf"{file_name} not found\. Copy the original"):
        read_grouplens_100k(folder)


@pytest.mark.parametrize("file_name", ["u.data", "u.user"])
@pytest.mark.parametrize("content", ["", "\n\n"])
def test_grouplens_empty_file(tmp_path, file_name, content):
    folder = write_ml100k(tmp_path / "ml-100k")
    (folder / file_name).write_text(content)

    with pytest.raises(DataError, match=rf"u\.{file_name[2:]} contains no data rows"):
        read_grouplens_100k(folder)


# MovieLens 1M and 10M ------------------------------------------------------------


def test_dat_interactions(tmp_path):
    dataset = read_movielens_dat(write_ml1m(tmp_path / "ml-1m"), "ml-1m")

    interactions = dataset.interactions
    assert dataset.name == "ml-1m"
    assert interactions["user_id"].tolist() == [6040, 6040, 12, 12, 12]
    assert interactions["item_id"].tolist() == [3952, 2, 3952, 7, 2]
    assert interactions["rating"].tolist() == [5.0, 3.0, 4.0, 1.0, 2.0]
    assert interactions["timestamp"].tolist()[0] == 956703932
    assert dict(interactions.dtypes.astype(str)) == {
        "user_id": "int64",
        "item_id": "int64",
        "rating": "float32",
        "timestamp": "int64",
    }


def test_dat_titles_with_colons_and_accents(tmp_path):
    items = read_movielens_dat(write_ml1m(tmp_path / "ml-1m")).items

    assert items["item_id"].tolist() == [2, 7, 999, 3952]
    assert items["title"].tolist() == [
        "Star Wars: Episode IV - A New Hope",
        "Two::Colons: A Title",
        "Never Rated",
        "Misérables, Les",
    ]
    assert items["year"].tolist() == [1977, 2000, 1990, 1998]
    assert items["genres"].tolist() == [
        "Action|Adventure|Sci-Fi",
        "Comedy|Drama",
        "",
        "Drama",
    ]


def test_dat_utf8_movies_file(tmp_path):
    folder = write_ml1m(tmp_path / "ml-10M100K", users=False)
    (folder / "movies.dat").write_text(MOVIES_DAT, encoding="utf-8")

    items = read_movielens_dat(folder, "ml-10m").items

    assert items["title"].tolist()[3] == "Misérables, Les"


def test_dat_users_with_occupation_names(tmp_path):
    users = read_movielens_dat(write_ml1m(tmp_path / "ml-1m")).users

    assert users["user_id"].tolist() == [12, 6040]
    assert users["age"].tolist() == [25, 56]
    assert users["gender"].tolist() == ["F", "M"]
    assert users["occupation"].tolist() == ["K-12 student", "self-employed"]
    assert users["zip_code"].tolist() == ["48067", "70072"]


def test_dat_without_users_file(tmp_path):
    dataset = read_movielens_dat(write_ml1m(tmp_path / "x", users=False), "ml-10m")

    assert dataset.users.empty
    assert list(dataset.users.columns) == [
        "user_id",
        "age",
        "gender",
        "occupation",
        "zip_code",
    ]


def test_dat_unrated_movie_gets_no_index(tmp_path):
    dataset = read_movielens_dat(write_ml1m(tmp_path / "ml-1m"))

    _, items = build_vocabularies(dataset.interactions)

    assert 999 in dataset.items["item_id"].tolist()
    assert 999 not in items
    assert len(items) == 3


@pytest.mark.parametrize(
    ("file_name", "line_number", "text", "message"),
    [
        (
            "ratings.dat",
            4,
            "12,7,1,978301968",
            r"ratings\.dat, line 4: expected 4 fields separated by '::', found 1",
        ),
        (
            "ratings.dat",
            2,
            "6040::two::3::956703954",
            r"ratings\.dat, line 2: item_id must be an integer, found 'two'",
        ),
        (
            "ratings.dat",
            2,
            "6040::5::3::956703954",
            r"ratings\.dat, line 2: item_id 5 is not in the movie file",
        ),
        (
            "movies.dat",
            2,
            "3952 Misérables, Les (1998) Drama",
            r"movies\.dat, line 2: expected 3 fields separated by '::', found 1",
        ),
        (
            "users.dat",
            1,
            "12::F::25::10::48067::extra",
            r"users\.dat, line 1: expected 5 fields",
        ),
    ],
    ids=["wrong-separator", "text-id", "unknown-movie", "movie-separator", "users"],
)
def test_dat_malformed_line(tmp_path, file_name, line_number, text, message):
    folder = write_ml1m(tmp_path / "ml-1m")
    _replace_line(folder / file_name, line_number, text)

    with pytest.raises(DataError, match=message) as caught:
        read_movielens_dat(folder, "ml-1m")

    assert "Copy the original file from ml-1m.zip" in str(caught.value)


# CSV releases ----------------------------------------------------------------


def test_csv_interactions_keep_half_stars(tmp_path):
    dataset = read_movielens_csv(write_csv_release(tmp_path / "ml-20m"), "ml-20m")

    interactions = dataset.interactions
    assert interactions["user_id"].tolist() == [5, 5, 9, 9, 9]
    assert interactions["item_id"].tolist() == [10, 20, 10, 30, 40]
    assert interactions["rating"].tolist() == [4.0, 3.5, 0.5, 5.0, 2.5]
    assert interactions["rating"].dtype == np.dtype("float32")
    assert interactions["timestamp"].tolist()[-1] == 1445715029
    assert dataset.users.empty


def test_csv_items_quoting_years_and_genres(tmp_path):
    items = read_movielens_csv(write_csv_release(tmp_path / "ml-20m")).items

    assert items["item_id"].tolist() == [10, 20, 30, 40, 50]
    assert items["title"].tolist() == [
        "American President, The",
        '"Great" Escape, The',
        "Amélie (Fabuleux destin d'Amélie Poulain: Le)",
        "Hyena Road",
        "Fawlty Towers",
    ]
    assert items["year"].tolist() == [1995, 1963, 2001, pd.NA, 1975]
    assert items["genres"].tolist() == [
        "Comedy|Drama|Romance",
        "Action|War",
        "Comedy|Romance",
        "",
        "Comedy",
    ]
    assert items["title"].dtype == STR


def test_csv_columns_in_any_order(tmp_path):
    folder = write_csv_release(tmp_path / "ml-latest")
    (folder / "ratings.csv").write_text(
        "timestamp,rating,movieId,userId\n1,4.5,10,5\n2,3.0,20,9\n"
    )

    interactions = read_movielens_csv(folder).interactions

    assert interactions.iloc[0].tolist() == [5, 10, 4.5, 1]


@pytest.mark.parametrize(
    ("file_name", "content", "message"),
    [
        (
            "ratings.csv",
            "userId,itemId,rating,timestamp\n5,10,4.0,1\n",
            (
                r"ratings\.csv, line 1: the header is missing movieId\. Expected "
                r"columns userId, movieId, rating, timestamp, found userId, itemId"
            ),
        ),
        (
            "ratings.csv",
            "userId,movieId,rating,userId\n5,10,4.0,1\n",
            (
                r"ratings\.csv, line 1: expected each column name once, found 'userId' "
                r"as columns 1 and 4"
            ),
        ),
        (
            "ratings.csv",
            (
                "userId,movieId,rating,timestamp\n5,10,4.0,1\n"
                "userId,movieId,rating,timestamp\n9,20,3.0,2\n"
            ),
            (
                r"ratings\.csv, line 3: expected a data row, found a repeat of the "
                r"header line 1"
            ),
        ),
        (
            "ratings.csv",
            "userId,movieId,rating,timestamp\n5,10,4.0,1\n9,20,four,2\n",
            r"ratings\.csv, line 3: rating must be a finite number, found 'four'",
        ),
        (
            "ratings.csv",
            "userId,movieId,rating,timestamp\n5,10,4.0,1\n9,77,4.0,2\n",
            r"ratings\.csv, line 3: item_id 77 is not in the movie file",
        ),
        (
            "ratings.csv",
            "userId;movieId;rating;timestamp\n5;10;4.0;1\n",
            r"ratings\.csv, line 1: the header is missing userId, movieId",
        ),
        ("ratings.csv", "", r"ratings\.csv is empty\. Expected a header line"),
        (
            "movies.csv",
            'movieId,title,genres\n10,"Unclosed, The (1995),Comedy\n',
            r"movies\.csv, line \d: expected CSV fields, found malformed quoting",
        ),
    ],
    ids=[
        "missing-column",
        "duplicate-column",
        "repeated-header",
        "text-rating",
        "unknown-movie",
        "wrong-separator",
        "empty",
        "bad-quoting",
    ],
)
def test_csv_bad_file(tmp_path, file_name, content, message):
    folder = write_csv_release(tmp_path / "ml-25m")
    (folder / file_name).write_text(content)

    with pytest.raises(DataError, match=message) as caught:
        read_movielens_csv(folder, "ml-25m")

    assert "Copy the original file from ml-25m.zip" in str(caught.value)


# Titles, layouts and releases ----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "title", "year"),
    [
        ("Toy Story (1995)", "Toy Story", 1995),
        ("Toy Story (1995) ", "Toy Story", 1995),
        ("Cosmos ( 1980 )", "Cosmos", 1980),
        ("Fawlty Towers (1975-1979)", "Fawlty Towers", 1975),
        ("Stranger Things (2016– )", "Stranger Things", 2016),
        ("Hyena Road", "Hyena Road", None),
        ("Land Before Time III (1995) (V)", "Land Before Time III (1995) (V)", None),
        ("1984 (1956)", "1984", 1956),
        ("Babylon 5", "Babylon 5", None),
        ("Se7en (a.k.a. Seven) (1995)", "Se7en (a.k.a. Seven)", 1995),
    ],
)
def test_split_titles(raw, title, year):
    titles, years = split_titles(pd.Series([raw], dtype=str))

    assert titles.tolist() == [title]
    assert years.tolist() == [pd.NA if year is None else year]


def test_detect_layout(tmp_path):
    assert detect_layout(write_ml100k(tmp_path / "a")) == "grouplens"
    assert detect_layout(write_ml1m(tmp_path / "b")) == "dat"
    assert detect_layout(write_csv_release(tmp_path / "c")) == "csv"
    assert detect_layout(tmp_path) is None


def test_read_folder_names_dataset_after_folder(tmp_path):
    dataset = read_movielens_folder(write_ml100k(tmp_path / "my-copy"))

    assert dataset.name == "my-copy"


def test_read_folder_not_movielens(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")

    with pytest.raises(DataError, match=r"is not a MovieLens folder\. .*Found notes"):
        read_movielens_folder(tmp_path)


def test_releases_registry():
    assert list(RELEASES) == [
        "ml-100k",
        "ml-1m",
        "ml-10m",
        "ml-20m",
        "ml-25m",
        "ml-32m",
        "ml-latest-small",
        "ml-latest",
    ]
    assert RELEASES["ml-10m"].folder == "ml-10M100K"
    assert RELEASES["ml-32m"].zip_name == "ml-32m.zip"
    assert RELEASES["ml-1m"].required_files == ("ratings.dat", "movies.dat")
    assert len(GROUPLENS_GENRES) == 19
