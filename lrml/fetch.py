"""Finding the MovieLens releases in the data folder, or fetching them from GroupLens.

For a release such as ``ml-20m``, the sources are tried in this order, and the
one used is logged at INFO:

1. ``data_dir/<folder>/`` with the release's files, for example after unzipping
   the zip there by hand (``<folder>`` is ``ml-10M100K`` for ``ml-10m``);
2. ``data_dir/<name>.zip`` if it is a valid archive;
3. a download of ``<name>.zip`` from ``$LRML_GROUPLENS_URL`` (default
   ``https://files.grouplens.org/datasets/movielens/``), verified against the
   MD5 file that GroupLens publishes beside it;
4. for ``ml-100k`` only: a ``ml-100k-recbole/`` folder of RecBole atomic files,
   looked for before step 2, and as a last resort the MovieLens 100K copy
   inside the ``recbole==1.2.1`` wheel, fetched with ``pip download``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from lrml import recbole
from lrml.dataset import DataError
from lrml.download import (
    DownloadFailed,
    ProgressCallback,
    check_zip_members,
    download_file,
    extract_folder,
    missing_files,
)
from lrml.recbole import RECBOLE_REQUIREMENT, RECBOLE_SOURCE, recbole_names
from lrml.releases import RELEASES, Release

logger = logging.getLogger(__name__)

GROUPLENS_URL_ENV = "LRML_GROUPLENS_URL"
DEFAULT_GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/"
ML100K_URL_ENV = "LRML_ML100K_URL"
RECBOLE_FOLDER = "ml-100k-recbole"


@dataclasses.dataclass(frozen=True)
class Fetched:
    """Location, layout and origin of a release's files.

    Attributes
    ----------
    folder : pathlib.Path
        Folder with the files.
    layout : str
        ``"grouplens"``, ``"dat"``, ``"csv"`` or ``"recbole"``.
    source : str
        Origin of the files: the folder, a zip path, a URL or the wheel.
    """

    folder: Path
    layout: str
    source: str


def release_url(release: Release) -> str:
    """Return the download address of ``release``'s zip, honouring the environment."""
    if release.name == "ml-100k" and os.environ.get(ML100K_URL_ENV):
        return os.environ[ML100K_URL_ENV]
    base = os.environ.get(GROUPLENS_URL_ENV) or DEFAULT_GROUPLENS_URL
    return base.rstrip("/") + "/" + release.zip_name


def locate_release(name: str, data_dir: Path) -> Fetched | None:
    """Return where ``name``'s complete files are in ``data_dir``, or None."""
    release = RELEASES[name]
    folder = data_dir / release.folder
    if not missing_files(folder, release.required_files):
        return Fetched(folder, release.layout, str(folder))

    recbole_folder = data_dir / RECBOLE_FOLDER
    if name == "ml-100k" and not missing_files(recbole_folder, recbole_names(name)):
        return Fetched(recbole_folder, "recbole", str(recbole_folder))
    return None


def fetch_release(
    name: str,
    data_dir: Path,
    *,
    timeout: float = 30.0,
    progress: ProgressCallback | None = None,
) -> Fetched:
    """Find or fetch the files of the MovieLens release ``name``.

    See the module docstring for the order of sources. Downloads and
    extractions go to hidden temporary names inside ``data_dir`` and are
    renamed into place only when complete and verified.

    Raises
    ------
    DataError
        If every source fails (the message gives each reason and how to place
        the files by hand), or a release folder exists but is missing files.
    """
    release = RELEASES[name]
    found = locate_release(name, data_dir)
    if found is not None:
        logger.info("Using %s from %s", name, found.folder)
        return found

    _reject_partial_folders(release, data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    url = release_url(release)
    try:
        source = _obtain_zip(release, data_dir, url, timeout, progress)
        logger.info("Using %s from %s, extracted to %s", name, source, data_dir)
        return Fetched(data_dir / release.folder, release.layout, source)
    except DownloadFailed as error:
        reason = str(error)

    by_hand = (
        f"To place the files by hand, download {release.zip_name} from "
        f"{release.page} on a machine with internet access, then either copy it "
        f"to {data_dir / release.zip_name} or unzip it in {data_dir} so that "
        f"{data_dir / release.folder / release.required_files[0]} exists. Set "
        f"{GROUPLENS_URL_ENV} to download from a mirror."
    )
    if name != "ml-100k":
        raise DataError(
            f"Failed to download {release.zip_name} from {url}: {reason}. {by_hand}"
        )

    logger.warning(
        "Download of %s from %s failed: %s. Trying %s next.",
        name,
        url,
        reason,
        RECBOLE_SOURCE,
    )
    try:
        recbole.extract_recbole_wheel(data_dir, data_dir / RECBOLE_FOLDER)
    except DownloadFailed as error:
        raise DataError(
            f"Failed to obtain MovieLens 100K. Download from {url} failed: "
            f"{reason}. Fallback 'pip download {RECBOLE_REQUIREMENT}' failed: "
            f"{error}. {by_hand}"
        ) from error

    logger.info("Using %s from %s, saved in %s", name, RECBOLE_SOURCE, data_dir)
    return Fetched(data_dir / RECBOLE_FOLDER, "recbole", RECBOLE_SOURCE)


def _reject_partial_folders(release: Release, data_dir: Path) -> None:
    """Raise if a release folder exists but lacks files.

    A partial folder is something a person placed there, and renaming a
    complete one over it would fail, so they must finish or remove it.
    """
    candidates = [(data_dir / release.folder, release.required_files)]
    if release.name == "ml-100k":
        candidates.append((data_dir / RECBOLE_FOLDER, recbole_names("ml-100k")))

    for folder, names in candidates:
        missing = missing_files(folder, names)
        if missing and folder.exists():
            raise DataError(
                f"{folder} exists but is missing {', '.join(missing)}. Add the "
                f"missing files or delete the folder to fetch it again."
            )


def _obtain_zip(
    release: Release,
    data_dir: Path,
    url: str,
    timeout: float,
    progress: ProgressCallback | None,
) -> str:
    """Extract ``data_dir/<name>.zip``, downloading it first if needed.

    Returns the source of the zip: its path when it was already there, else ``url``.
    """
    archive = data_dir / release.zip_name
    target = data_dir / release.folder
    members = [f"{release.folder}/{name}" for name in release.required_files]

    if archive.is_file():
        try:
            check_zip_members(archive, members, str(archive))
            extract_folder(archive, release.folder, target, release.required_files)
            return str(archive)
        except DownloadFailed as error:
            logger.warning("Ignoring %s and downloading again: %s", archive, error)

    def check_and_extract(partial: Path) -> None:
        # Extracting before the rename verifies every member's CRC-32, so a zip
        # in place has been extracted completely at least once.
        check_zip_members(partial, members, "the downloaded file")
        extract_folder(partial, release.folder, target, release.required_files)

    logger.info("Downloading %s from %s", release.zip_name, url)
    download_file(
        url,
        archive,
        timeout=timeout,
        progress=progress,
        checksum_url=url + ".md5",
        check=check_and_extract,
    )
    return url
