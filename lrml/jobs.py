"""Background training: the actions the app and the CLI take on runs.

Each run trains in a process of its own, ``python -m lrml.jobs RUN_DIR``, which
writes status, metrics, weights and a checkpoint into the run folder, checks
for a stop request between batches, and starts the next queued run when it
exits. `submit` queues a run and starts it when a slot is free, and
`lrml.scheduler` manages the queue. `stop`, `resume` and `delete` act on one
run. `train_in_foreground` trains a run in the calling process. Any number of
readers (browser sessions, a terminal) follow a run by reading its folder.

Every change of state made from outside the training process, and a process
taking ownership of a run, happens under the scheduler lock on the models
folder. So two callers at once never start the same run twice, and a run is
never deleted while it starts.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from lrml.config import TrainConfig, config_fields
from lrml.runner import EpochCallback, SaveFailed, train_run
from lrml.runs import (
    ACTIVE_STATES,
    CONFIG_FILE,
    FINAL_STATES,
    LIVE_STATES,
    STOP_FILE,
    UNKNOWN_STATE,
    Run,
    create_run,
    list_runs,
    models_dir,
    now_iso,
    process_identity,
    validate_run_name,
    write_json_atomic,
)
from lrml.scheduler import (
    MAX_RUNS_ENV,
    TORCH_THREADS_ENV,
    enqueue,
    in_queue,
    max_concurrent_runs,
    queued_runs,
    schedule,
    scheduler_lock,
    start_queued,
    torch_threads,
)
from lrml.training import TrainingDiverged, TrainingStopped

__all__ = [
    "DEFAULT_RUN_NAME",
    "MAX_RUNS_ENV",
    "TORCH_THREADS_ENV",
    "SaveFailed",
    "TrainingDiverged",
    "TrainingStopped",
    "delete",
    "ensure_default_run",
    "max_concurrent_runs",
    "queued_runs",
    "resume",
    "resume_in_foreground",
    "schedule",
    "start_training",
    "stop",
    "submit",
    "torch_threads",
    "train_in_foreground",
]

logger = logging.getLogger(__name__)

DEFAULT_RUN_NAME = "default"
# States in which no process owns a run, so it may be resumed or deleted.
IDLE_STATES = (*FINAL_STATES, UNKNOWN_STATE)


# Queueing --------------------------------------------------------------------


def submit(run: Run) -> Run:
    """Queue ``run`` and start it if a training slot is free.

    A run that is already queued or training is left as it is, so a second
    caller (another browser tab) never starts it twice. A stopped, failed,
    interrupted or finished run is queued again and continues from its
    checkpoint, if it has one.

    Raises
    ------
    ValueError
        If ``run.path`` is not a run folder, or $LRML_MAX_CONCURRENT_RUNS is
        invalid (the run then stays queued).
    OSError
        If the run folder cannot be written.
    """
    _check_run_folder(run)
    with scheduler_lock(run.path.parent):
        status = run.status()
        if status["state"] in LIVE_STATES or in_queue(status):
            logger.info("run %s is already %s", run.name, status["state"])
        else:
            enqueue(run)
        start_queued(run.path.parent)
    return run


def start_training(run: Run) -> Run:
    """Queue ``run`` and start it when a slot is free; the same as `submit`."""
    return submit(run)


def ensure_default_run(root: Path | None = None) -> Run | None:
    """Queue the default configuration when the models folder contains no run yet.

    When runs exist, this calls `schedule` instead, so that queued runs start
    after the app restarts or after a training process was killed. Safe to call
    from many browser sessions at once: only the caller whose ``mkdir``
    succeeds queues the default run.

    Returns the new run, or None when a run already exists.
    """
    root = Path(root) if root is not None else models_dir()
    if list_runs(root):
        try:
            schedule(root)
        except ValueError as error:
            logger.error("queued runs cannot start: %s", error)
        return None
    try:
        run = create_run(TrainConfig(), name=DEFAULT_RUN_NAME, root=root)
    except FileExistsError:
        return None
    try:
        start_training(run)
    except ValueError as error:
        logger.error("the default run cannot start: %s", error)
    return run


# Actions on one run ---------------------------------------------------------


def stop(run: Run) -> None:
    """Stop ``run``: a queued run at once, a training one after its current batch.

    A run in any other state is left as it is.

    Raises
    ------
    ValueError
        If ``run.path`` is not a run folder.
    """
    _check_run_folder(run)
    with scheduler_lock(run.path.parent):
        state = run.status()["state"]
        if state == "queued":
            run.set_status(
                "stopped",
                finished_at=now_iso(),
                message="removed from the queue before it started",
            )
        elif state in LIVE_STATES:
            run.request_stop()
            run.set_status(
                "stopping", message="stop requested; stopping after the current batch"
            )
        else:
            logger.info("run %s is %s; nothing to stop", run.name, state)


def resume(run: Run, extra_epochs: int) -> Run:
    """Queue a stopped, interrupted, failed or finished run for more epochs.

    Training continues from the last complete epoch's checkpoint, optimizer
    and random state included, for up to ``extra_epochs`` epochs beyond it.

    Raises
    ------
    ValueError
        If the run is queued or training, has no checkpoint, or
        ``extra_epochs`` is not an integer from 1 to what keeps ``epochs``
        within its maximum of 10,000; or ``run.path`` is not a run folder.
    """
    _check_run_folder(run)
    with scheduler_lock(run.path.parent):
        _extend_epochs(run, extra_epochs)
        enqueue(run)
        start_queued(run.path.parent)
    return run


def resume_in_foreground(
    run: Run,
    extra_epochs: int,
    device: torch.device | None = None,
    on_epoch: EpochCallback | None = None,
) -> dict[str, float] | None:
    """Train ``run`` for ``extra_epochs`` more epochs in this process.

    The same checks as `resume`, then the same as `train_in_foreground`.
    """
    _check_run_folder(run)
    with scheduler_lock(run.path.parent):
        _extend_epochs(run, extra_epochs)
        _take_ownership(run)
    return train_run(run, device, on_epoch)


def _extend_epochs(run: Run, extra_epochs: int) -> None:
    """Raise the run's ``epochs`` to its checkpoint's epoch plus ``extra_epochs``."""
    state = run.status()["state"]
    if state not in IDLE_STATES:
        raise ValueError(f"run {run.name!r} is {state}; stop it before resuming it")
    done = run.checkpoint_epoch()
    if done is None:
        raise ValueError(
            f"run {run.name!r} has no checkpoint to resume from because it stopped "
            "before its first epoch ended; start it again instead"
        )
    max_extra = _max_epochs() - done
    valid = isinstance(extra_epochs, int) and not isinstance(extra_epochs, bool)
    if not valid or not 1 <= extra_epochs <= max_extra:
        raise ValueError(
            f"extra_epochs must be an integer from 1 to {max_extra} (run {run.name!r} "
            f"has done {done} of at most {_max_epochs()} epochs); got {extra_epochs!r}"
        )
    config = run.config.replace(epochs=done + extra_epochs)
    path = run.path / CONFIG_FILE
    # list_runs orders runs by this file's modification time, i.e. by creation;
    # a resumed run keeps its place.
    times = path.stat()
    write_json_atomic(path, config.to_dict())
    os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))


def _max_epochs() -> int:
    return next(f.metadata["high"] for f in config_fields() if f.name == "epochs")


def delete(run: Run, root: Path | None = None) -> None:
    """Delete ``run``'s folder.

    Raises
    ------
    ValueError
        If the run is queued or training (stop it first), or its folder is not
        a run folder directly inside the models folder ``root`` (by default
        $LRML_MODELS_DIR or ``models/``), or is a symbolic link.
    """
    root = (Path(root) if root is not None else models_dir()).resolve()
    path = run.path.absolute()
    if path.is_symlink() or path.parent.resolve() != root:
        raise ValueError(f"cannot delete {path}: it is not a run folder in {root}")
    _check_run_folder(run)
    with scheduler_lock(root):
        state = run.status()["state"]
        if state in ACTIVE_STATES:
            raise ValueError(f"run {run.name!r} is {state}; stop it before deleting it")
        shutil.rmtree(path)
    logger.info("deleted run %s", run.name)


def _check_run_folder(run: Run) -> None:
    """Raise ValueError unless ``run.path`` is a run folder with a safe name."""
    validate_run_name(run.path.name)
    if run.path.is_symlink() or not (run.path / CONFIG_FILE).is_file():
        raise ValueError(
            f"{run.path} is not a run folder: it has no {CONFIG_FILE}, or it is a "
            "symbolic link"
        )


# Training in this process ---------------------------------------------------


def train_in_foreground(
    run: Run,
    device: torch.device | None = None,
    on_epoch: EpochCallback | None = None,
) -> dict[str, float] | None:
    """Train ``run`` in this process, writing everything into its folder.

    Continues from the run's checkpoint when it has one. Returns the test
    metrics of the best epoch, or None if it stopped before an epoch ended.
    Errors are written to the status file before they propagate.

    Raises
    ------
    ValueError
        Before training, if another live process owns the run, or ``run.path``
        is not a run folder.
    """
    _check_run_folder(run)
    with scheduler_lock(run.path.parent):
        _take_ownership(run)
    return train_run(run, device, on_epoch)


def _take_ownership(run: Run) -> None:
    """Mark ``run`` as trained by this process; the caller holds the lock."""
    status = run.status()
    pid = os.getpid()
    if status["state"] in LIVE_STATES and status.get("pid") != pid:
        raise ValueError(
            f"run {run.name!r} is already {status['state']} in process "
            f"{status.get('pid')}; stop it first or follow it with "
            "'python -m lrml runs'"
        )
    if status.get("pid") != pid:
        # A stop request left over from an earlier process. A request made for
        # this process while it was starting has the same pid and stays.
        (run.path / STOP_FILE).unlink(missing_ok=True)
    run.set_status(
        "stopping" if run.stop_requested() else "running",
        **process_identity(pid),
        started_at=now_iso(),
        finished_at=None,
        epoch=run.checkpoint_epoch() or 0,
        message="loading data",
    )


# The training process ------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Entry point of the training process: ``python -m lrml.jobs RUN_DIR``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m lrml.jobs RUN_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run = Run(Path(argv[0]))
    # SIGTERM unwinds like Ctrl-C, so the run reads "interrupted" at once.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        return _train_in_process(run)
    finally:
        # This process's slot is free now, so start the next queued run.
        try:
            schedule(run.path.parent)
        except (OSError, ValueError):
            logger.exception("failed to start the next queued run after %s", run.name)


def _train_in_process(run: Run) -> int:
    try:
        threads = torch_threads()
    except ValueError as error:
        logger.error("training process %d for run %s: %s", os.getpid(), run.name, error)
        run.set_status("failed", finished_at=now_iso(), message=str(error))
        return 1
    torch.set_num_threads(threads)
    logger.info(
        "training process %d started for run %s with %d torch thread(s)",
        os.getpid(),
        run.name,
        torch.get_num_threads(),
    )
    try:
        train_in_foreground(run)
    except Exception as error:  # noqa: BLE001
        # The runner appended the traceback to this log before the status
        # turned "failed"; errors before training need no traceback.
        logger.error("training run %s failed: %s", run.name, error)
        return 1
    return 0


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
