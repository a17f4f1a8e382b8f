"""Benchmark the parse and the cached load of a MovieLens-20M-sized dataset.

Writes a synthetic folder in the ml-20m layout (``ratings.csv`` with 20 million
rows in the release's format, and ``movies.csv`` with quoted titles), then
loads it with `lrml.data.load_dataset` in child processes:

- first parse: with an empty cache, so the CSV files are parsed and the
  parquet cache is written;
- cached load: the same call again, which reads the parquet cache.

Each measurement runs in a fresh child process, whose peak resident memory
comes from ``os.wait4``. The script prints every run and the median of each.
Targets: first parse under 60 s, cached load under 5 s, peak memory under 4 GB.

Usage::

    .venv/bin/python bench/bench_data.py [--rows 20000000] [--repeats 3]
        [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

REPOSITORY = Path(__file__).resolve().parent.parent
# Shape of ml-20m: 138,493 users, 27,278 movies with ids up to 131,262.
USERS = 138_493
MOVIES = 27_278
MAX_MOVIE_ID = 131_262
GENRES = ["Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical",
          "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]  # fmt: skip
TARGETS = {"parse": 60.0, "cached": 5.0}
MEMORY_TARGET_GB = 4.0


def write_movies(folder: Path, movie_ids: np.ndarray, rng: np.random.Generator) -> None:
    lines = ["movieId,title,genres"]
    for index, movie_id in enumerate(movie_ids):
        year = 1900 + index % 120
        # Every tenth title has no year, and every title has a comma, so it is quoted.
        title = f"Movie {movie_id}, The" + ("" if index % 10 == 0 else f" ({year})")
        count = int(rng.integers(0, 4))
        genres = "|".join(rng.choice(GENRES, count, replace=False)) or (
            "(no genres listed)"
        )
        lines.append(f'{movie_id},"{title}",{genres}')
    (folder / "movies.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_ratings(
    folder: Path, rows: int, movie_ids: np.ndarray, rng: np.random.Generator
) -> None:
    """Write ratings.csv like ml-20m: sorted by user, half stars as "3.5" and "4.0"."""
    labels = pa.array([f"{value / 2:.1f}" for value in range(1, 11)])
    path = folder / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n", encoding="utf-8")
    chunk = 5_000_000
    users = np.sort(rng.integers(1, USERS + 1, rows))
    with open(path, "ab") as output:
        for start in range(0, rows, chunk):
            size = min(chunk, rows - start)
            # Popular movies are rated far more often, as in MovieLens.
            ranks = np.minimum(rng.zipf(1.2, size), len(movie_ids)) - 1
            codes = pa.array(rng.integers(0, 10, size), pa.int8())
            table = pa.table(
                {
                    "userId": users[start : start + size],
                    "movieId": movie_ids[ranks],
                    "rating": pa.DictionaryArray.from_arrays(codes, labels).cast(
                        pa.string()
                    ),
                    "timestamp": rng.integers(789_652_009, 1_427_784_002, size),
                }
            )
            pa_csv.write_csv(
                table,
                output,
                write_options=pa_csv.WriteOptions(
                    include_header=False, quoting_style="none"
                ),
            )


def generate(folder: Path, rows: int) -> None:
    rng = np.random.default_rng(20)
    folder.mkdir(parents=True)
    movie_ids = np.sort(rng.choice(np.arange(1, MAX_MOVIE_ID + 1), MOVIES, False))
    write_movies(folder, movie_ids, rng)
    write_ratings(folder, rows, movie_ids, rng)


def run_child(folder: Path, data_dir: Path) -> dict:
    """Load the dataset in a child process and return its times and peak memory.

    ``seconds`` is the `load_dataset` call alone, ``process_seconds`` the whole
    child process, ``cpu_seconds`` the child's user and system CPU time (less
    sensitive than wall time to other processes on a shared machine), and
    ``peak_gb`` the child's peak resident memory.
    """
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", str(folder), str(data_dir)],
        stdout=subprocess.PIPE,
        cwd=REPOSITORY,
    )
    output = process.stdout.read()
    process.stdout.close()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"the child process failed with status {process.returncode}")
    result = json.loads(output)
    result["process_seconds"] = time.perf_counter() - started
    # ru_maxrss is in KiB on Linux.
    result["peak_gb"] = usage.ru_maxrss * 1024 / 1e9
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    return result


def child(folder: str, data_dir: str) -> None:
    sys.path.insert(0, str(REPOSITORY))
    from lrml.data import load_dataset

    started = time.perf_counter()
    dataset = load_dataset(folder, Path(data_dir))
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rows": len(dataset.interactions)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="folder for the files (temp)")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="lrml-bench-data-"))
    folder = workdir / "ml-20m"
    data_dir = workdir / "data"
    try:
        if not (folder / "ratings.csv").is_file():
            started = time.perf_counter()
            generate(folder, args.rows)
            size = (folder / "ratings.csv").stat().st_size / 1e6
            print(
                f"generated {args.rows:,} ratings ({size:.0f} MB) in "
                f"{time.perf_counter() - started:.0f} s"
            )

        results: dict[str, list[dict]] = {"parse": [], "cached": []}
        for repeat in range(args.repeats):
            shutil.rmtree(data_dir, ignore_errors=True)
            for mode in ("parse", "cached"):
                result = run_child(folder, data_dir)
                assert result["rows"] == args.rows, result
                results[mode].append(result)
                print(
                    f"run {repeat + 1} {mode:6s}: {result['seconds']:6.2f} s "
                    f"({result['process_seconds']:.2f} s with Python start-up and "
                    f"imports, {result['cpu_seconds']:.2f} s of CPU), "
                    f"peak {result['peak_gb']:.2f} GB"
                )

        print(
            f"\n{args.rows:,} rows, {os.cpu_count()} CPUs, medians of {args.repeats}:"
        )
        for mode, label in (("parse", "first parse"), ("cached", "cached load")):
            seconds = statistics.median(r["seconds"] for r in results[mode])
            cpu = statistics.median(r["cpu_seconds"] for r in results[mode])
            peak = max(r["peak_gb"] for r in results[mode])
            print(
                f"  {label}: {seconds:.2f} s (target < {TARGETS[mode]:.0f} s), "
                f"{cpu:.2f} s of CPU in the whole process, peak memory "
                f"{peak:.2f} GB (target < {MEMORY_TARGET_GB:.0f} GB)"
            )
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
