"""Small MovieLens-shaped files for the data tests, written at test time.

Nothing here is MovieLens data: every file is a few hand-written lines in the
layout of one release, with the hard cases of the real files (latin-1 accents,
titles with commas, colons and ``::``, missing years, non-contiguous ids).
Also a local HTTP server for download tests, bound to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd

from lrml.movielens import GROUPLENS_GENRES
from lrml.releases import RELEASES


def genre_flags(*genres: str) -> str:
    return "|".join("1" if name in genres else "0" for name in GROUPLENS_GENRES)


# MovieLens 100K: non-contiguous user ids 3, 7, 10, in an order that is not sorted.
U_DATA = (
    "10\t1\t4\t881250949\n"
    "7\t1682\t3\t891717742\n"
    "10\t543\t5\t878887116\n"
    "3\t267\t1\t880606923\n"
    "7\t543\t2\t886397596\n"
)
TOY_STORY_FLAGS = genre_flags("Animation", "Children's", "Comedy")
LAND_BEFORE_TIME_FLAGS = genre_flags("Animation", "Children's")
# Written latin-1. Item 267 is the real "unknown" entry with no date, item 1412
# ends in "(V)" after its year, and item 1682 starts with a double quote and
# has no genre flag set.
U_ITEM = (
    "543|Misérables, Les (1995)|01-Jan-1995||http://us.imdb.com/M/"
    "title-exact?Mis%E9rables%2C%20Les%20%281995%29|"
    f"{genre_flags('Drama', 'Musical')}\n"
    "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story|"
    f"{TOY_STORY_FLAGS}\n"
    f"267|unknown||||{genre_flags('unknown')}\n"
    "1412|Land Before Time III: The Time of the Great Giving (1995) (V)|"
    "01-Jan-1995||http://us.imdb.com/M/title-exact?Land|"
    f"{LAND_BEFORE_TIME_FLAGS}\n"
    '1682|"Scream" of Stone (Schrei aus Stein) (1991)|08-Mar-1996||'
    f"http://us.imdb.com/M/title-exact?Scream|{genre_flags()}\n"
)
U_USER = "10|53|F|other|94043\n3|23|M|writer|T8H1N\n7|24|M|technician|01002\n"
U_GENRE = "".join(f"{name}|{index}\n" for index, name in enumerate(GROUPLENS_GENRES))

# MovieLens 1M and 10M: "::" separators, latin-1, and a title that contains "::".
RATINGS_DAT = (
    "6040::3952::5::956703932\n"
    "6040::2::3::956703954\n"
    "12::3952::4::978300760\n"
    "12::7::1::978301968\n"
    "12::2::2::978302109\n"
)
MOVIES_DAT = (
    "2::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Sci-Fi\n"
    "3952::Misérables, Les (1998)::Drama\n"
    "7::Two::Colons: A Title (2000)::Comedy|Drama\n"
    "999::Never Rated (1990)::(no genres listed)\n"
)
USERS_DAT = "12::F::25::10::48067\n6040::M::56::16::70072\n"

# CSV releases: UTF-8, quoted titles with commas and quotes, half-star ratings.
RATINGS_CSV = (
    "userId,movieId,rating,timestamp\n"
    "5,10,4.0,964982703\n"
    "5,20,3.5,964981247\n"
    "9,10,0.5,1445714835\n"
    "9,30,5.0,1445714885\n"
    "9,40,2.5,1445715029\n"
)
MOVIES_CSV = (
    "movieId,title,genres\n"
    '10,"American President, The (1995)",Comedy|Drama|Romance\n'
    '20,"""Great"" Escape, The (1963)",Action|War\n'
    "30,Amélie (Fabuleux destin d'Amélie Poulain: Le) (2001),Comedy|Romance\n"
    "40,Hyena Road,(no genres listed)\n"
    "50,Fawlty Towers (1975-1979),Comedy\n"
)
TAGS_CSV = 'userId,movieId,tag,timestamp\n5,10,"funny, smart",1445714994\n'


# The tables that U_DATA and U_USER, or ML100K_INTER and ML100K_USER, parse to.
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
# RecBole atomic files of the same ratings as U_DATA. RecBole 1.2.1 spells the
# unknown title and year "unkonwn", and gives item 1412 the year "V".
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


def write_ml100k(folder: Path, *, genre_file: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "u.data").write_text(U_DATA, encoding="latin-1")
    (folder / "u.item").write_bytes(U_ITEM.encode("latin-1"))
    (folder / "u.user").write_text(U_USER, encoding="latin-1")
    if genre_file:
        # The real u.genre ends with a blank line.
        (folder / "u.genre").write_text(U_GENRE + "\n", encoding="latin-1")
    return folder


def write_ml1m(folder: Path, *, users: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "ratings.dat").write_text(RATINGS_DAT, encoding="latin-1")
    (folder / "movies.dat").write_bytes(MOVIES_DAT.encode("latin-1"))
    if users:
        (folder / "users.dat").write_text(USERS_DAT, encoding="latin-1")
    return folder


def write_csv_release(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "ratings.csv").write_text(RATINGS_CSV, encoding="utf-8")
    (folder / "movies.csv").write_text(MOVIES_CSV, encoding="utf-8")
    (folder / "tags.csv").write_text(TAGS_CSV, encoding="utf-8")
    return folder


def write_recbole_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "ml-100k.inter").write_text(ML100K_INTER, encoding="utf-8")
    (folder / "ml-100k.item").write_text(ML100K_ITEM, encoding="utf-8")
    (folder / "ml-100k.user").write_text(ML100K_USER, encoding="utf-8")
    return folder


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


def write_release(name: str, data_dir: Path) -> Path:
    """Write the fixture of release ``name`` into its folder under ``data_dir``."""
    release = RELEASES[name]
    folder = data_dir / release.folder
    if release.layout == "grouplens":
        return write_ml100k(folder)
    if release.layout == "dat":
        return write_ml1m(folder, users=name == "ml-1m")
    return write_csv_release(folder)


def release_zip(name: str, scratch: Path, *, omit: str | None = None) -> bytes:
    """Return a zip shaped like GroupLens's ``<name>.zip``, built from the fixture."""
    folder = write_release(name, scratch / f"zip-source-{name}-{omit}")
    top = RELEASES[name].folder
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{top}/", "")
        for path in sorted(folder.iterdir()):
            if path.name != omit:
                archive.write(path, f"{top}/{path.name}")
    return buffer.getvalue()


def md5_line(body: bytes, file_name: str) -> bytes:
    """Return a checksum file in the BSD form that GroupLens publishes."""
    return f"MD5 ({file_name}) = {hashlib.md5(body).hexdigest()}\n".encode()


@contextlib.contextmanager
def http_server() -> Iterator[ThreadingHTTPServer]:
    """Serve ``server.routes[path] = (body, content_length)`` on 127.0.0.1.

    A content_length larger than the body simulates a dropped connection. Paths
    without a route get a 404, and ``server.requests`` lists every requested path.
    """
    routes: dict[str, tuple[bytes, int]] = {}
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            if self.path not in routes:
                self.send_error(404)
                return
            body, content_length = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
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
    server.requests = requests
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
