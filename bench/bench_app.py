"""Time reruns of the Train and Recommend pages while a run trains in the background.

Usage::

    .venv/bin/python bench/bench_app.py [--repeats 15] [--keep]

The script points $LRML_MODELS_DIR at a new temporary folder, submits a run
with the default model size on MovieLens-100K, and waits until its training
process has saved the first epoch's weights. While that process keeps
training, it times ``--repeats`` reruns of each page with Streamlit's AppTest,
which runs ``app.py`` and the page in this process as the server would, minus
the websocket. It prints the median, 95th percentile and maximum in
milliseconds, then stops the run, waits for its process to exit and deletes the
folder.

The run trains with ``patience=0`` for many epochs, so that it is still
training when the timing ends. The script prints how many epochs it finished
meanwhile. Timings depend on the machine and on what else runs on it, so
compare medians from the same machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file has bench/ on sys.path, not the repository root.
sys.path.insert(0, str(REPO_ROOT))

import numpy as np
import torch
from streamlit.testing.v1 import AppTest

from lrml import jobs
from lrml.config import TrainConfig
from lrml.runs import (
    FINAL_STATES,
    LIVE_STATES,
    LOG_FILE,
    MODELS_DIR_ENV,
    Run,
    create_run,
)

APP = REPO_ROOT / "app.py"
PAGES = {"Train": "pages/train.py", "Recommend": "pages/recommend.py"}
RUN_NAME = "bench"
APP_TIMEOUT_S = 60
FIRST_EPOCH_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats", type=int, default=15, help="timed reruns per page (default 15)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=500,
        help="epochs of the background run, enough to outlast the timing (default 500)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary models folder"
    )
    args = parser.parse_args(argv)
    if args.repeats < 2:
        parser.error(f"--repeats must be at least 2; got {args.repeats}")
    return args


def wait_for_first_epoch(run: Run) -> None:
    """Wait until the training process has saved weights and is still training."""
    deadline = time.monotonic() + FIRST_EPOCH_TIMEOUT_S
    while not run.has_weights():
        status = run.status()
        if status["state"] in FINAL_STATES:
            raise RuntimeError(f"the run ended before its first epoch: {status}")
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"no epoch finished within {FIRST_EPOCH_TIMEOUT_S:.0f} s; "
                f"last status {status}"
            )
        time.sleep(0.5)


def open_page(page: str) -> AppTest:
    """Run app.py, switch to ``page`` and run it once, so that caches are warm.

    Raises RuntimeError if the page raises.
    """
    app = AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT_S)
    app.query_params["run"] = RUN_NAME
    app.run()
    app.switch_page(page).run()
    if app.exception:
        raise RuntimeError(f"{page} raised: {app.exception}")
    return app


def time_reruns(app: AppTest, page: str, repeats: int) -> list[float]:
    """Return the wall time in seconds of ``repeats`` reruns of the current page."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        app.run()
        seconds.append(time.perf_counter() - start)
        if app.exception:
            raise RuntimeError(f"{page} raised: {app.exception}")
    return seconds


def stop_run(run: Run) -> None:
    """Stop the run, and kill its process group if it has not exited in time."""
    jobs.stop(run)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while run.status()["state"] in LIVE_STATES and time.monotonic() < deadline:
        time.sleep(0.5)
    status = run.status()
    if status["state"] in LIVE_STATES:
        print(f"run did not stop within {STOP_TIMEOUT_S:.0f} s; killing it")
        try:
            os.killpg(status["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass


def print_table(timings: dict[str, list[float] | str]) -> None:
    """Print one row per page: its timings, or the error that ended its reruns."""
    print(f"{'page':<10} {'reruns':>6} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
    for page, seconds in timings.items():
        if isinstance(seconds, str):
            print(f"{page:<10} failed: {seconds}")
            continue
        milliseconds = np.array(seconds) * 1000
        print(
            f"{page:<10} {len(seconds):>6} {statistics.median(milliseconds):>10.0f} "
            f"{np.percentile(milliseconds, 95):>8.0f} {milliseconds.max():>8.0f}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="lrml-bench-"))
    os.environ[MODELS_DIR_ENV] = str(folder)
    print(f"models folder: {folder}")

    run = create_run(TrainConfig(epochs=args.epochs, patience=0), name=RUN_NAME)
    try:
        jobs.submit(run)
        print(
            f"training process {run.status().get('pid')} started; waiting for epoch 1"
        )
        wait_for_first_epoch(run)

        epochs_before = len(run.metrics())
        timings: dict[str, list[float] | str] = {}
        for label, page in PAGES.items():
            try:
                app = open_page(page)
                timings[label] = time_reruns(app, page, args.repeats)
            except RuntimeError as error:
                timings[label] = str(error)
        epochs_after = len(run.metrics())
        state = run.status()["state"]

        print_table(timings)
        print(
            f"The run finished {epochs_after - epochs_before} epochs while the pages "
            f"were timed and was {state} at the end."
        )
        if state not in LIVE_STATES:
            print("WARNING: the run was not training until the end of the timing.")
        failed = any(isinstance(seconds, str) for seconds in timings.values())
    except BaseException:
        log = run.path / LOG_FILE
        if log.exists():
            print(
                f"last lines of {log}:\n"
                + "\n".join(log.read_text().splitlines()[-20:])
            )
        raise
    finally:
        stop_run(run)
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
