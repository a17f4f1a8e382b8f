"""Tests for lrml.tables: the fast pyarrow reader and its line-by-line fallback."""

from __future__ import annotations

import pandas as pd
import pytest

import lrml.tables
from lrml.dataset import DataError
from lrml.tables import Column, line_of_row, read_columns, read_header

RATING_COLUMNS = [
    Column("user_id", 0, "int"),
    Column("item_id", 1, "int"),
    Column("rating", 2, "float"),
    Column("timestamp", 3, "int"),
]


def read(path, **options):
    settings = {"delimiter": ",", "encoding": "utf-8", "field_count": 4}
    settings.update(options)
    return read_columns(path, RATING_COLUMNS, **settings)


@pytest.fixture
def fast_path_calls(monkeypatch):
    """Count the calls of the line-by-line reader, which the fast path avoids."""
    calls = []
    original = lrml.tables._LineReader.read

    def counted(self, where, fix):
        calls.append(where)
        return original(self, where, fix)

    monkeypatch.setattr(lrml.tables._LineReader, "read", counted)
    return calls


def test_clean_file_takes_fast_path(tmp_path, fast_path_calls):
    path = tmp_path / "r.csv"
    path.write_text("1,2,3.5,100\n4,5,1,200\n")

    frame = read(path)

    assert fast_path_calls == []
    assert frame["user_id"].tolist() == [1, 4]
    assert frame["rating"].tolist() == [3.5, 1.0]
    assert frame["timestamp"].dtype == "int64"


def test_integral_floats_accepted_as_integers(tmp_path, fast_path_calls):
    path = tmp_path / "r.csv"
    path.write_text("1,2,3.5,100.0\n4,5,1,200\n")

    frame = read(path)

    assert frame["timestamp"].tolist() == [100, 200]
    assert frame["timestamp"].dtype == "int64"
    assert fast_path_calls == []


def test_fast_and_slow_paths_agree(tmp_path, monkeypatch):
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating,time\n 1 , 2 ,3.5,100\n\n4,5,1,200\n")
    fast = read(path, header_line=1)

    monkeypatch.setattr(lrml.tables, "_read_with_pyarrow", _always_fail)
    slow = read(path, header_line=1)

    pd.testing.assert_frame_equal(fast, slow, check_dtype=False)


def _always_fail(*args, **kwargs):
    raise lrml.tables._SlowPathNeeded


def test_double_colon_separator(tmp_path, fast_path_calls):
    path = tmp_path / "ratings.dat"
    path.write_text("1::2::3::100\n4::5::1::200\n")

    frame = read(path, delimiter="::")

    assert frame["item_id"].tolist() == [2, 5]
    assert fast_path_calls == []


def test_double_colon_with_tab_uses_line_reader(tmp_path, fast_path_calls):
    path = tmp_path / "ratings.dat"
    path.write_text("1::2::3::100\n4::5::1::200\t\n")

    frame = read(path, delimiter="::")

    assert frame["timestamp"].tolist() == [100, 200]
    assert len(fast_path_calls) == 1


def test_error_line_counts_blank_lines(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("\n1,2,3,4\n\n\n5,x,3,4\n")

    with pytest.raises(DataError, match=r"r\.csv, line 5: item_id must be an integer"):
        read(path)


def test_error_in_later_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(lrml.tables, "_CHUNK_LINES", 2)
    path = tmp_path / "r.csv"
    path.write_text("1,2,3,4\n1,3,3,4\n2,2,3,4\n2,3,3,4\n3,2,inf,4\n")

    with pytest.raises(DataError, match=r"line 5: rating must be a finite number"):
        read(path)


def test_chunks_concatenate(tmp_path, monkeypatch):
    monkeypatch.setattr(lrml.tables, "_CHUNK_LINES", 2)
    monkeypatch.setattr(lrml.tables, "_read_with_pyarrow", _always_fail)
    path = tmp_path / "r.csv"
    path.write_text("".join(f"{i},{i + 1},2.5,{i * 10}\n" for i in range(5)))

    frame = read(path)

    assert frame["user_id"].tolist() == [0, 1, 2, 3, 4]
    assert frame["timestamp"].tolist() == [0, 10, 20, 30, 40]


def test_undecodable_byte_names_line(tmp_path):
    path = tmp_path / "titles.csv"
    path.write_bytes("1,ok\n2,Am\u00e9lie\n".encode("latin-1"))
    columns = [Column("item_id", 0, "int"), Column("title", 1, "text")]

    with pytest.raises(
        DataError, match=r"titles\.csv, line 2: expected utf-8 text, found the byte"
    ):
        read_columns(path, columns, delimiter=",", encoding="utf-8", field_count=2)


def test_latin1_text(tmp_path):
    path = tmp_path / "titles.csv"
    path.write_bytes("1,Am\u00e9lie\n".encode("latin-1"))
    columns = [Column("item_id", 0, "int"), Column("title", 1, "text")]

    frame = read_columns(
        path, columns, delimiter=",", encoding="latin-1", field_count=2
    )

    assert frame["title"].tolist() == ["Amélie"]


def test_quoted_fields(tmp_path):
    path = tmp_path / "movies.csv"
    path.write_text('id,title\n1,"Comma, The"\n2,"Say ""hi"""\n')
    columns = [Column("item_id", 0, "int"), Column("title", 1, "text")]

    frame = read_columns(
        path,
        columns,
        delimiter=",",
        encoding="utf-8",
        field_count=2,
        header_line=1,
        quoting=True,
    )

    assert frame["title"].tolist() == ["Comma, The", 'Say "hi"']


def test_label_names_file(tmp_path):
    path = tmp_path / ".upload-123.csv"
    path.write_text("1,2,3,x\n")

    with pytest.raises(DataError, match=r"^my ratings\.csv, line 1: timestamp must"):
        read(path, where="my ratings.csv")


def test_read_header_skips_blank_lines(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("\n\n a , b \n1,2\n")

    assert read_header(path, ",", "utf-8", True, str(path), "") == (3, ["a", "b"])


def test_line_of_row(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("header\n\n1\n2\n\n3\n")

    assert [line_of_row(path, row, header_line=1) for row in range(3)] == [3, 4, 6]
