"""Tests for lrml.download against an HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile

import pytest

from lrml.download import (
    DownloadFailed,
    check_zip_members,
    download_file,
    extract_folder,
    fetch_md5,
)
from tests.data_fixtures import http_server, md5_line

BODY = bytes(range(256)) * 5000  # 1.28 MB, so the download takes several chunks


@pytest.fixture
def server(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with http_server() as running:
        yield running


def leftovers(folder):
    return sorted(path.name for path in folder.iterdir())


def test_download_verified_by_md5(tmp_path, server, caplog):
    server.routes["/f.zip"] = (BODY, len(BODY))
    server.routes["/f.zip.md5"] = (
        md5_line(BODY, "f.zip"),
        len(md5_line(BODY, "f.zip")),
    )
    calls = []
    caplog.set_level(logging.INFO, logger="lrml.download")

    download_file(
        f"{server.url}/f.zip",
        tmp_path / "f.zip",
        timeout=5,
        progress=lambda received, total: calls.append((received, total)),
        checksum_url=f"{server.url}/f.zip.md5",
    )

    assert (tmp_path / "f.zip").read_bytes() == BODY
    assert leftovers(tmp_path) == ["f.zip"]
    assert calls[0] == (0, len(BODY))
    assert calls[-1] == (len(BODY), len(BODY))
    assert [received for received, _ in calls] == sorted(r for r, _ in calls)
    assert "MD5 of" in caplog.text


def test_download_truncated(tmp_path, server):
    server.routes["/f.zip"] = (BODY[:1000], len(BODY))

    with pytest.raises(DownloadFailed, match=r"incomplete download: received 1000 of"):
        download_file(f"{server.url}/f.zip", tmp_path / "f.zip", timeout=5)

    assert leftovers(tmp_path) == []


def test_download_checksum_mismatch(tmp_path, server):
    other = md5_line(b"something else", "f.zip")
    server.routes["/f.zip"] = (BODY, len(BODY))
    server.routes["/f.zip.md5"] = (other, len(other))
    (tmp_path / "f.zip").write_bytes(b"the copy saved before")

    with pytest.raises(DownloadFailed, match=r"checksum mismatch: .*f\.zip\.md5 gives"):
        download_file(
            f"{server.url}/f.zip",
            tmp_path / "f.zip",
            timeout=5,
            checksum_url=f"{server.url}/f.zip.md5",
        )

    assert leftovers(tmp_path) == ["f.zip"]
    assert (tmp_path / "f.zip").read_bytes() == b"the copy saved before"


def test_download_without_published_checksum(tmp_path, server, caplog):
    server.routes["/f.zip"] = (BODY, len(BODY))
    caplog.set_level(logging.INFO, logger="lrml.download")

    download_file(
        f"{server.url}/f.zip",
        tmp_path / "f.zip",
        timeout=5,
        checksum_url=f"{server.url}/f.zip.md5",
    )

    assert (tmp_path / "f.zip").is_file()
    assert "No checksum published at" in caplog.text


def test_download_rejected_by_check(tmp_path, server):
    server.routes["/f.zip"] = (BODY, len(BODY))

    def reject(path):
        assert path.read_bytes() == BODY
        raise DownloadFailed("not what we wanted")

    with pytest.raises(DownloadFailed, match="not what we wanted"):
        download_file(
            f"{server.url}/f.zip", tmp_path / "f.zip", timeout=5, check=reject
        )

    assert leftovers(tmp_path) == []


def test_download_404(tmp_path, server):
    with pytest.raises(DownloadFailed, match=r"HTTPError: HTTP Error 404"):
        download_file(f"{server.url}/none.zip", tmp_path / "f.zip", timeout=5)


def test_download_refused_connection(tmp_path):
    with pytest.raises(DownloadFailed, match=r"URLError"):
        download_file("http://127.0.0.1:9/f.zip", tmp_path / "f.zip", timeout=5)


@pytest.mark.parametrize(
    "text",
    [
        "MD5 (ml-20m.zip) = {digest}\n",
        "{digest}  ml-20m.zip\n",
        "{upper}\n",
    ],
    ids=["bsd", "gnu", "bare-upper-case"],
)
def test_fetch_md5_formats(server, text):
    digest = hashlib.md5(BODY).hexdigest()
    body = text.format(digest=digest, upper=digest.upper()).encode()
    server.routes["/x.md5"] = (body, len(body))

    assert fetch_md5(f"{server.url}/x.md5", timeout=5) == digest


def test_fetch_md5_without_digest(server, caplog):
    server.routes["/x.md5"] = (b"<html>moved</html>", 18)

    assert fetch_md5(f"{server.url}/x.md5", timeout=5) is None
    assert "no MD5 digest in" in caplog.text


def build_zip(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_check_zip_members(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(build_zip({"top/a.csv": b"1", "top/b.csv": b"2"}))

    check_zip_members(archive, ["top/a.csv"], "a.zip")
    with pytest.raises(DownloadFailed, match=r"a\.zip is missing top/c\.csv"):
        check_zip_members(archive, ["top/a.csv", "top/c.csv"], "a.zip")

    archive.write_bytes(b"<html>")
    with pytest.raises(DownloadFailed, match=r"a\.zip is not a valid zip file"):
        check_zip_members(archive, ["top/a.csv"], "a.zip")


def test_extract_folder(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(
        build_zip({"top/a.csv": b"1", "top/sub/b.csv": b"2", "other/c.csv": b"3"})
    )

    extract_folder(archive, "top", tmp_path / "top", ("a.csv",))

    assert (tmp_path / "top" / "sub" / "b.csv").read_bytes() == b"2"
    assert leftovers(tmp_path) == ["a.zip", "top"]


def test_extract_folder_bad_crc(tmp_path):
    data = bytearray(build_zip({"top/a.csv": b"hello world"}))
    data[data.index(b"hello world")] = ord("j")
    archive = tmp_path / "a.zip"
    archive.write_bytes(bytes(data))

    with pytest.raises(DownloadFailed, match=r"failed to extract a\.zip: Bad CRC-32"):
        extract_folder(archive, "top", tmp_path / "top", ("a.csv",))

    assert leftovers(tmp_path) == ["a.zip"]
