"""Tests for lrml.fetch: finding releases on disk or downloading them from a mirror.

Downloads go to an HTTP server on 127.0.0.1 that serves fixture zips, so no
MovieLens data is stored or fetched.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest

import lrml.recbole
from lrml.dataset import DataError
from lrml.fetch import (
    GROUPLENS_URL_ENV,
    ML100K_URL_ENV,
    fetch_release,
    locate_release,
    release_url,
)
from lrml.recbole import RECBOLE_SOURCE
from lrml.releases import RELEASES
from tests.data_fixtures import (
    build_recbole_wheel,
    http_server,
    md5_line,
    release_zip,
    write_ml100k,
    write_recbole_folder,
    write_release,
)

# Refuses connections at once, so a download from it fails fast.
UNREACHABLE_URL = "http://127.0.0.1:9/"


@pytest.fixture
def server(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with http_server() as running:
        monkeypatch.setenv(GROUPLENS_URL_ENV, running.url + "/mirror/")
        monkeypatch.delenv(ML100K_URL_ENV, raising=False)
        yield running


@pytest.fixture
def fake_pip(tmp_path, monkeypatch):
    """Replace the pip run with a copy of the fixture wheel, and count the calls."""
    wheel = build_recbole_wheel(tmp_path / "wheelhouse")
    calls = []

    def copy_wheel(download_dir: Path) -> None:
        calls.append(download_dir)
        (download_dir / wheel.name).write_bytes(wheel.read_bytes())

    monkeypatch.setattr(lrml.recbole, "pip_download_recbole", copy_wheel)
    return calls


def serve_release(server, name, body, *, checksum=True):
    server.routes[f"/mirror/{name}.zip"] = (body, len(body))
    if checksum:
        line = md5_line(body, f"{name}.zip")
        server.routes[f"/mirror/{name}.zip.md5"] = (line, len(line))


def leftover_temporary_files(data_dir: Path) -> list[str]:
    return sorted(path.name for path in data_dir.iterdir() if path.name.startswith("."))


@pytest.mark.parametrize("name", ["ml-1m", "ml-10m", "ml-20m", "ml-latest-small"])
def test_download_release(tmp_path, server, name):
    body = release_zip(name, tmp_path)
    serve_release(server, name, body)
    data_dir = tmp_path / "data"
    progress = []

    fetched = fetch_release(
        name, data_dir, progress=lambda done, total: progress.append((done, total))
    )

    folder = data_dir / RELEASES[name].folder
    assert fetched.folder == folder
    assert fetched.layout == RELEASES[name].layout
    assert fetched.source == f"{server.url}/mirror/{name}.zip"
    assert (data_dir / f"{name}.zip").read_bytes() == body
    for file_name in RELEASES[name].required_files:
        assert (folder / file_name).is_file()
    assert server.requests == [f"/mirror/{name}.zip", f"/mirror/{name}.zip.md5"]
    assert progress[-1] == (len(body), len(body))
    assert leftover_temporary_files(data_dir) == []


def test_release_on_disk_needs_no_download(tmp_path, server):
    folder = write_release("ml-25m", tmp_path)

    fetched = fetch_release("ml-25m", tmp_path)

    assert fetched.folder == folder
    assert fetched.source == str(folder)
    assert server.requests == []


def test_existing_zip_is_extracted(tmp_path, server):
    (tmp_path / "ml-32m.zip").write_bytes(release_zip("ml-32m", tmp_path / "scratch"))

    fetched = fetch_release("ml-32m", tmp_path)

    assert fetched.source == str(tmp_path / "ml-32m.zip")
    assert (tmp_path / "ml-32m" / "ratings.csv").is_file()
    assert server.requests == []


def test_corrupt_zip_is_downloaded_again(tmp_path, server, caplog):
    (tmp_path / "ml-1m.zip").write_bytes(b"not a zip")
    body = release_zip("ml-1m", tmp_path / "scratch")
    serve_release(server, "ml-1m", body)

    fetched = fetch_release("ml-1m", tmp_path)

    assert fetched.source.endswith("/mirror/ml-1m.zip")
    assert (tmp_path / "ml-1m.zip").read_bytes() == body
    assert "Ignoring" in caplog.text


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("truncated", r"incomplete download: received \d+ of \d+ bytes"),
        ("checksum-mismatch", r"checksum mismatch: .*ml-20m\.zip\.md5 gives MD5"),
        ("not-a-zip", r"the downloaded file is not a valid zip file"),
        ("missing-member", r"the downloaded file is missing ml-20m/movies\.csv"),
        ("not-found", r"HTTPError: HTTP Error 404"),
    ],
)
def test_failed_download_leaves_nothing(tmp_path, server, case, reason):
    body = release_zip("ml-20m", tmp_path / "scratch")
    if case == "truncated":
        server.routes["/mirror/ml-20m.zip"] = (body[: len(body) // 2], len(body))
    elif case == "checksum-mismatch":
        serve_release(server, "ml-20m", body)
        tampered = body[:-1] + bytes([body[-1] ^ 1])
        server.routes["/mirror/ml-20m.zip"] = (tampered, len(tampered))
    elif case == "not-a-zip":
        serve_release(server, "ml-20m", b"<html>moved</html>", checksum=False)
    elif case == "missing-member":
        other = release_zip("ml-20m", tmp_path / "other", omit="movies.csv")
        serve_release(server, "ml-20m", other)
    data_dir = tmp_path / "data"
    write_release("ml-1m", data_dir)
    before = {path: path.read_bytes() for path in data_dir.rglob("*") if path.is_file()}

    with pytest.raises(DataError, match=reason) as caught:
        fetch_release("ml-20m", data_dir)

    message = str(caught.value)
    assert message.startswith(f"Failed to download ml-20m.zip from {server.url}")
    assert "To place the files by hand, download ml-20m.zip from" in message
    assert str(data_dir / "ml-20m" / "ratings.csv") in message
    assert sorted(path.name for path in data_dir.iterdir()) == ["ml-1m"]
    after = {path: path.read_bytes() for path in data_dir.rglob("*") if path.is_file()}
    assert after == before


def test_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv(GROUPLENS_URL_ENV, UNREACHABLE_URL)

    with pytest.raises(DataError) as caught:
        fetch_release("ml-25m", tmp_path / "data")

    message = str(caught.value)
    assert "Failed to download ml-25m.zip from http://127.0.0.1:9/ml-25m.zip" in message
    assert "URLError" in message
    assert "https://grouplens.org/datasets/movielens/25m/" in message
    assert f"copy it to {tmp_path / 'data' / 'ml-25m.zip'}" in message
    assert f"Set {GROUPLENS_URL_ENV} to download from a mirror" in message


def test_partial_folder_is_an_error(tmp_path, server):
    folder = write_release("ml-20m", tmp_path)
    (folder / "movies.csv").unlink()

    with pytest.raises(DataError, match=r"ml-20m exists but is missing movies\.csv"):
        fetch_release("ml-20m", tmp_path)

    assert server.requests == []


def test_release_url(monkeypatch):
    monkeypatch.delenv(GROUPLENS_URL_ENV, raising=False)
    monkeypatch.delenv(ML100K_URL_ENV, raising=False)
    assert release_url(RELEASES["ml-10m"]) == (
        "https://files.grouplens.org/datasets/movielens/ml-10m.zip"
    )

    monkeypatch.setenv(GROUPLENS_URL_ENV, "http://mirror.example/ml")
    assert release_url(RELEASES["ml-10m"]) == "http://mirror.example/ml/ml-10m.zip"

    monkeypatch.setenv(ML100K_URL_ENV, "http://other.example/100k.zip")
    assert release_url(RELEASES["ml-100k"]) == "http://other.example/100k.zip"
    assert release_url(RELEASES["ml-1m"]) == "http://mirror.example/ml/ml-1m.zip"


def test_locate_release(tmp_path):
    assert locate_release("ml-1m", tmp_path) is None

    write_release("ml-1m", tmp_path)

    assert locate_release("ml-1m", tmp_path).folder == tmp_path / "ml-1m"


# MovieLens 100K and its RecBole fallback ---------------------------------------


def test_ml100k_grouplens_folder_wins(tmp_path, fake_pip, monkeypatch):
    write_ml100k(tmp_path / "ml-100k")
    write_recbole_folder(tmp_path / "ml-100k-recbole")
    monkeypatch.setenv(ML100K_URL_ENV, UNREACHABLE_URL)

    fetched = fetch_release("ml-100k", tmp_path)

    assert (fetched.folder, fetched.layout) == (tmp_path / "ml-100k", "grouplens")
    assert fake_pip == []


def test_ml100k_recbole_folder_second(tmp_path, server, fake_pip):
    write_recbole_folder(tmp_path / "ml-100k-recbole")

    fetched = fetch_release("ml-100k", tmp_path)

    assert (fetched.folder, fetched.layout) == (tmp_path / "ml-100k-recbole", "recbole")
    assert fake_pip == []
    assert server.requests == []


def test_ml100k_download(tmp_path, server, fake_pip):
    body = release_zip("ml-100k", tmp_path)
    serve_release(server, "ml-100k", body, checksum=False)
    data_dir = tmp_path / "data"

    fetched = fetch_release("ml-100k", data_dir)

    assert fetched.source == f"{server.url}/mirror/ml-100k.zip"
    assert (data_dir / "ml-100k" / "u.genre").is_file()
    assert fake_pip == []
    assert leftover_temporary_files(data_dir) == []


def test_ml100k_url_variable(tmp_path, server, fake_pip, monkeypatch):
    body = release_zip("ml-100k", tmp_path)
    server.routes["/elsewhere.zip"] = (body, len(body))
    monkeypatch.setenv(ML100K_URL_ENV, f"{server.url}/elsewhere.zip")

    fetched = fetch_release("ml-100k", tmp_path / "data")

    assert fetched.source == f"{server.url}/elsewhere.zip"


@pytest.mark.parametrize(
    ("route", "reason"),
    [("truncated", "incomplete download: received"), ("missing", "HTTP Error 404")],
)
def test_ml100k_bad_download_falls_back(
    tmp_path, server, fake_pip, caplog, route, reason
):
    body = release_zip("ml-100k", tmp_path)
    if route == "truncated":
        server.routes["/mirror/ml-100k.zip"] = (body[: len(body) // 2], len(body))
    data_dir = tmp_path / "data"

    fetched = fetch_release("ml-100k", data_dir)

    assert (fetched.folder, fetched.layout) == (data_dir / "ml-100k-recbole", "recbole")
    assert fetched.source == RECBOLE_SOURCE
    assert len(fake_pip) == 1
    assert not (data_dir / "ml-100k.zip").exists()
    assert not (data_dir / "ml-100k").exists()
    assert leftover_temporary_files(data_dir) == []
    assert reason in caplog.text
    assert any(record.levelno == logging.WARNING for record in caplog.records)


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
    monkeypatch.setenv(ML100K_URL_ENV, UNREACHABLE_URL + "ml-100k.zip")
    data_dir = tmp_path / "data"

    fetched = fetch_release("ml-100k", data_dir)

    assert fetched.folder == data_dir / "ml-100k-recbole"
    arguments = json.loads((tmp_path / "argv.json").read_text())
    download_dir = arguments[arguments.index("-d") + 1]
    assert Path(download_dir).parent.parent == data_dir
    assert arguments == [
        "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--only-binary", ":all:", "-d", download_dir, "recbole==1.2.1",
    ]  # fmt: skip


@pytest.mark.skipif(os.name != "posix", reason="the fake interpreter is a script")
def test_ml100k_both_sources_fail(tmp_path, monkeypatch):
    monkeypatch.setattr(
        sys, "executable", str(_write_fake_python(tmp_path, exit_status=1))
    )
    url = UNREACHABLE_URL + "ml-100k.zip"
    monkeypatch.setenv(ML100K_URL_ENV, url)
    data_dir = tmp_path / "data"

    with pytest.raises(DataError, match=r"Failed to obtain MovieLens 100K") as caught:
        fetch_release("ml-100k", data_dir)

    message = str(caught.value)
    assert f"Download from {url} failed: URLError" in message
    assert "pip exited with status 1: ERROR: No matching distribution" in message
    assert "To place the files by hand, download ml-100k.zip" in message
    assert str(data_dir / "ml-100k" / "u.data") in message
    assert leftover_temporary_files(data_dir) == []
