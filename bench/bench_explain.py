"""Time the explanation features: slot statistics, rankings and page reruns.

Usage::

    .venv/bin/python bench/bench_explain.py [--repeats 7] [--epochs 10]
        [--models-dir DIR]

Without ``--models-dir`` the script trains a run of the default model size on
MovieLens-100K for ``--epochs`` epochs in a new temporary models folder and
deletes the folder at the end. With ``--models-dir`` it reuses the newest run
with weights in that folder, or trains one there if there is none, and keeps
it.

It prints the median and maximum wall time and the median CPU time, in
milliseconds, of:

- slot statistics over every training pair: computed (``slot_statistics``),
  computed and written to parquet, and read back from parquet;
- ``recommend``, ``similar_items`` and the what-if re-rank ``muted_ranking``;
- AppTest reruns of the Recommend and Attention pages after a widget change.

AppTest runs ``app.py`` and the page in this process as the server would,
minus the websocket. Its wall time also counts two things a server does not
repeat on every rerun: AppTest compiles every script again for each run, and
its first pass through a page stops in ``shared.ensure_navigation`` and reruns
through ``app.py``. The "script" rows exclude both: they time the last pass
through the page alone, with compiled scripts kept between runs as a server
keeps them. AppTest also reruns the whole page where a server reruns only the
fragment that contains the changed widget, as for the mute, heatmap and slot
controls of the Attention page, so those rows overstate the server's work.

CPU time is that of the thread running the code. It grows little with the
machine's load, while wall time does. Torch uses one thread. Compare medians
from the same machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

REPO_ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file has bench/ on sys.path, not the repository root.
sys.path.insert(0, str(REPO_ROOT))

import torch
from streamlit.runtime.scriptrunner import script_runner
from streamlit.runtime.scriptrunner.script_cache import ScriptCache
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1 import app_test as app_test_module

from lrml import jobs
from lrml.attention import muted_ranking
from lrml.config import TrainConfig
from lrml.inference import load_run, recommend, similar_items
from lrml.runs import MODELS_DIR_ENV, create_run, list_runs
from lrml.slots import cached_slot_statistics, slot_statistics

APP = REPO_ROOT / "app.py"
APP_TIMEOUT_S = 120
BENCH_USER = 42
BENCH_ITEM = 50


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed repeats per row (default 7)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=10,
        help="epochs when a run must be trained first (default 10)",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        help="models folder to reuse or train into; kept afterwards",
    )
    args = parser.parse_args(argv)
    if args.repeats < 2:
        parser.error(f"--repeats must be at least 2; got {args.repeats}")
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1; got {args.epochs}")
    return args


def prepare_run(models_dir: Path, epochs: int):
    """Return the newest run with weights in ``models_dir``, training one if needed."""
    runs = [run for run in list_runs(models_dir) if run.has_weights()]
    if runs:
        print(f"reusing run {runs[0].name} in {models_dir}", flush=True)
        return runs[0]
    print(f"training the default model for {epochs} epochs…", flush=True)
    started = time.perf_counter()
    run = create_run(TrainConfig(epochs=epochs), name="bench-explain", root=models_dir)
    jobs.train_in_foreground(run)
    print(f"trained in {time.perf_counter() - started:.0f} s", flush=True)
    return run


Timing = tuple[float, float]


def time_calls(function: Callable[[int], object], repeats: int) -> list[Timing]:
    """Return the wall and CPU seconds of ``function(i)`` for i in 0 .. repeats - 1."""
    timings = []
    for repeat in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function(repeat)
        timings.append((time.perf_counter() - wall, time.process_time() - cpu))
    return timings


class ScriptTimer:
    """Record the wall and CPU seconds of every script pass that AppTest executes.

    The CPU seconds are those of the script thread, which runs the page.
    """

    def __init__(self) -> None:
        self.durations: list[Timing] = []
        self._original = script_runner.exec_func_with_error_handling

    def __enter__(self) -> Self:
        def timed(func, ctx):
            started = (time.perf_counter(), time.thread_time())
            try:
                return self._original(func, ctx)
            finally:
                self.durations.append(
                    (
                        time.perf_counter() - started[0],
                        time.thread_time() - started[1],
                    )
                )

        # The script runner imports the function by name, so patch it there.
        script_runner.exec_func_with_error_handling = timed
        return self

    def __exit__(self, *exc_info) -> None:
        script_runner.exec_func_with_error_handling = self._original


def keep_compiled_scripts() -> None:
    """Make every AppTest run share one ScriptCache, as a server's runs do."""
    cache = ScriptCache()
    app_test_module.ScriptCache = lambda: cache


def time_page(
    page: str, change: Callable[[AppTest, int], None], repeats: int
) -> tuple[list[Timing], list[Timing]]:
    """Time reruns of ``page`` after ``change``: AppTest runs and their last passes."""
    app = AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT_S)
    app.query_params["user"] = str(BENCH_USER)
    app.query_params["item"] = str(BENCH_ITEM)
    app.run()
    app.switch_page(page).run()
    change(app, -1)
    app.run()
    if app.exception:
        raise RuntimeError(f"{page} raised: {app.exception[0].message}")

    runs, scripts = [], []
    with ScriptTimer() as timer:
        for repeat in range(repeats):
            change(app, repeat)
            timer.durations.clear()
            wall, cpu = time.perf_counter(), time.process_time()
            app.run()
            runs.append((time.perf_counter() - wall, time.process_time() - cpu))
            scripts.append(timer.durations[-1])
            if app.exception:
                raise RuntimeError(f"{page} raised: {app.exception[0].message}")
    return runs, scripts


def change_recommend(app: AppTest, repeat: int) -> None:
    app.slider(key="recommend_k").set_value(10 if repeat % 2 else 20)


def change_recommend_genre(app: AppTest, repeat: int) -> None:
    app.multiselect(key="recommend_genres").set_value(
        ["Comedy"] if repeat % 2 else ["Drama", "Thriller"]
    )


def change_attention(app: AppTest, repeat: int) -> None:
    app.multiselect(key="attention_mute").set_value([0] if repeat % 2 else [1, 2])


def change_attention_user(app: AppTest, repeat: int) -> None:
    app.number_input(key="attention_user").set_value(BENCH_USER + repeat + 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    temporary = args.models_dir is None
    models_dir = Path(tempfile.mkdtemp(prefix="lrml-bench-explain-"))
    if not temporary:
        models_dir = args.models_dir
        models_dir.mkdir(parents=True, exist_ok=True)
    os.environ[MODELS_DIR_ENV] = str(models_dir)
    try:
        rows = run_benchmarks(prepare_run(models_dir, args.epochs), args.repeats)
    finally:
        if temporary:
            shutil.rmtree(models_dir, ignore_errors=True)
    print_table(rows, args.repeats)
    return 0


def run_benchmarks(run, repeats: int) -> list[tuple[str, list[Timing]]]:
    loaded = load_run(run.path)
    user = loaded.user_index(BENCH_USER)
    item = loaded.item_index(BENCH_ITEM)
    n_pairs = len(loaded.split.train_users)
    memory_size = loaded.config.memory_size
    cache_root = Path(tempfile.mkdtemp(prefix="lrml-slot-cache-"))
    rows = []
    try:
        rows.append(
            (
                f"slot statistics, computed ({n_pairs} pairs, {memory_size} slots)",
                time_calls(lambda i: slot_statistics(loaded), repeats),
            )
        )
        rows.append(
            (
                "slot statistics, computed and written to parquet",
                time_calls(
                    lambda i: cached_slot_statistics(loaded, cache_root / f"cold{i}"),
                    repeats,
                ),
            )
        )
        rows.append(
            (
                "slot statistics, read from parquet",
                time_calls(
                    lambda i: cached_slot_statistics(loaded, cache_root / "cold0"),
                    repeats,
                ),
            )
        )
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)
    rows.append(
        ("recommend, k=10", time_calls(lambda i: recommend(loaded, user), repeats))
    )
    rows.append(
        (
            "similar_items, k=10",
            time_calls(lambda i: similar_items(loaded, item), repeats),
        )
    )
    rows.append(
        (
            "what-if re-rank (muted_ranking, 2 slots muted)",
            time_calls(
                lambda i: muted_ranking(loaded, user, {0, i % memory_size}), repeats
            ),
        )
    )

    # Fills the run's parquet cache, so the page timings below read it.
    cached_slot_statistics(loaded)
    pages = [
        ("Recommend, K slider", "pages/recommend.py", change_recommend),
        ("Recommend, genre filter", "pages/recommend.py", change_recommend_genre),
        ("Attention, mute slots", "pages/attention.py", change_attention),
        ("Attention, user id", "pages/attention.py", change_attention_user),
    ]
    for label, page, change in pages:
        runs, _ = time_page(page, change, repeats)
        rows.append((f"AppTest rerun: {label}", runs))
    keep_compiled_scripts()
    for label, page, change in pages:
        _, scripts = time_page(page, change, repeats)
        rows.append((f"script: {label}", scripts))
    return rows


def print_table(rows: list[tuple[str, list[Timing]]], repeats: int) -> None:
    print()
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}, torch threads {torch.get_num_threads()}, "
        f"{repeats} repeats per row"
    )
    print()
    print("| what | median wall ms | max wall ms | median CPU ms |")
    print("|---|---:|---:|---:|")
    for label, timings in rows:
        walls = [wall for wall, _ in timings]
        cpus = [cpu for _, cpu in timings]
        print(
            f"| {label} | {statistics.median(walls) * 1000:.1f} "
            f"| {max(walls) * 1000:.1f} | {statistics.median(cpus) * 1000:.1f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
