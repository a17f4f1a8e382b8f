"""Tests for lrml.recbole: RecBole atomic files and the wheel fallback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lrml.recbole
from lrml.dataset import DataError
from lrml.download import DownloadFailed
from lrml.recbole import extract_recbole_wheel, find_recbole_prefix, read_recbole_atomic
from tests.data_fixtures import (
    EXPECTED_INTERACTIONS,
    EXPECTED_USERS,
    ML100K_INTER,
    ML100K_ITEM,
    write_recbole_folder,
)


def test_recbole_values(tmp_path):
    dataset = read_recbole_atomic(write_recbole_folder(tmp_path / "rb"))

    assert dataset.name == "ml-100k"
    assert dataset.source == str(tmp_path / "rb")
    pd.testing.assert_frame_equal(dataset.interactions, EXPECTED_INTERACTIONS)
    pd.testing.assert_frame_equal(dataset.users, EXPECTED_USERS)

    items = dataset.items
    assert items["item_id"].tolist() == [1, 267, 543, 1412, 1682]
    assert items["title"].tolist() == [
        "Toy Story",
        "unknown",
        "Misérables, Les",
        "Land Before Time III: The Time of the Great Giving (1995)",
        '"Scream" of Stone (Schrei aus Stein)',
    ]
    assert items["year"].tolist() == [1995, pd.NA, 1995, pd.NA, 1991]
    assert items["genres"].tolist()[:3] == [
        "Animation|Children's|Comedy",
        "unknown",
        "Drama|Musical",
    ]
    assert items["year"].dtype == pd.Int64Dtype()
    assert items["title"].dtype == pd.StringDtype(na_value=np.nan)


def test_recbole_columns_found_by_header(tmp_path):
    folder = tmp_path / "rb"
    folder.mkdir()
    (folder / "shop.inter").write_text(
        "timestamp:float\trating:float\titem_id:token\tuser_id:token\n"
        "881250949\t4.5\t1\t10\n"
        "881250950\t3\t2\t11\n",
        encoding="utf-8",
    )
    (folder / "shop.item").write_text(
        "class:token_seq\titem_id:token\tprice:float\trelease_year:token\t"
        "movie_title:token_seq\n"
        "Comedy Drama\t1\t9.99\t1995\tToy Story\n"
        "Drama\t2\t1.00\t1996\tOther\n",
        encoding="utf-8",
    )
    (folder / "shop.user").write_text(
        "zip_code:token\toccupation:token\tgender:token\tage:token\tuser_id:token\n"
        "01002\twriter\tF\t\t10\n"
        "01003\tother\tM\t30\t11\n",
        encoding="utf-8",
    )

    dataset = read_recbole_atomic(folder, prefix="shop")

    assert dataset.name == "shop"
    assert dataset.interactions.iloc[0].tolist() == [10, 1, 4.5, 881250949]
    assert dataset.items.iloc[0].tolist() == [1, "Toy Story", 1995, "Comedy|Drama"]
    assert dataset.users.iloc[0].tolist() == [10, pd.NA, "F", "writer", "01002"]


def test_recbole_implicit_inter_only(tmp_path):
    folder = tmp_path / "rb"
    folder.mkdir()
    (folder / "clicks.inter").write_text(
        "user_id:token\titem_id:token\n5\t50\n5\t51\n6\t50\n"
    )

    dataset = read_recbole_atomic(folder, prefix=find_recbole_prefix(folder))

    assert dataset.interactions["rating"].tolist() == [1.0, 1.0, 1.0]
    assert dataset.interactions["timestamp"].tolist() == [0, 1, 2]
    assert dataset.items["title"].tolist() == ["item 50", "item 51"]
    assert dataset.users.empty


def test_recbole_missing_column(tmp_path):
    folder = write_recbole_folder(tmp_path / "rb")
    path = folder / "ml-100k.inter"
    path.write_text(path.read_text().replace("item_id:token", "movie:token"))

    with pytest.raises(
        DataError,
        match=r"ml-100k\.inter, line 1: the header is missing item_id\. Expected "
        r"columns user_id, item_id, found user_id, movie, rating, timestamp",
    ):
        read_recbole_atomic(folder)


def test_recbole_header_only(tmp_path):
    folder = write_recbole_folder(tmp_path / "rb")
    (folder / "ml-100k.inter").write_text(ML100K_INTER.splitlines()[0] + "\n")

    with pytest.raises(DataError, match=r"ml-100k\.inter contains no data rows"):
        read_recbole_atomic(folder)


def test_recbole_bad_value_line_number(tmp_path):
    folder = write_recbole_folder(tmp_path / "rb")
    path = folder / "ml-100k.inter"
    path.write_text(path.read_text().replace("3\t267\t1\t", "3\t267\t\t"))

    # Line 5 of the file, counting the header.
    with pytest.raises(DataError, match=r"line 5: rating must be a finite number"):
        read_recbole_atomic(folder)


def test_recbole_unknown_item(tmp_path):
    folder = write_recbole_folder(tmp_path / "rb")
    path = folder / "ml-100k.inter"
    path.write_text(path.read_text().replace("3\t267\t", "3\t268\t"))

    with pytest.raises(DataError, match=r"line 5: item_id 268 is not in the item"):
        read_recbole_atomic(folder)


def test_recbole_invalid_utf8(tmp_path):
    folder = write_recbole_folder(tmp_path / "rb")
    (folder / "ml-100k.item").write_bytes(ML100K_ITEM.encode("latin-1"))

    with pytest.raises(
        DataError, match=r"ml-100k\.item, line 2: expected utf-8 text, found the byte"
    ):
        read_recbole_atomic(folder)


def test_find_recbole_prefix(tmp_path):
    assert find_recbole_prefix(tmp_path) is None

    write_recbole_folder(tmp_path / "rb")

    assert find_recbole_prefix(tmp_path / "rb") == "ml-100k"


def test_wheel_without_files(tmp_path, monkeypatch):
    def download_nothing(download_dir):
        (download_dir / "recbole-1.2.1-py3-none-any.whl").write_bytes(b"not a zip")

    monkeypatch.setattr(lrml.recbole, "pip_download_recbole", download_nothing)

    with pytest.raises(DownloadFailed, match=r"is not a valid recbole wheel"):
        extract_recbole_wheel(tmp_path, tmp_path / "ml-100k-recbole")

    assert list(tmp_path.iterdir()) == []


@pytest.mark.network
@pytest.mark.slow
def test_recbole_wheel_from_package_index(tmp_path, monkeypatch):
    from lrml.data import load_ml100k

    monkeypatch.setenv("LRML_ML100K_URL", "http://127.0.0.1:9/ml-100k.zip")

    dataset = load_ml100k(tmp_path)

    assert dataset.source == lrml.recbole.RECBOLE_SOURCE
    assert len(dataset.users) == 943
    assert len(dataset.items) == 1682
    assert len(dataset.interactions) == 100_000
    assert dataset.items["title"].iloc[0] == "Toy Story"
    assert dataset.items["genres"].iloc[0] == "Animation|Children's|Comedy"
