"""Tests for lrml.data: parsing both MovieLens layouts and the fetch fallbacks.

Every fixture is a few hand-written lines in tmp_path, and downloads go to an
HTTP server on 127.0.0.1, so no MovieLens data is stored in the repository.
Only the test marked ``network`` reaches a package index.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lrml.data
from lrml.data import (
    DATASETS,
    DEFAULT_DATA_DIR,
    GROUPLENS_GENRES,
    ML100K_URL_ENV,
    DataError,
    Dataset,
    fetch_ml100k,
    load_dataset,
    load_ml100k,
    read_grouplens_100k,
    read_recbole_atomic,
)

# Refuses connections at once, so a download from it fails fast.
UNREACHABLE_URL = "http://127.0.0.1:9/ml-100k.zip"
RECBOLE_SOURCE = "recbole==1.2.1 wheel from the package index"


def _flags(*genres: str) -> str:
    return "|".join("1" if name in genres else "0" for name in GROUPLENS_GENRES)


# Ratings with non-contiguous user ids 3, 7, 10, in an order that is not sorted.
U_DATA = (
    "10\t1\t4\t881250949\n"
    "7\t1682\t3\t891717742\n"
    "10\t543\t5\t878887116\n"
    "3\t267\t1\t880606923\n"
    "7\t543\t2\t886397596\n"
)
# Written latin-1. Item 267 is the real "unknown" entry with no date, item 1412
# ends in "(V)" after its year, and item 1682 starts with a double quote and
# has no genre flag set.
TOY_STORY_FLAGS = _flags("Animation", "Children's", "Comedy")
LAND_BEFORE_TIME_FLAGS = _flags("Animation", "Children's")
U_ITEM = (
    "543|Misérables, Les (1995)|01-Jan-1995||http://us.imdb.com/M/"
    f"title-exact?Mis%E9rables%2C%20Les%20%281995%29|{_flags('Drama', 'Musical')}\n"
    "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story|"
    f"{TOY_STORY_FLAGS}\n"
    f"267|unknown||||{_flags('unknown')}\n"
    "1412|Land Before Time III: The Time of the Great Giving (1995) (V)|"
    "01-Jan-1995||http://us.imdb.com/M/title-exact?Land|"
    f"{LAND_BEFORE_TIME_FLAGS}\n"
    '1682|"Scream" of Stone (Schrei aus Stein) (1991)|08-Mar-1996||'
    f"http://us.imdb.com/M/title-exact?Scream|{_flags()}\n"
)
U_USER = "10|53|F|other|94043\n3|23|M|writer|T8H1N\n7|24|M|technician|01002\n"
U_GENRE = "".join(f"{name}|{index}\n" for index, name in enumerate(GROUPLENS_GENRES))

ML100K_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "10\t1\t4\t881250949\n"
    "7\t1682\t3\t891717742.0\n"
    "10\t543\t5\t878887116\n"
    "3\t267\t1\t880606923\n"
    "7\t543\t2\t886397596\n"
)
ML100K_ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "543\tMisérables, Les\t1995\tDrama Musical\n"
    "1\tToy Story\t1995\tAnimation Children's Comedy\n"
    "267\tunkonwn\tunkonwn\tunknown\n"
    "1412\tLand Before Time III: The Time of the Great Giving (1995)\tV\t"
    "Animation Children's\n"
    '1682\t"Scream" of Stone (Schrei aus Stein)\t1991\t\n'
)
ML100K_USER = (
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    "10\t53\tF\tother\t94043\n"
    "3\t23\tM\twriter\tT8H1N\n"
    "7\t24\tM\ttechnician\t01002\n"
)

EXPECTED_INTERACTIONS = pd.DataFrame(
    {
        "user_id": np.array([10, 7, 10, 3, 7], dtype="int64"),
        "item_id": np.array([1, 1682, 543, 267, 543], dtype="int64"),
        "rating": np.array([4, 3, 5, 1, 2], dtype="float32"),
        "timestamp": np.array(
            [881250949, 891717742, 878887116, 880606923, 886397596], dtype="int64"
        ),
    }
)
EXPECTED_USERS = pd.DataFrame(
    {
        "user_id": np.array([3, 7, 10], dtype="int64"),
        "age": pd.array([23, 24, 53], dtype="Int64"),
        "gender": pd.array(["M", "M", "F"], dtype=str),
        "occupation": pd.array(["writer", "technician", "other"], dtype=str),
        "zip_code": pd.array(["T8H1N", "01002", "94043"], dtype=str),
    }
)
EXPECTED_ITEM_IDS = [1, 267, 543, 1412, 1682]
EXPECTED_GENRES = [
    "Animation|Children's|Comedy",
    "unknown",
    "Drama|Musical",
    "Animation|Children's",
    "",
]


def write_grouplens_folder(folder: Path, *, genre_file: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "u.data").write_text(U_DATA, encoding="latin-1")
    (folder / "u.item").write_bytes(U_ITEM.encode("latin-1"))
    (folder / "u.user").write_text(U_USER, encoding="latin-1")
    if genre_file:
        # The real u.genre ends with a blank line.
        (folder / "u.genre").write_text(U_GENRE + "\n", encoding="latin-1")
    return folder


def write_recbole_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "ml-100k.inter").write_text(ML100K_INTER, encoding="utf-8")
    (folder / "ml-100k.item").write_text(ML100K_ITEM, encoding="utf-8")
    (folder / "ml-100k.user").write_text(ML100K_USER, encoding="utf-8")
    return folder


def build_ml100k_zip(tmp_path: Path, *, omit: str | None = None) -> bytes:
    """Return a zip shaped like the GroupLens ml-100k.zip, built from the fixture."""
    folder = write_grouplens_folder(tmp_path / "zip-source" / "ml-100k")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("ml-100k/", "")
        for path in sorted(folder.iterdir()):
            if path.name != omit:
                archive.write(path, f"ml-100k/{path.name}")
    return buffer.getvalue()


def build_recbole_wheel(folder: Path) -> Path:
    """Write a stand-in recbole-1.2.1 wheel that contains the RecBole fixture files."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "recbole-1.2.1-py3-none-any.whl"
    members = {
        "recbole/__init__.py": "",
        "recbole/dataset_example/ml-100k/ml-100k.inter": ML100K_INTER,
        "recbole/dataset_example/ml-100k/ml-100k.item": ML100K_ITEM,
        "recbole/dataset_example/ml-100k/ml-100k.user": ML100K_USER,
        "recbole/dataset_example/ml-100k/ml-100k.kg": "head_id:token\n",
    }
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text.encode("utf-8"))
    return wheel


@pytest.fixture
def fake_pip(tmp_path, monkeypatch):
    """Replace the pip run with a copy of the fixture wheel, and count the calls."""
    wheel = build_recbole_wheel(tmp_path / "wheelhouse")
    calls = []

    def copy_wheel(download_dir: Path) -> None:
        calls.append(download_dir)
        (download_dir / wheel.name).write_bytes(wheel.read_bytes())

    monkeypatch.setattr(lrml.data, "_pip_download_recbole", copy_wheel)
    return calls


@pytest.fixture
def no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def http_server(no_proxy):
    """Serve ``routes[path] = (body, content_length)`` on 127.0.0.1 and yield its URL.

    A content_length larger than the body simulates a dropped connection.
    """
    routes: dict[str, tuple[bytes, int]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path not in routes:
                self.send_error(404)
                return
            body, content_length = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(content_length))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    server.routes = routes
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def leftover_temporary_files(data_dir: Path) -> list[str]:
    return sorted(path.name for path in data_dir.iterdir() if path.name.startswith("."))


def test_grouplens_interactions_and_users(tmp_path):
    dataset = read_grouplens_100k(write_grouplens_folder(tmp_path / "ml-100k"))

    assert dataset.name == "ml-100k"
    assert dataset.source == str(tmp_path / "ml-100k")
    pd.testing.assert_frame_equal(dataset.interactions, EXPECTED_INTERACTIONS)
    pd.testing.assert_frame_equal(dataset.users, EXPECTED_USERS)


def test_grouplens_items(tmp_path):
    items = read_grouplens_100k(write_grouplens_folder(tmp_path / "ml-100k")).items

    assert list(items.columns) == ["item_id", "title", "year", "genres"]
    assert items["item_id"].dtype == np.dtype("int64")
    assert items["title"].dtype == pd.StringDtype(na_value=np.nan)
    assert items["year"].dtype == pd.Int64Dtype()
    assert items["genres"].dtype == pd.StringDtype(na_value=np.nan)
    assert items["item_id"].tolist() == EXPECTED_ITEM_IDS
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
    folder = write_grouplens_folder(tmp_path / "ml-100k", genre_file=False)

    items = read_grouplens_100k(folder).items

    assert items["genres"].tolist() == EXPECTED_GENRES


def test_grouplens_genre_names_from_file(tmp_path):
    folder = write_grouplens_folder(tmp_path / "ml-100k")
    # Reversed line order, but each name keeps its index.
    lines = U_GENRE.replace("Children's", "Kids").splitlines()
    (folder / "u.genre").write_text("\n".join(reversed(lines)) + "\n")

    items = read_grouplens_100k(folder).items

    assert items["genres"].tolist()[0] == "Animation|Kids|Comedy"


def test_grouplens_crlf_line_endings(tmp_path):
    folder = write_grouplens_folder(tmp_path / "ml-100k")
    for name in ("u.data", "u.user"):
        path = folder / name
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))

    dataset = read_grouplens_100k(folder)

    pd.testing.assert_frame_equal(dataset.interactions, EXPECTED_INTERACTIONS)
    pd.testing.assert_frame_equal(dataset.users, EXPECTED_USERS)


def test_recbole_values(tmp_path):
    dataset = read_recbole_atomic(write_recbole_folder(tmp_path / "rb"))

    assert dataset.name == "ml-100k"
    assert dataset.source == str(tmp_path / "rb")
    pd.testing.assert_frame_equal(dataset.interactions, EXPECTED_INTERACTIONS)
    pd.testing.assert_frame_equal(dataset.users, EXPECTED_USERS)

    items = dataset.items
    assert items["item_id"].tolist() == EXPECTED_ITEM_IDS
    assert items["title"].tolist() == [
        "Toy Story",
        "unknown",
        "Misérables, Les",
        "Land Before Time III: The Time of the Great Giving (1995)",
        '"Scream" of Stone (Schrei aus Stein)',
    ]
    assert items["year"].tolist() == [1995, pd.NA, 1995, pd.NA, 1991]
    assert items["genres"].tolist() == EXPECTED_GENRES
    assert items["year"].dtype == pd.Int64Dtype()
    assert items["title"].dtype == pd.StringDtype(na_value=np.nan)


def test_recbole_columns_found_by_header(tmp_path):
    folder = tmp_path / "rb"
    folder.mkdir()
    (folder / "shop.inter").write_text(
        "timestamp:float\trating:float\titem_id:token\tuser_id:token\n"
        "881250949\t4.5\t1\t10\n",
        encoding="utf-8",
    )
    (folder / "shop.item").write_text(
        "class:token_seq\titem_id:token\tprice:float\trelease_year:token\t"
        "movie_title:token_seq\n"
        "Comedy Drama\t1\t9.99\t1995\tToy Story\n",
        encoding="utf-8",
    )
    (folder / "shop.user").write_text(
        "zip_code:token\toccupation:token\tgender:token\tage:token\tuser_id:token\n"
        "01002\twriter\tF\t\t10\n",
        encoding="utf-8",
    )

    dataset = read_recbole_atomic(folder, prefix="shop")

    assert dataset.name == "shop"
    assert dataset.interactions.iloc[0].tolist() == [10, 1, 4.5, 881250949]
    assert dataset.items.iloc[0].tolist() == [1, "Toy Story", 1995, "Comedy|Drama"]
    assert dataset.users.iloc[0].tolist() == [10, pd.NA, "F", "writer", "01002"]


def _replace_line(path: Path, line_number: int, text: str) -> None:
    lines = path.read_text(encoding="latin-1").splitlines()
    lines[line_number - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")


@pytest.mark.parametrize(
    ("file_name", "line_number", "text", "message"),
    [
        ("u.data", 2, "7\t1682\t3", r"u\.data, line 2: expected 4 fields .*found 3"),
        ("u.data", 3, "10\t543\t5\t1\t2", r"u\.data, line 3: expected 4 .*found 5"),
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
            5,
            "7\t543\t2\t12.5",
            r"u\.data, line 5: timestamp must be an integer, found '12\.5'",
        ),
        (
            "u.data",
            5,
            "7\t999\t2\t1",
            r"u\.data, line 5: item_id 999 is not in the item file",
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
            f"267|unknown||||{_flags()}|0",
            r"u\.item, line 3: expected 24 fields",
        ),
        (
            "u.item",
            3,
            f"267|unknown||||{_flags()[:-1]}x",
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
        "text-user-id",
        "text-rating",
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
    folder = write_grouplens_folder(tmp_path / "ml-100k")
    _replace_line(folder / file_name, line_number, text)

    with pytest.raises(DataError, match=message) as caught:
        read_grouplens_100k(folder)

    assert "Copy the original file from ml-100k.zip" in str(caught.value)


@pytest.mark.parametrize("file_name", ["u.data", "u.item", "u.user"])
def test_grouplens_missing_file(tmp_path, file_name):
    folder = write_grouplens_folder(tmp_path / "ml-100k")
    (folder / file_name).unlink()

    with pytest.raises(DataError, match=rf"{file_name} not found\. Copy the original"):
        read_grouplens_100k(folder)


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_grouplens_empty_file(tmp_path, content):
    folder = write_grouplens_folder(tmp_path / "ml-100k")
    (folder / "u.user").write_text(content)

    with pytest.raises(DataError, match=r"u\.user contains no data rows"):
        read_grouplens_100k(folder)


def test_recbole_missing_column(tmp_path):
    folder = write_recbole_folder(tmp_path / "rb")
    path = folder / "ml-100k.item"
    path.write_text(path.read_text().replace("class:token_seq", "genre:token_seq"))

    with pytest.raises(
        DataError,
        match=r"ml-100k\.item: the header is missing class\. Expected columns",
    ) as caught:
        read_recbole_atomic(folder)

    assert f"Delete {folder} so that it is extracted again" in str(caught.value)


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


def test_recbole_invalid_utf8(tmp_path):
    folder = write_recbole_folder(tmp_path / "rb")
    (folder / "ml-100k.item").write_bytes(ML100K_ITEM.encode("latin-1"))

    with pytest.raises(DataError, match=r"ml-100k\.item is not valid utf-8 text"):
        read_recbole_atomic(folder)


def test_fetch_grouplens_folder_wins(tmp_path, fake_pip, monkeypatch):
    write_grouplens_folder(tmp_path / "ml-100k")
    write_recbole_folder(tmp_path / "ml-100k-recbole")
    monkeypatch.setenv(ML100K_URL_ENV, UNREACHABLE_URL)

    assert fetch_ml100k(tmp_path) == (tmp_path / "ml-100k", "grouplens")
    assert fake_pip == []


def test_fetch_recbole_folder_second(tmp_path, fake_pip, monkeypatch):
    write_recbole_folder(tmp_path / "ml-100k-recbole")
    monkeypatch.setattr(lrml.data, "_download", _fail_if_called)

    assert fetch_ml100k(tmp_path) == (tmp_path / "ml-100k-recbole", "recbole")
    assert fake_pip == []


def _fail_if_called(*args, **kwargs):
    raise AssertionError("no download expected")


def test_fetch_default_data_dir(tmp_path, monkeypatch):
    write_grouplens_folder(tmp_path / "ml-100k")
    monkeypatch.setattr(lrml.data, "DEFAULT_DATA_DIR", tmp_path)

    assert fetch_ml100k() == (tmp_path / "ml-100k", "grouplens")


def test_fetch_partial_folder(tmp_path, monkeypatch):
    folder = write_grouplens_folder(tmp_path / "ml-100k")
    (folder / "u.user").unlink()
    monkeypatch.setattr(lrml.data, "_download", _fail_if_called)

    with pytest.raises(DataError, match=r"ml-100k exists but is missing u\.user\. Add"):
        fetch_ml100k(tmp_path)


def test_fetch_downloads_zip(tmp_path, http_server, fake_pip, monkeypatch, caplog):
    body = build_ml100k_zip(tmp_path)
    http_server.routes["/ml-100k.zip"] = (body, len(body))
    url = f"{http_server.url}/ml-100k.zip"
    monkeypatch.setenv(ML100K_URL_ENV, url)
    data_dir = tmp_path / "data"
    caplog.set_level(logging.INFO, logger="lrml.data")

    dataset = load_ml100k(data_dir)

    assert dataset.source == url
    assert dataset.items["title"].tolist()[2] == "Misérables, Les"
    assert (data_dir / "ml-100k.zip").read_bytes() == body
    assert (data_dir / "ml-100k" / "u.genre").is_file()
    assert leftover_temporary_files(data_dir) == []
    assert fake_pip == []
    assert f"Using MovieLens 100K from {url}" in caplog.text


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ("truncated", "incomplete download: received"),
        ("not-a-zip", "is not a valid zip file"),
        ("no-u-user", "is missing ml-100k/u.user"),
        ("missing", "HTTPError: HTTP Error 404"),
    ],
)
def test_fetch_bad_download_falls_back(
    tmp_path, http_server, fake_pip, monkeypatch, caplog, route, reason
):
    body = build_ml100k_zip(tmp_path)
    http_server.routes["/truncated"] = (body[: len(body) // 2], len(body))
    http_server.routes["/not-a-zip"] = (b"<html>moved</html>", 18)
    no_user = build_ml100k_zip(tmp_path / "other", omit="u.user")
    http_server.routes["/no-u-user"] = (no_user, len(no_user))
    monkeypatch.setenv(ML100K_URL_ENV, f"{http_server.url}/{route}")
    data_dir = tmp_path / "data"

    assert fetch_ml100k(data_dir) == (data_dir / "ml-100k-recbole", "recbole")

    assert len(fake_pip) == 1
    assert not (data_dir / "ml-100k.zip").exists()
    assert not (data_dir / "ml-100k").exists()
    assert leftover_temporary_files(data_dir) == []
    assert reason in caplog.text
    assert any(record.levelno == logging.WARNING for record in caplog.records)


def test_fetch_unreachable_uses_recbole_wheel(tmp_path, fake_pip, monkeypatch):
    monkeypatch.setenv(ML100K_URL_ENV, UNREACHABLE_URL)
    data_dir = tmp_path / "data"

    dataset = load_ml100k(data_dir)

    assert dataset.source == RECBOLE_SOURCE
    assert len(fake_pip) == 1
    assert sorted(path.name for path in data_dir.iterdir()) == ["ml-100k-recbole"]
    assert sorted(path.name for path in (data_dir / "ml-100k-recbole").iterdir()) == [
        "ml-100k.inter",
        "ml-100k.item",
        "ml-100k.user",
    ]
    pd.testing.assert_frame_equal(dataset.users, EXPECTED_USERS)


def test_fetch_uses_existing_zip(tmp_path, fake_pip, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "ml-100k.zip").write_bytes(build_ml100k_zip(tmp_path))
    monkeypatch.setattr(lrml.data, "_download", _fail_if_called)

    dataset = load_ml100k(data_dir)

    assert dataset.source == str(data_dir / "ml-100k.zip")
    assert (data_dir / "ml-100k" / "u.data").is_file()
    assert fake_pip == []


def _write_fake_python(tmp_path: Path, *, exit_status: int) -> Path:
    """Write an executable that records its arguments in place of the interpreter.

    With exit status 0 it copies the fixture wheel into the ``-d`` folder, like
    ``pip download``. Otherwise it prints a pip-style error.
    """
    wheel = build_recbole_wheel(tmp_path / "wheelhouse")
    script = tmp_path / "fake-python"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, shutil, sys\n"
        f"open({str(tmp_path / 'argv.json')!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
        f"if {exit_status}:\n"
        "    print('ERROR: No matching distribution found for recbole==1.2.1',"
        " file=sys.stderr)\n"
        f"    sys.exit({exit_status})\n"
        "target = sys.argv[sys.argv.index('-d') + 1]\n"
        f"shutil.copy({str(wheel)!r}, target)\n"
    )
    script.chmod(0o755)
    return script


@pytest.mark.skipif(os.name != "posix", reason="the fake interpreter is a script")
def test_pip_command_line(tmp_path, monkeypatch):
    monkeypatch.setattr(
        sys, "executable", str(_write_fake_python(tmp_path, exit_status=0))
    )
    monkeypatch.setenv(ML100K_URL_ENV, UNREACHABLE_URL)
    data_dir = tmp_path / "data"

    assert fetch_ml100k(data_dir) == (data_dir / "ml-100k-recbole", "recbole")

    arguments = json.loads((tmp_path / "argv.json").read_text())
    download_dir = arguments[arguments.index("-d") + 1]
    assert Path(download_dir).parent.parent == data_dir
    assert arguments == [
        "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--only-binary", ":all:", "-d", download_dir, "recbole==1.2.1",
    ]  # fmt: skip


@pytest.mark.skipif(os.name != "posix", reason="the fake interpreter is a script")
def test_fetch_both_sources_fail(tmp_path, monkeypatch):
    monkeypatch.setattr(
        sys, "executable", str(_write_fake_python(tmp_path, exit_status=1))
    )
    monkeypatch.setenv(ML100K_URL_ENV, UNREACHABLE_URL)
    data_dir = tmp_path / "data"

    with pytest.raises(DataError, match=r"Failed to obtain MovieLens 100K") as caught:
        fetch_ml100k(data_dir)

    message = str(caught.value)
    assert f"Download from {UNREACHABLE_URL} failed: URLError" in message
    assert "pip exited with status 1: ERROR: No matching distribution" in message
    assert "Download ml-100k.zip by hand" in message
    assert str(data_dir / "ml-100k" / "u.data") in message
    assert leftover_temporary_files(data_dir) == []


def test_move_into_place_lost_race(tmp_path):
    staging = write_grouplens_folder(tmp_path / "staging")
    target = write_grouplens_folder(tmp_path / "ml-100k")

    lrml.data._move_into_place(staging, target, ("u.data", "u.item", "u.user"))

    assert (target / "u.data").is_file()


def test_load_dataset_by_name(tmp_path):
    write_grouplens_folder(tmp_path / "ml-100k")

    dataset = load_dataset("ml-100k", tmp_path)

    assert isinstance(dataset, Dataset)
    assert dataset.source == str(tmp_path / "ml-100k")
    assert len(dataset.interactions) == 5
    assert "interactions=5" in repr(dataset)


def test_load_dataset_unknown_name(tmp_path):
    assert DATASETS == ("ml-100k",)

    with pytest.raises(
        DataError, match=r"Unknown dataset 'ml-1m'\. Use one of: ml-100k"
    ):
        load_dataset("ml-1m", tmp_path)


def _import_data_module_copy(monkeypatch):
    """Execute lrml/data.py again as a separate module, to re-read the environment."""
    spec = importlib.util.spec_from_file_location("data_copy", lrml.data.__file__)
    module = importlib.util.module_from_spec(spec)
    # dataclasses looks the module up in sys.modules while building Dataset.
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


@pytest.mark.network
@pytest.mark.slow
def test_recbole_wheel_from_package_index(tmp_path, monkeypatch):
    monkeypatch.setenv(ML100K_URL_ENV, UNREACHABLE_URL)

    dataset = load_ml100k(tmp_path)

    assert dataset.source == RECBOLE_SOURCE
    assert len(dataset.users) == 943
    assert len(dataset.items) == 1682
    assert len(dataset.interactions) == 100_000
    assert dataset.items["title"].iloc[0] == "Toy Story"
    assert dataset.items["genres"].iloc[0] == "Animation|Children's|Comedy"
