"""Time the Embeddings page's projections on a trained MovieLens-100K run.

Prints the following, as medians over ``--repeats`` runs where marked:

- UMAP of users and movies (2,625 points) in a new process, split into
  importing umap-learn, the first fit and a second fit in the same process,
  with numba's disk cache warm and, once, with an empty cache (the JIT cost);
- the same fit with umap-learn's own neighbour search instead of the exact
  neighbours that `lrml.projection` passes in;
- reading that projection back from the parquet cache;
- UMAP of 20,000 relation vectors;
- the Embeddings page re-rendered from the cache (AppTest, so no browser);
- the size and build time of the largest figure the page offers.

Usage::

    .venv/bin/python bench/bench_projection.py --run models/NAME [--repeats 3]

Wall-clock times on a shared machine are noisy; the CPU seconds of the
measuring process are printed beside them and vary less.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Runs in a new process: everything up to the first UMAP fit is "cold".
COLD_CHILD = """
import json, sys, time
import torch
torch.set_num_threads(1)
from lrml.inference import load_run
from lrml.projection import build_points, project
points = build_points(load_run(sys.argv[1]), "users_items", 5000, 0)
wall, cpu = time.perf_counter(), time.process_time()
import umap
imported = (time.perf_counter() - wall, time.process_time() - cpu)
wall, cpu = time.perf_counter(), time.process_time()
project(points.vectors, method="umap", seed=0)
first = (time.perf_counter() - wall, time.process_time() - cpu)
wall, cpu = time.perf_counter(), time.process_time()
project(points.vectors, method="umap", seed=1)
second = (time.perf_counter() - wall, time.process_time() - cpu)
print(json.dumps({"n": len(points.vectors), "import": imported, "first": first,
                  "second": second}))
"""


def timed(function, *args, **kwargs) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def median_pair(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(p[0] for p in pairs), statistics.median(
        p[1] for p in pairs
    )


def show(label: str, wall: float, cpu: float | None = None, note: str = "") -> None:
    cpu_text = f"{cpu:8.3f} s CPU" if cpu is not None else " " * 14
    print(f"{label:<58} {wall:8.3f} s wall  {cpu_text}  {note}")


def cold_runs(run: str, repeats: int, numba_cache_dir: str | None) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if numba_cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = numba_cache_dir
    results = []
    for _ in range(repeats):
        output = subprocess.run(
            [sys.executable, "-c", COLD_CHILD, run],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    return results


def report_cold(results: list[dict], label: str) -> None:
    for part in ("import", "first", "second"):
        wall, cpu = median_pair([result[part] for result in results])
        name = {"import": "import umap", "first": "first fit", "second": "second fit"}
        show(f"{label}: {name[part]}", wall, cpu, f"(median of {len(results)})")
    totals = [r["import"][0] + r["first"][0] for r in results]
    show(f"{label}: cold total (import + first fit)", statistics.median(totals))


def bench_umap_defaults(vectors, repeats: int) -> None:
    """Fit with umap-learn's own neighbour search, for comparison."""
    import umap

    times = []
    for seed in range(repeats):
        reducer = umap.UMAP(random_state=seed, n_jobs=1)
        wall, cpu, _ = timed(reducer.fit_transform, vectors)
        times.append((wall, cpu))
    wall, cpu = median_pair(times)
    show(
        "umap-learn defaults (no precomputed neighbours)",
        wall,
        cpu,
        f"(median of {repeats})",
    )


def bench_cache_read(loaded, points, repeats: int) -> None:
    from lrml.projection import ProjectionSettings, cache_path, cached_projection

    with tempfile.TemporaryDirectory() as folder:
        key = {"bench": True}
        cached_projection(folder, key, points.vectors, method="umap")
        path = cache_path(folder, key, ProjectionSettings())
        times = [
            timed(cached_projection, folder, key, points.vectors, method="umap")[:2]
            for _ in range(repeats * 10)
        ]
    wall, cpu = median_pair(times)
    show(
        f"read the {len(points.vectors):,}-point UMAP from {path.suffix}",
        wall,
        cpu,
        f"(median of {repeats * 10})",
    )


def bench_relations(loaded, repeats: int) -> None:
    from lrml.projection import build_points, project

    wall, cpu, points = timed(build_points, loaded, "relations", 20_000, 0)
    show("collect 20,000 relation vectors", wall, cpu)
    times = [
        timed(project, points.vectors, method="umap", seed=seed)[:2]
        for seed in range(repeats)
    ]
    wall, cpu = median_pair(times)
    show("UMAP of 20,000 relation vectors", wall, cpu, f"(median of {repeats})")


def bench_page(run_path: Path, repeats: int) -> None:
    """Re-render the page from a warm cache with AppTest, as a browser rerun would."""
    from streamlit.testing.v1 import AppTest

    os.environ["LRML_MODELS_DIR"] = str(run_path.parent)
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    app.query_params["run"] = run_path.name
    app.run()
    app.switch_page("pages/embeddings.py").run()
    # Wait for the default UMAP to be cached, then time reruns.
    deadline = time.monotonic() + 600
    while (
        "PCA preview"
        in json.loads(app.get("plotly_chart")[0].proto.spec)["layout"]["title"]["text"]
    ):
        if time.monotonic() > deadline:
            raise TimeoutError("the page's UMAP did not finish in 600 s")
        time.sleep(1)
        app.run()
    times = [timed(app.run)[:2] for _ in range(repeats * 3)]
    wall, cpu = median_pair(times)
    show(
        "Embeddings page rerun from cache (AppTest, 2,625 points)",
        wall,
        cpu,
        f"(median of {repeats * 3})",
    )

    app.select_slider(key="embeddings_sample_size").set_value(20_000)
    app.selectbox(key="embeddings_kind").set_value("translated")
    app.radio(key="embeddings_method").set_value("pca")
    app.button(key="embeddings_project").click().run()
    times = [timed(app.run)[:2] for _ in range(repeats)]
    wall, cpu = median_pair(times)
    spec = app.get("plotly_chart")[0].proto.spec
    show(
        "page rerun, largest map (21,682 points, PCA)",
        wall,
        cpu,
        f"(median of {repeats}; figure JSON {len(spec) / 1e6:.1f} MB)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a trained ml-100k run folder")
    parser.add_argument("--repeats", type=int, default=3, help="runs per median")
    parser.add_argument(
        "--skip-jit", action="store_true", help="skip the run with an empty numba cache"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from lrml.inference import load_run
    from lrml.projection import build_points

    run_path = Path(args.run).resolve()
    loaded = load_run(run_path)
    points = build_points(loaded, "users_items", 5000, 0)
    print(
        f"run {run_path.name}: {len(points.vectors):,} users and movies, "
        f"d={points.vectors.shape[1]}; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}"
    )

    report_cold(cold_runs(str(run_path), args.repeats, None), "new process")
    if not args.skip_jit:
        with tempfile.TemporaryDirectory() as empty:
            report_cold(cold_runs(str(run_path), 1, empty), "empty numba cache")
    bench_umap_defaults(points.vectors, args.repeats)
    bench_cache_read(loaded, points, args.repeats)
    bench_relations(loaded, args.repeats)
    bench_page(run_path, args.repeats)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
