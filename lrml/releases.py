"""The MovieLens releases: names, zip folders, layouts and GroupLens pages."""

from __future__ import annotations

import dataclasses

_GROUPLENS_SITE = "https://grouplens.org/datasets/movielens/"


@dataclasses.dataclass(frozen=True)
class Release:
    """One MovieLens release as GroupLens publishes it.

    Attributes
    ----------
    name : str
        Name used by `lrml.data.load_dataset`, such as ``"ml-20m"``.
    folder : str
        Top folder inside ``<name>.zip``, which is also the folder under the data
        directory.
    layout : str
        ``"grouplens"``, ``"dat"`` or ``"csv"``.
    page : str
        GroupLens page that describes the release and links the zip.
    """

    name: str
    folder: str
    layout: str
    page: str

    @property
    def zip_name(self) -> str:
        return f"{self.name}.zip"

    @property
    def required_files(self) -> tuple[str, ...]:
        return LAYOUT_FILES[self.layout]


LAYOUT_FILES = {
    "grouplens": ("u.data", "u.item", "u.user"),
    "dat": ("ratings.dat", "movies.dat"),
    "csv": ("ratings.csv", "movies.csv"),
}
RELEASES = {
    release.name: release
    for release in (
        Release("ml-100k", "ml-100k", "grouplens", _GROUPLENS_SITE + "100k/"),
        Release("ml-1m", "ml-1m", "dat", _GROUPLENS_SITE + "1m/"),
        Release("ml-10m", "ml-10M100K", "dat", _GROUPLENS_SITE + "10m/"),
        Release("ml-20m", "ml-20m", "csv", _GROUPLENS_SITE + "20m/"),
        Release("ml-25m", "ml-25m", "csv", _GROUPLENS_SITE + "25m/"),
        Release("ml-32m", "ml-32m", "csv", _GROUPLENS_SITE + "32m/"),
        Release("ml-latest-small", "ml-latest-small", "csv", _GROUPLENS_SITE),
        Release("ml-latest", "ml-latest", "csv", _GROUPLENS_SITE),
    )
}
