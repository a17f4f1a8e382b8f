"""HTTP downloads with progress and checksums, and zip extraction, both all-or-nothing.

A download goes to a hidden ``.part`` file beside its destination and is
renamed into place only after its length, its MD5 checksum (when one is
published) and a caller's check have passed. An extraction goes to a hidden
staging folder that is renamed into place only when complete. So an interrupted
fetch never leaves a file or folder that a later run would take for complete.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int | None], None]
"""Called as ``progress(bytes_received, total_bytes)``, total None if unknown."""

_CHUNK_BYTES = 1 << 20
_MD5_PATTERN = re.compile(r"\b[0-9a-fA-F]{32}\b")


class DownloadFailed(Exception):
    """Failure of one download or extraction, with the reason as the message."""


def download_file(
    url: str,
    destination: Path,
    *,
    timeout: float,
    progress: ProgressCallback | None = None,
    checksum_url: str | None = None,
    check: Callable[[Path], None] | None = None,
) -> None:
    """Download ``url`` to ``destination``, all or nothing.

    Parameters
    ----------
    url : str
        Address of the file.
    destination : pathlib.Path
        Final path. Its folder must exist.
    timeout : float
        Socket timeout in seconds for each network operation.
    progress : callable, optional
        Called after each chunk with the bytes received and the total, if known.
    checksum_url : str, optional
        Address of an MD5 checksum file, such as ``url + ".md5"``. A 404 means
        no checksum is published, so the download is not verified against one.
    check : callable, optional
        Called with the path of the complete download before it is renamed;
        raises DownloadFailed to reject it.

    Raises
    ------
    DownloadFailed
        If the connection fails, the body is shorter than its Content-Length,
        the checksum differs or ``check`` rejects the file. Nothing is left at
        ``destination`` or beside it.
    """
    handle, partial_name = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".part"
    )
    partial = Path(partial_name)
    try:
        with os.fdopen(handle, "wb") as output:
            digest = _copy_url(url, output, timeout, progress)

        if checksum_url is not None:
            expected = fetch_md5(checksum_url, timeout)
            if expected is not None and expected != digest:
                raise DownloadFailed(
                    f"checksum mismatch: {checksum_url} gives MD5 {expected}, but "
                    f"the downloaded file has MD5 {digest}"
                )
            if expected is not None:
                logger.info("MD5 of %s matches %s", url, checksum_url)

        if check is not None:
            check(partial)
        partial.replace(destination)
    finally:
        partial.unlink(missing_ok=True)


def _copy_url(
    url: str, output, timeout: float, progress: ProgressCallback | None
) -> str:
    """Copy the body at ``url`` to ``output`` and return its MD5 as hex."""
    digest = hashlib.md5(usedforsecurity=False)
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None and length.isdigit() else None
            if progress is not None:
                progress(0, total)
            while chunk := response.read(_CHUNK_BYTES):
                output.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(received, total)
    except (OSError, http.client.HTTPException, ValueError) as error:
        # URLError, HTTPError and socket timeouts are OSErrors. ValueError is
        # what urlopen raises for a malformed URL.
        raise DownloadFailed(f"{type(error).__name__}: {error}") from error

    # http.client returns a short body without error when the server closes
    # the connection early, so a truncated download is caught only here.
    if total is not None and total != received:
        raise DownloadFailed(
            f"incomplete download: received {received} of {total} bytes"
        )
    return digest.hexdigest()


def fetch_md5(url: str, timeout: float) -> str | None:
    """Return the MD5 hex digest published at ``url``, or None if there is none.

    GroupLens publishes ``<zip>.md5`` files in the BSD form
    ``MD5 (ml-20m.zip) = <hex>``; the GNU form ``<hex>  ml-20m.zip`` also works.
    A 404 is logged at INFO, and any other failure at WARNING, because the zip
    members' CRC-32 checks during extraction still catch most corruption.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read(4096).decode("ascii", errors="replace")
    except urllib.error.HTTPError as error:
        if error.code == 404:
            logger.info("No checksum published at %s, so none is verified", url)
        else:
            logger.warning("Checksum %s not verified: %s", url, error)
        return None
    except (OSError, http.client.HTTPException, ValueError) as error:
        logger.warning(
            "Checksum %s not verified: %s: %s", url, type(error).__name__, error
        )
        return None

    match = _MD5_PATTERN.search(text)
    if match is None:
        logger.warning("Checksum %s not verified: no MD5 digest in %r", url, text[:80])
        return None
    return match.group(0).lower()


def check_zip_members(archive: Path, required: list[str], description: str) -> None:
    """Raise DownloadFailed unless ``archive`` is a zip that lists ``required``."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            names = set(bundle.namelist())
    except (zipfile.BadZipFile, OSError) as error:
        raise DownloadFailed(
            f"{description} is not a valid zip file: {error}"
        ) from error

    missing = [name for name in required if name not in names]
    if missing:
        raise DownloadFailed(f"{description} is missing {', '.join(missing)}")


def extract_folder(
    archive: Path, member_folder: str, target: Path, required: tuple[str, ...]
) -> None:
    """Extract ``member_folder/`` of ``archive`` to ``target`` through a staging folder.

    Raises
    ------
    DownloadFailed
        If the archive is invalid, a member fails its CRC-32 check, or the
        extracted folder lacks a ``required`` file.
    """
    staging = Path(
        tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.extract.")
    )
    try:
        with zipfile.ZipFile(archive) as bundle:
            # ZipFile.extract drops ".." and absolute parts from member names.
            for member in bundle.infolist():
                if member.filename.startswith(f"{member_folder}/"):
                    bundle.extract(member, staging)
        move_into_place(staging / member_folder, target, required)
    except (zipfile.BadZipFile, OSError) as error:
        # ZipFile raises BadZipFile for a member whose CRC-32 does not match.
        raise DownloadFailed(f"failed to extract {archive.name}: {error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def missing_files(folder: Path, names: tuple[str, ...]) -> list[str]:
    """Return the ``names`` that are not files in ``folder``."""
    return [name for name in names if not (folder / name).is_file()]


def move_into_place(staging: Path, target: Path, names: tuple[str, ...]) -> None:
    """Rename ``staging`` to ``target``, unless another process filled it first."""
    missing = missing_files(staging, names)
    if missing:
        raise DownloadFailed(f"the extracted files are missing {', '.join(missing)}")

    try:
        staging.rename(target)
    except OSError:
        if missing_files(target, names):
            raise
        logger.info("Another process has already created %s, so it is used", target)
