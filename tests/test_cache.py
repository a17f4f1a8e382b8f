"""Tests for lrml.cache, through load_dataset: reuse, invalidation and failures."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

import lrml.cache
import lrml.data
from lrml.data import load_dataset
from lrml.dataset import DataError
from tests.data_fixtures import write_csv_release, write_release


@pytest.fixture
def parses(monkeypatch):
    """Count the parses of MovieLens folders, which a cache hit avoids."""
    calls = []
    original = lrml.data.read_movielens_folder

    def counted(folder, name=None):
        calls.append(folder)
        return original(folder, name)

    monkeypatch.setattr(lrml.data, "read_movielens_folder", counted)
    return calls


def cache_folders(data_dir):
    return sorted(path.name for path in (data_dir / "cache").iterdir())


def assert_same_dataset(left, right):
    for table in ("interactions", "items", "users"):
        pd.testing.assert_frame_equal(getattr(left, table), getattr(right, table))
    assert left.name == right.name


@pytest.mark.parametrize("name", ["ml-100k", "ml-1m", "ml-10m", "ml-32m"])
def test_second_load_uses_cache(tmp_path, parses, name):
    write_release(name, tmp_path)

    first = load_dataset(name, tmp_path)
    second = load_dataset(name, tmp_path)

    assert len(parses) == 1
    assert_same_dataset(first, second)
    assert second.source == first.source
    assert len(cache_folders(tmp_path)) == 1


def test_changed_file_is_parsed_again(tmp_path, parses):
    folder = write_csv_release(tmp_path / "ml-20m")
    load_dataset("ml-20m", tmp_path)

    ratings = folder / "ratings.csv"
    ratings.write_text(ratings.read_text() + "9,50,1.5,1445715100\n")
    dataset = load_dataset("ml-20m", tmp_path)

    assert len(parses) == 2
    assert len(dataset.interactions) == 6
    assert len(cache_folders(tmp_path)) == 1


def test_touched_file_is_parsed_again(tmp_path, parses):
    folder = write_csv_release(tmp_path / "ml-20m")
    load_dataset("ml-20m", tmp_path)

    status = (folder / "movies.csv").stat()
    os.utime(folder / "movies.csv", ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))
    load_dataset("ml-20m", tmp_path)

    assert len(parses) == 2


def test_parser_version_invalidates(tmp_path, parses, monkeypatch):
    write_release("ml-1m", tmp_path)
    load_dataset("ml-1m", tmp_path)

    monkeypatch.setattr(lrml.cache, "PARSER_VERSION", lrml.cache.PARSER_VERSION + 1)
    load_dataset("ml-1m", tmp_path)

    assert len(parses) == 2


def test_unreadable_cache_is_ignored(tmp_path, parses, caplog):
    write_release("ml-1m", tmp_path)
    first = load_dataset("ml-1m", tmp_path)
    folder = tmp_path / "cache" / cache_folders(tmp_path)[0]
    (folder / "interactions.parquet").write_bytes(b"garbage")

    second = load_dataset("ml-1m", tmp_path)

    assert len(parses) == 2
    assert "Ignoring unreadable cache" in caplog.text
    assert_same_dataset(first, second)


def test_bad_file_keeps_old_cache(tmp_path):
    folder = write_csv_release(tmp_path / "ml-20m")
    load_dataset("ml-20m", tmp_path)
    cached = tmp_path / "cache" / cache_folders(tmp_path)[0]
    before = {path.name: path.read_bytes() for path in cached.iterdir()}

    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n5,x,1,1\n")
    with pytest.raises(DataError, match=r"ratings\.csv, line 2: movieId must be"):
        load_dataset("ml-20m", tmp_path)

    assert {path.name: path.read_bytes() for path in cached.iterdir()} == before


def test_unwritable_cache_is_skipped(tmp_path, caplog):
    write_release("ml-1m", tmp_path)
    (tmp_path / "cache").write_text("a file where the cache folder should be")

    dataset = load_dataset("ml-1m", tmp_path)

    assert len(dataset.interactions) == 5
    assert "Could not cache ml-1m" in caplog.text


def test_use_cache_false_writes_nothing(tmp_path):
    write_release("ml-1m", tmp_path)

    load_dataset("ml-1m", tmp_path, use_cache=False)

    assert not (tmp_path / "cache").exists()


def test_file_options_are_part_of_the_key(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("a,b,c\n1,10,3\n2,11,4\n")

    by_position = load_dataset(path, tmp_path, columns={"user": "a", "item": "b"})
    swapped = load_dataset(path, tmp_path, columns={"user": "b", "item": "a"})

    assert by_position.interactions["user_id"].tolist() == [1, 2]
    assert swapped.interactions["user_id"].tolist() == [10, 11]
    assert len(cache_folders(tmp_path)) == 2


def test_manifest_records_files(tmp_path):
    folder = write_csv_release(tmp_path / "ml-20m")
    load_dataset("ml-20m", tmp_path)

    manifest_path = tmp_path / "cache" / cache_folders(tmp_path)[0] / "manifest.json"
    manifest = json.loads(manifest_path.read_text())

    files = [entry[0] for entry in manifest["key"]["files"]]
    assert files == [str(folder / "ratings.csv"), str(folder / "movies.csv")]
    assert manifest["key"]["parser_version"] == lrml.cache.PARSER_VERSION


def test_cache_of_deleted_file_is_pruned(tmp_path):
    gone = tmp_path / "gone.csv"
    gone.write_text("user,item\n1,10\n2,11\n")
    load_dataset(gone, tmp_path)
    gone.unlink()

    write_release("ml-1m", tmp_path)
    load_dataset("ml-1m", tmp_path)

    assert len(cache_folders(tmp_path)) == 1
    assert cache_folders(tmp_path)[0].startswith("ml-1m-")
