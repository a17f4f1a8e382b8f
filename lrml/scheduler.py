"""The training queue: which runs wait, and starting them as processes when slots free up.

A run is in the queue when its state is "queued" and `enqueue` has stamped it
with ``queued_at``. A run that `create_run` has just made also reads "queued",
but waits until its creator submits it or trains it in the foreground.

`start_queued` starts queued runs, oldest first, while fewer than
`max_concurrent_runs` train. A started run is the process
``python -m lrml.jobs RUN_DIR``. Callers hold `scheduler_lock` around every
change of a run's state made from outside its training process, so two callers
at once never start the same run twice.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lrml.runs import (
    LIVE_STATES,
    LOG_FILE,
    REPO_ROOT,
    STOP_FILE,
    Run,
    list_runs,
    models_dir,
    now_iso,
    process_identity,
)

logger = logging.getLogger(__name__)

TORCH_THREADS_ENV = "LRML_TORCH_THREADS"
MAX_RUNS_ENV = "LRML_MAX_CONCURRENT_RUNS"
MAX_TORCH_THREADS = 256
# Thread pools of the numerical libraries under torch and numpy; they read
# these variables once, when they load.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

# Training processes started by this process; `start_queued` reaps finished ones.
_children: list[subprocess.Popen] = []


def max_concurrent_runs() -> int:
    """Return how many runs may train at once.

    $LRML_MAX_CONCURRENT_RUNS when set, else one per two CPU cores available to
    this process, and at least one.

    Raises
    ------
    ValueError
        If $LRML_MAX_CONCURRENT_RUNS is not a positive integer.
    """
    configured = os.environ.get(MAX_RUNS_ENV)
    if configured:
        return _positive_int_env(MAX_RUNS_ENV, configured, high=None)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 2
    return max(1, cpus // 2)


def torch_threads() -> int:
    """Return the torch thread count of a training process: $LRML_TORCH_THREADS, else 1.

    One thread per process leaves the other cores to the app and to other runs.

    Raises
    ------
    ValueError
        If $LRML_TORCH_THREADS is not an integer from 1 to 256.
    """
    configured = os.environ.get(TORCH_THREADS_ENV)
    if not configured:
        return 1
    return _positive_int_env(TORCH_THREADS_ENV, configured, high=MAX_TORCH_THREADS)


def _positive_int_env(name: str, raw: str, high: int | None) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1 or (high is not None and value > high):
        accepted = f"an integer from 1 to {high}" if high else "a positive integer"
        raise ValueError(f"{name} must be {accepted}; got {raw!r}")
    return value


def schedule(root: Path | None = None) -> list[Run]:
    """Start queued runs, oldest first, while fewer than the maximum train.

    Returns the runs started by this call.

    Raises
    ------
    ValueError
        If $LRML_MAX_CONCURRENT_RUNS is invalid.
    """
    root = Path(root) if root is not None else models_dir()
    # Cheap when nothing waits, as on most calls from the app. A run queued
    # right after this check is started by whoever queued it.
    if not queued_runs(root):
        return []
    with scheduler_lock(root):
        return start_queued(root)


def queued_runs(root: Path | None = None) -> list[Run]:
    """Return the queued runs in the order `schedule` starts them (first = next)."""
    root = Path(root) if root is not None else models_dir()
    runs = list_runs(root)
    return queue_order(runs, {run.name: run.status() for run in runs})


def in_queue(status: dict[str, Any]) -> bool:
    """Return whether a run with this status waits in the queue."""
    return status.get("state") == "queued" and bool(status.get("queued_at"))


def queue_order(runs: list[Run], statuses: dict[str, dict[str, Any]]) -> list[Run]:
    """Return the queued ones of ``runs``, next to start first."""
    queued = [run for run in runs if in_queue(statuses[run.name])]
    return sorted(queued, key=lambda run: statuses[run.name]["queued_at"])


def enqueue(run: Run) -> None:
    """Put ``run`` at the end of the queue; the caller holds `scheduler_lock`."""
    run.set_status(
        "queued",
        pid=None,
        pid_start=None,
        # Microseconds, so that runs queued within one second keep their order.
        queued_at=now_iso("microseconds"),
        finished_at=None,
        message="waiting for a free training slot",
    )


def start_queued(root: Path) -> list[Run]:
    """Start queued runs into the free slots; the caller holds the scheduler lock."""
    _children[:] = [child for child in _children if child.poll() is None]
    runs = list_runs(root)
    statuses = {run.name: run.status() for run in runs}
    active = sum(1 for status in statuses.values() if status["state"] in LIVE_STATES)
    free = max_concurrent_runs() - active
    started: list[Run] = []
    for run in queue_order(runs, statuses):
        if len(started) >= free:
            break
        try:
            _spawn(run)
        except OSError as error:
            logger.exception("failed to start a training process for run %s", run.name)
            run.set_status(
                "failed",
                finished_at=now_iso(),
                message=f"failed to start the training process: {error}",
            )
            continue
        started.append(run)
    return started


def _spawn(run: Run) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    threads = env.get(TORCH_THREADS_ENV, "1")
    if threads.isdigit():
        for name in THREAD_ENV_VARS:
            env.setdefault(name, threads)
    (run.path / STOP_FILE).unlink(missing_ok=True)
    with open(run.path / LOG_FILE, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "lrml.jobs", str(run.path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=env,
            # Its own session: Ctrl-C on the app's terminal does not reach it.
            start_new_session=True,
        )
    _children.append(process)
    # The child takes over this status once it owns the run, which needs this
    # lock, so it cannot write before this line does.
    run.set_status(
        "starting",
        **process_identity(process.pid),
        started_at=now_iso(),
        finished_at=None,
        message="training process starting",
    )
    logger.info("started training run %s as process %d", run.name, process.pid)


@contextmanager
def scheduler_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the models folder ``root`` for the block."""
    # flock on the folder itself, so no lock file appears among the runs. It
    # excludes other processes and, through a separate open file, other threads
    # of this process too. The kernel releases it when a holder dies.
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
