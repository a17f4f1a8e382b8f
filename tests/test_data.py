"""Tests for lrml.data: loading by release name or path, uploads and the CLI.

Every fixture is a few hand-written lines in tmp_path (see tests/data_fixtures.py),
and downloads go to an HTTP server on 127.0.0.1, so no MovieLens data is stored
in the repository.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

import lrml.data
from lrml.cli import main
from lrml.data import (
    DATASETS,
    DEFAULT_DATA_DIR,
    GROUPLENS_URL_ENV,
    DataError,
    Dataset,
    dataset_label,
    fetch_dataset,
    fetch_ml100k,
    load_dataset,
    load_ml100k,
    local_datasets,
    read_grouplens_100k,
    read_recbole_atomic,
    save_upload,
)
from tests.conftest import make_interactions
from tests.data_fixtures import (
    EXPECTED_INTERACTIONS,
    http_server,
    md5_line,
    release_zip,
    write_ml100k,
    write_recbole_folder,
    write_release,
)

UPLOAD = b"user_id,item_id,rating\n1,10,5\n1,11,4\n2,10,3\n"


def test_datasets_lists_every_release():
    assert DATASETS == (
        "ml-100k",
        "ml-1m",
        "ml-10m",
        "ml-20m",
        "ml-25m",
        "ml-32m",
        "ml-latest-small",
        "ml-latest",
    )


@pytest.mark.parametrize("name", DATASETS)
def test_load_every_release_by_name(tmp_path, name):
    write_release(name, tmp_path)

    dataset = load_dataset(name, tmp_path)

    assert isinstance(dataset, Dataset)
    assert dataset.name == name
    assert len(dataset.interactions) == 5
    assert f"interactions={len(dataset.interactions)}" in repr(dataset)


def test_load_ml100k(tmp_path):
    write_ml100k(tmp_path / "ml-100k")

    dataset = load_ml100k(tmp_path)

    assert dataset.source == str(tmp_path / "ml-100k")
    pd.testing.assert_frame_equal(dataset.interactions, EXPECTED_INTERACTIONS)


def test_load_ml100k_recbole_folder(tmp_path):
    write_recbole_folder(tmp_path / "ml-100k-recbole")

    dataset = load_ml100k(tmp_path)

    assert dataset.name == "ml-100k"
    pd.testing.assert_frame_equal(dataset.interactions, EXPECTED_INTERACTIONS)


def test_load_file_by_path(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_bytes(UPLOAD)

    dataset = load_dataset(str(path), tmp_path / "data")

    assert dataset.name == "mine.csv"
    assert dataset.interactions["item_id"].tolist() == [10, 11, 10]


def test_load_folder_by_path(tmp_path):
    folder = write_release("ml-1m", tmp_path / "elsewhere")

    dataset = load_dataset(folder, tmp_path / "data")

    assert dataset.name == "ml-1m"
    assert dataset.source == str(folder)


def test_load_recbole_folder_by_path(tmp_path):
    folder = write_recbole_folder(tmp_path / "atomic")

    dataset = load_dataset(folder, tmp_path / "data")

    assert dataset.name == "ml-100k"
    assert len(dataset.users) == 3


def test_load_unknown_name(tmp_path):
    with pytest.raises(
        DataError,
        match=r"Unknown dataset 'ml-2m': it is not a MovieLens release \(ml-100k, "
        r"ml-1m, .*\) and no file or folder exists at .*ml-2m",
    ):
        load_dataset("ml-2m", tmp_path)


def test_load_folder_without_dataset(tmp_path):
    (tmp_path / "notes.txt").write_text("x")

    with pytest.raises(
        DataError, match=r"is not a dataset folder\. Expected MovieLens files .*notes"
    ):
        load_dataset(tmp_path, tmp_path / "data")


def test_save_upload(tmp_path):
    path = save_upload("../My Ratings.csv", UPLOAD, tmp_path)

    assert path.parent == tmp_path / "uploads"
    assert path.name.startswith("My_Ratings-")
    assert path.suffix == ".csv"
    assert path.read_bytes() == UPLOAD
    assert sorted(p.name for p in (tmp_path / "uploads").iterdir()) == [path.name]
    assert save_upload("My Ratings.csv", UPLOAD, tmp_path) == path


def test_upload_is_cached(tmp_path, monkeypatch):
    path = save_upload("r.csv", UPLOAD, tmp_path)
    monkeypatch.setattr(lrml.data, "read_interactions_file", _fail_if_called)

    dataset = load_dataset(path, tmp_path)

    assert dataset.name == path.name
    assert dataset.source == str(path)
    assert len(dataset.interactions) == 3


def _fail_if_called(*args, **kwargs):
    raise AssertionError("no parse expected")


def test_bad_upload_saves_nothing(tmp_path):
    good = save_upload("r.csv", UPLOAD, tmp_path)

    with pytest.raises(
        DataError, match=r"^r\.csv, line 3: item_id must be an integer, found 'x'"
    ):
        save_upload("r.csv", b"user_id,item_id\n1,10\n2,x\n", tmp_path)

    assert sorted((tmp_path / "uploads").iterdir()) == [good]
    assert good.read_bytes() == UPLOAD


def test_upload_with_unsupported_suffix(tmp_path):
    with pytest.raises(DataError, match=r"'ratings\.xlsx': expected a file name"):
        save_upload("ratings.xlsx", UPLOAD, tmp_path)

    assert not (tmp_path / "uploads").exists()


def test_local_datasets(tmp_path):
    assert local_datasets(tmp_path) == []

    write_release("ml-1m", tmp_path)
    upload = save_upload("r.csv", UPLOAD, tmp_path)

    assert local_datasets(tmp_path) == ["ml-1m", str(upload)]


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ("ml-20m", "ml-20m"),
        ("/data/uploads/My Ratings-3f2a.csv", "My_Ratings-3f2a"),
        ("/data/ml-10M100K", "ml-10M100K"),
        ("/data/../", "dataset"),
    ],
)
def test_dataset_label(value, label):
    assert dataset_label(value) == label


def test_fetch_dataset_unknown_name(tmp_path):
    with pytest.raises(DataError, match=r"Unknown dataset 'ml-5m'\. Use one of"):
        fetch_dataset("ml-5m", tmp_path)


def test_fetch_ml100k_returns_layout(tmp_path):
    write_recbole_folder(tmp_path / "ml-100k-recbole")

    assert fetch_ml100k(tmp_path) == (tmp_path / "ml-100k-recbole", "recbole")


def test_default_data_dir_is_read_at_call_time(tmp_path, monkeypatch):
    write_release("ml-1m", tmp_path)
    monkeypatch.setattr(lrml.data, "DEFAULT_DATA_DIR", tmp_path)

    assert fetch_dataset("ml-1m").folder == tmp_path / "ml-1m"
    assert load_dataset("ml-1m").source == str(tmp_path / "ml-1m")


def _import_data_module_copy(monkeypatch):
    """Execute lrml/data.py again as a separate module, to re-read the environment."""
    spec = importlib.util.spec_from_file_location("data_copy", lrml.data.__file__)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "data_copy", module)
    spec.loader.exec_module(module)
    return module


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("LRML_DATA_DIR", raising=False)
    repository_root = Path(lrml.data.__file__).resolve().parent.parent
    module = _import_data_module_copy(monkeypatch)
    assert module.DEFAULT_DATA_DIR == repository_root / "data"

    monkeypatch.setenv("LRML_DATA_DIR", str(tmp_path))
    module = _import_data_module_copy(monkeypatch)
    assert module.DEFAULT_DATA_DIR == tmp_path

    assert isinstance(DEFAULT_DATA_DIR, Path)


def test_public_names_still_exported():
    assert callable(read_grouplens_100k)
    assert callable(read_recbole_atomic)
    assert set(lrml.data.__all__) >= {
        "Dataset",
        "DataError",
        "load_dataset",
        "load_ml100k",
        "fetch_ml100k",
        "DATASETS",
        "DEFAULT_DATA_DIR",
    }


def test_cli_fetch_release(tmp_path, monkeypatch, capsys):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(lrml.data, "DEFAULT_DATA_DIR", tmp_path / "data")
    body = release_zip("ml-latest-small", tmp_path)
    checksum = md5_line(body, "ml-latest-small.zip")

    with http_server() as server:
        server.routes["/ml-latest-small.zip"] = (body, len(body))
        server.routes["/ml-latest-small.zip.md5"] = (checksum, len(checksum))
        monkeypatch.setenv(GROUPLENS_URL_ENV, server.url)
        status = main(["fetch", "ml-latest-small"])

    assert status == 0
    folder = tmp_path / "data" / "ml-latest-small"
    assert capsys.readouterr().out.strip() == f"{folder} (csv layout)"
    assert (folder / "movies.csv").is_file()


def test_cli_fetch_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(lrml.data, "DEFAULT_DATA_DIR", tmp_path)
    monkeypatch.setenv(GROUPLENS_URL_ENV, "http://127.0.0.1:9")

    assert main(["fetch", "ml-20m"]) == 2

    error = capsys.readouterr().err
    assert "error: Failed to download ml-20m.zip" in error
    assert "To place the files by hand" in error


@pytest.mark.slow
def test_cli_train_on_user_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(lrml.data, "DEFAULT_DATA_DIR", tmp_path / "data")
    frame = make_interactions()
    frame = frame.rename(columns={"user_id": "userId", "item_id": "movieId"})
    path = tmp_path / "mine.csv"
    frame.to_csv(path, index=False)

    status = main(
        [
            "train",
            "--dataset",
            str(path),
            "--epochs",
            "1",
            "--embedding-dim",
            "4",
            "--memory-size",
            "2",
            "--json",
            "--out",
            str(tmp_path / "run"),
        ]
    )

    assert status == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs"] == 1
    assert 0.0 <= summary["test"]["sampled_hr@10"] <= 1.0
