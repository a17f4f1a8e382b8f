"""Tests for lrml.custom_data: the user's own CSV, TSV and parquet files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lrml.custom_data import read_interactions_file, sanitise_file_name
from lrml.dataset import DataError

RATINGS = (
    "userId,movieId,rating,timestamp,title\n"
    '101,7,4.5,1000,"Comma, The (1999)"\n'
    "101,3,3,1001,Plain Title\n"
    '205,7,1,1002,"Comma, The (1999)"\n'
    "205,90,5,999,Zoë (2020)\n"
)


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


def test_csv_with_common_names(tmp_path):
    dataset = read_interactions_file(write(tmp_path, "mine.csv", RATINGS))

    interactions = dataset.interactions
    assert dataset.name == "mine.csv"
    assert dataset.source == str(tmp_path / "mine.csv")
    assert interactions["user_id"].tolist() == [101, 101, 205, 205]
    assert interactions["item_id"].tolist() == [7, 3, 7, 90]
    assert interactions["rating"].tolist() == [4.5, 3.0, 1.0, 5.0]
    assert interactions["timestamp"].tolist() == [1000, 1001, 1002, 999]
    assert dict(interactions.dtypes.astype(str)) == {
        "user_id": "int64",
        "item_id": "int64",
        "rating": "float32",
        "timestamp": "int64",
    }
    assert dataset.users.empty


def test_items_from_title_column(tmp_path):
    items = read_interactions_file(write(tmp_path, "mine.csv", RATINGS)).items

    assert items["item_id"].tolist() == [3, 7, 90]
    assert items["title"].tolist() == ["Plain Title", "Comma, The", "Zoë"]
    assert items["year"].tolist() == [pd.NA, 1999, 2020]
    assert items["genres"].tolist() == ["", "", ""]


def test_tsv_without_title(tmp_path):
    path = write(tmp_path, "log.tsv", "user\titem\n1\t10\n1\t11\n2\t10\n")

    dataset = read_interactions_file(path)

    assert dataset.interactions["rating"].tolist() == [1.0, 1.0, 1.0]
    # The line order is used as time.
    assert dataset.interactions["timestamp"].tolist() == [0, 1, 2]
    assert dataset.items["title"].tolist() == ["item 10", "item 11"]


def test_semicolon_separator_detected(tmp_path):
    path = write(tmp_path, "excel.csv", "user_id;item_id;score\n1;10;2,5\n2;11;4\n")

    with pytest.raises(DataError, match=r"line 2: score must be a finite number"):
        read_interactions_file(path)

    path.write_text("user_id;item_id;score\n1;10;2.5\n2;11;4\n")
    assert read_interactions_file(path).interactions["rating"].tolist() == [2.5, 4.0]


def test_headerless_file_in_u_data_order(tmp_path):
    path = write(tmp_path, "u.txt", "3\t30\t4\t100\n5\t31\t2\t200\n")

    interactions = read_interactions_file(path).interactions

    assert interactions.iloc[1].tolist() == [5, 31, 2.0, 200]


def test_double_colon_file(tmp_path):
    path = write(tmp_path, "ratings.dat", "3::30::4::100\n5::31::2::200\n")

    assert read_interactions_file(path).interactions["item_id"].tolist() == [30, 31]


def test_explicit_columns(tmp_path):
    text = "reader,book,user_id,stars\n1,10,999,5\n2,11,999,4\n"
    path = write(tmp_path, "books.csv", text)

    dataset = read_interactions_file(path, columns={"user": "reader", "item": "book"})

    assert dataset.interactions["user_id"].tolist() == [1, 2]
    assert dataset.interactions["rating"].tolist() == [5.0, 4.0]


def test_iso_dates_and_fractional_seconds(tmp_path):
    text = "user,item,date\n1,10,2024-01-31 12:00:00\n2,11,2024-02-01\n"
    dates = read_interactions_file(write(tmp_path, "d.csv", text)).interactions

    assert dates["timestamp"].tolist() == [1706702400, 1706745600]

    text = "user,item,ts\n1,10,1706702400.75\n2,11,5.2\n"
    seconds = read_interactions_file(write(tmp_path, "s.csv", text)).interactions
    assert seconds["timestamp"].tolist() == [1706702400, 5]


def test_byte_order_mark(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfuser_id,item_id\n1,10\n2,11\n")
    headerless = tmp_path / "plain.csv"
    headerless.write_bytes(b"\xef\xbb\xbf1,10\n2,11\n")

    assert read_interactions_file(path).interactions["user_id"].tolist() == [1, 2]
    assert read_interactions_file(headerless).interactions["item_id"].tolist() == [
        10,
        11,
    ]


def test_latin1_encoding(tmp_path):
    text = "user,item,title\n1,10,Amélie (2001)\n2,11,Léon (1994)\n"
    path = write(tmp_path, "old.csv", text, encoding="latin-1")

    with pytest.raises(DataError, match=r"old\.csv, line 2: expected utf-8 text"):
        read_interactions_file(path)

    items = read_interactions_file(path, encoding="latin-1").items
    assert items["title"].tolist() == ["Amélie", "Léon"]


def test_parquet(tmp_path):
    path = tmp_path / "events.parquet"
    pd.DataFrame(
        {
            "customer_id": np.array([5, 5, 9], dtype="int32"),
            "product_id": ["12", "13", "12"],
            "rating": [1.0, 0.5, 2.0],
            "time": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]),
            "extra": ["a", "b", "c"],
        }
    ).to_parquet(path)

    interactions = read_interactions_file(path).interactions

    assert interactions["user_id"].tolist() == [5, 5, 9]
    assert interactions["item_id"].tolist() == [12, 13, 12]
    assert interactions["timestamp"].tolist() == [1704067200, 1704153600, 1704240000]
    assert interactions["user_id"].dtype == "int64"


BAD_TEXT_FILES = [
    pytest.param("", {}, r"^bad\.csv is empty\. Expected a header line", id="empty"),
    pytest.param(
        "\n\n\n", {}, r"^bad\.csv contains only blank lines", id="blank-lines"
    ),
    pytest.param(
        "user_id,item_id\n",
        {},
        r"^bad\.csv has a header line but no data lines",
        id="header-only",
    ),
    pytest.param(
        "user_id,thing,stars\n1,2,3\n",
        {},
        r"^bad\.csv, line 1: no item column\. Expected a column named item_id, "
        r"itemId, .*found user_id, thing, stars",
        id="missing-column",
    ),
    pytest.param(
        "user_id\titem_id\n1\t2\n",
        {"sep": ","},
        r"^bad\.csv, line 1: expected fields separated by ',', found one field "
        r"'user_id\\titem_id'\. The line splits at '\\t'",
        id="wrong-separator",
    ),
    pytest.param(
        "user_id item_id\n1 2\n",
        {},
        r"^bad\.csv, line 1: expected at least two fields \(user and item\) "
        r"separated by ',', tab, ';', '\|' or '::', found one field",
        id="no-separator",
    ),
    pytest.param(
        "user_id,item_id\n1,2\n2,2\n3,abc\n",
        {},
        r"^bad\.csv, line 4: item_id must be an integer, found 'abc'",
        id="non-numeric-id",
    ),
    pytest.param(
        "user_id,item_id,rating\n1,2,5\n2,2,great\n",
        {},
        r"^bad\.csv, line 3: rating must be a finite number, found 'great'",
        id="non-numeric-rating",
    ),
    pytest.param(
        "user_id,item_id,user_id\n1,2,3\n",
        {},
        r"^bad\.csv, line 1: expected each column name once, found 'user_id' as "
        r"columns 1 and 3",
        id="duplicate-column",
    ),
    pytest.param(
        "user_id,item_id\n1,2\n2,3\nuser_id,item_id\n3,3\n",
        {},
        r"^bad\.csv, line 4: expected a data row, found a repeat of the header "
        r"line 1",
        id="repeated-header",
    ),
    pytest.param(
        "user_id,item_id\n7,2\n7,3\n",
        {},
        r"^bad\.csv: every interaction belongs to user 7\. Expected interactions "
        r"of at least 2 users, found 1",
        id="one-user",
    ),
    pytest.param(
        "user_id,item_id\n1,2\n2,2\n",
        {},
        r"^bad\.csv: every interaction belongs to item 2",
        id="one-item",
    ),
    pytest.param(
        "user_id,item_id\n1,2\n2,3,4\n",
        {},
        r"^bad\.csv, line 3: expected 2 fields separated by ',', found 3",
        id="extra-field",
    ),
    pytest.param(
        "user_id,item_id,date\n1,2,2024-01-01\n2,2,31/01/2024\n",
        {},
        r"^bad\.csv, line 3: date must be Unix seconds or an ISO 8601 date such as "
        r"2024-01-31 12:00:00, found '31/01/2024'",
        id="bad-date",
    ),
    pytest.param(
        "reader,book\n1,2\n",
        {"columns": {"user": "reader", "item": "title"}},
        r"^bad\.csv, line 1: expected a column 'title' for the item, found columns "
        r"reader, book",
        id="chosen-column-missing",
    ),
]


@pytest.mark.parametrize(("text", "options", "message"), BAD_TEXT_FILES)
def test_bad_text_file(tmp_path, text, options, message):
    path = write(tmp_path, "bad.csv", text)

    with pytest.raises(DataError, match=message):
        read_interactions_file(path, label="bad.csv", **options)


def test_error_names_path_without_label(tmp_path):
    path = write(tmp_path, "x.csv", "user_id,item_id\n1,2\n2,x\n")

    with pytest.raises(DataError, match=rf"^{tmp_path}/x\.csv, line 3: item_id"):
        read_interactions_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nothing\.csv not found"):
        read_interactions_file(tmp_path / "nothing.csv")


def test_unknown_role(tmp_path):
    path = write(tmp_path, "x.csv", RATINGS)

    with pytest.raises(ValueError, match=r"columns has unknown roles person"):
        read_interactions_file(path, columns={"person": "userId"})


def test_parquet_non_integer_id(tmp_path):
    path = tmp_path / "p.parquet"
    pd.DataFrame({"user": [1, 2, 3], "item": ["4", "B07", "6"]}).to_parquet(path)

    with pytest.raises(
        DataError, match=r"p\.parquet, row 2: item must be an integer id, found 'B07'"
    ):
        read_interactions_file(path)


def test_parquet_missing_rating(tmp_path):
    path = tmp_path / "p.parquet"
    pd.DataFrame({"user": [1, 2], "item": [4, 5], "rating": [1.0, None]}).to_parquet(
        path
    )

    with pytest.raises(DataError, match=r"row 2: rating must be a finite number"):
        read_interactions_file(path)


def test_invalid_parquet(tmp_path):
    path = write(tmp_path, "p.parquet", "user,item\n1,2\n")

    with pytest.raises(DataError, match=r"p\.parquet is not a valid parquet file"):
        read_interactions_file(path)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ratings.csv", "ratings.csv"),
        ("../../etc/passwd.csv", "passwd.csv"),
        ("C:\\Users\\me\\My Ratings.TSV", "My_Ratings.tsv"),
        (".hidden.csv", "hidden.csv"),
        ("Évé nts (1).parquet", "Eve_nts_1.parquet"),
        ("..csv", "upload.csv"),
        ("/abs/path/ratings.dat", "ratings.dat"),
    ],
)
def test_sanitise_file_name(name, expected):
    assert sanitise_file_name(name) == expected


@pytest.mark.parametrize("name", ["script.py", "ratings", "archive.csv.exe"])
def test_sanitise_rejects_suffix(name):
    with pytest.raises(DataError, match=r"expected a file name ending in \.csv"):
        sanitise_file_name(name)
