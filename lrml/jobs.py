"""Background training: each run trains in its own process, tracked through its folder.

`submit` queues a run and `schedule` starts queued runs while fewer than
`max_concurrent_runs` train. A started run is the process
``python -m lrml.jobs RUN_DIR``, which writes status, metrics, weights and a
checkpoint into the run folder and checks for a stop request between batches.
Any number of readers (browser sessions, a terminal) follow it by reading files,
and a file lock makes scheduling safe when several of them call it at once.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from lrml.checkpoint import restore_checkpoint, save_checkpoint
from lrml.config import TrainConfig
from lrml.data import load_dataset
from lrml.evaluation import ModelScorer, evaluate
from lrml.runs import (
    CHECKPOINT_FILE,
    FINAL_STATES,
    LIVE_STATES,
    LOG_FILE,
    REPO_ROOT,
    STOP_FILE,
    TEST_METRICS_FILE,
    Run,
    create_run,
    list_runs,
    models_dir,
    now_iso,
    write_atomic,
    write_json_atomic,
)
from lrml.split import leave_one_out
from lrml.training import EpochResult, Trainer, TrainingDiverged, TrainingStopped, fit

logger = logging.getLogger(__name__)

DEFAULT_RUN_NAME = "default"
TORCH_THREADS_ENV = "LRML_TORCH_THREADS"
MAX_RUNS_ENV = "LRML_MAX_CONCURRENT_RUNS"
SCHEDULER_LOCK = ".scheduler.lock"


class SaveFailed(RuntimeError):
    """Raised when a checkpoint or weights file cannot be written."""


def max_concurrent_runs() -> int:
    """Return how many runs may train at once: $LRML_MAX_CONCURRENT_RUNS, else
    one per two CPU cores (at least one)."""
    configured = os.environ.get(MAX_RUNS_ENV)
    if configured:
        try:
            value = int(configured)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(
                f"{MAX_RUNS_ENV} must be a positive integer; got {configured!r}"
            )
        return value
    return max(1, (os.cpu_count() or 2) // 2)


def submit(run: Run) -> Run:
    """Queue ``run`` and start it if a training slot is free."""
    run.set_status(
        "queued", pid=None, queued_at=now_iso(), message="waiting for a free slot"
    )
    schedule(run.path.parent)
    return run


def start_training(run: Run) -> Run:
    """Queue ``run`` and start it when a slot is free; the same as `submit`."""
    return submit(run)


def schedule(root: Path | None = None) -> list[Run]:
    """Start queued runs, oldest first, while fewer than the maximum train.

    Returns the runs started by this call. Holds an exclusive lock on the
    models folder while it decides, so two callers never start the same run.
    """
    root = Path(root) if root is not None else models_dir()
    started: list[Run] = []
    with _scheduler_lock(root):
        runs = list_runs(root)
        states = {run.name: run.status() for run in runs}
        active = sum(1 for run in runs if states[run.name]["state"] in LIVE_STATES)
        queued = [run for run in runs if states[run.name]["state"] == "queued"]
        queued.sort(key=lambda run: states[run.name].get("queued_at") or "")
        for run in queued[: max(0, max_concurrent_runs() - active)]:
            _spawn(run)
            started.append(run)
    return started


def _spawn(run: Run) -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    (run.path / STOP_FILE).unlink(missing_ok=True)
    with open(run.path / LOG_FILE, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "lrml.jobs", str(run.path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,
        )
    # The child replaces this with "running" once it has imported torch.
    run.set_status("starting", pid=process.pid, message="training process starting")
    logger.info("started training run %s as process %d", run.name, process.pid)
    return process.pid


@contextmanager
def _scheduler_lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / SCHEDULER_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_default_run(root: Path | None = None) -> Run | None:
    """Queue the default configuration when the models folder holds no run yet.

    Returns the new run, or None when a run already exists. Safe to call from
    many browser sessions at once: only the caller whose ``mkdir`` succeeds
    queues it.
    """
    root = Path(root) if root is not None else models_dir()
    if list_runs(root):
        return None
    try:
        run = create_run(TrainConfig(), name=DEFAULT_RUN_NAME, root=root)
    except FileExistsError:
        return None
    start_training(run)
    return run


def stop(run: Run) -> None:
    """Stop ``run``: a queued run at once, a training one after its current batch."""
    state = run.status()["state"]
    if state == "queued":
        run.set_status(
            "stopped", finished_at=now_iso(), message="removed from the queue"
        )
    elif state in LIVE_STATES:
        run.request_stop()
        run.set_status(
            "stopping", message="stop requested; finishing the current batch"
        )


def resume(run: Run, extra_epochs: int) -> Run:
    """Queue a stopped, interrupted, failed or finished run for more epochs.

    Training continues from the last complete epoch's checkpoint, optimizer
    state included, up to ``extra_epochs`` beyond it.

    Raises
    ------
    ValueError
        If the run is still queued or training, has no checkpoint, or
        ``extra_epochs`` is outside 1 to 10,000.
    """
    state = run.status()["state"]
    if state not in FINAL_STATES:
        raise ValueError(f"run {run.name!r} is {state}; stop it before resuming")
    if not isinstance(extra_epochs, int) or not 1 <= extra_epochs <= 10_000:
        raise ValueError(
            f"extra_epochs must be an integer from 1 to 10000; got {extra_epochs!r}"
        )
    done = run.checkpoint_epoch()
    if done is None:
        raise ValueError(
            f"run {run.name!r} has no checkpoint to resume from; it stopped before "
            "its first epoch ended, so train it again instead"
        )
    config = run.config.replace(epochs=done + extra_epochs)
    write_json_atomic(run.path / "config.json", config.to_dict())
    (run.path / TEST_METRICS_FILE).unlink(missing_ok=True)
    return submit(run)


def delete(run: Run, root: Path | None = None) -> None:
    """Delete ``run``'s folder.

    Raises
    ------
    ValueError
        If the run is queued or training (stop it first), or its folder is not
        directly inside the models folder.
    """
    root = (Path(root) if root is not None else models_dir()).resolve()
    path = run.path.resolve()
    if path.parent != root:
        raise ValueError(f"refusing to delete {path}: it is not a run folder in {root}")
    state = run.status()["state"]
    if state in LIVE_STATES or state == "queued":
        raise ValueError(f"run {run.name!r} is {state}; stop it before deleting it")
    shutil.rmtree(path)
    logger.info("deleted run %s", run.name)


def train_in_foreground(
    run: Run,
    device: torch.device | None = None,
    on_epoch: Callable[[EpochResult, Trainer], None] | None = None,
) -> dict[str, float] | None:
    """Train ``run`` in this process, writing everything into its folder.

    Continues from the run's checkpoint when it has one. Returns the test
    metrics of the best epoch, or None if no epoch finished. Errors are
    written to the status file before they propagate.
    """
    run.set_status(
        "running", pid=os.getpid(), started_at=now_iso(), message="loading data"
    )
    try:
        return _train(run, device, on_epoch)
    except TrainingStopped:
        return _finish_stopped(run)
    except (TrainingDiverged, SaveFailed) as error:
        run.set_status("failed", message=str(error), finished_at=now_iso())
        raise
    except BaseException as error:
        message = f"{type(error).__name__}: {error}"
        run.set_status("failed", message=message, finished_at=now_iso())
        raise


def _train(run: Run, device, on_epoch) -> dict[str, float] | None:
    config = run.config
    dataset = load_dataset(config.dataset)
    split = leave_one_out(dataset.interactions)
    run.save_vocabularies(split.user_vocab, split.item_vocab)
    trainer = Trainer(config, split, device)
    if (run.path / CHECKPOINT_FILE).exists():
        restore_checkpoint(run.path / CHECKPOINT_FILE, trainer)
        _repair_after_restore(run, trainer)
        logger.info("resuming run %s after epoch %d", run.name, trainer.epoch)
    run.set_status(
        "running", message=f"training on {dataset.name} from {dataset.source}"
    )

    def record_epoch(result: EpochResult, trainer: Trainer) -> None:
        _save_epoch(run, trainer, result)
        run.set_status(
            "running",
            epoch=result.epoch,
            best_epoch=trainer.best_epoch,
            message=f"epoch {result.epoch} of {config.epochs}",
        )
        if on_epoch is not None:
            on_epoch(result, trainer)

    result = fit(
        config,
        split,
        trainer=trainer,
        on_epoch=record_epoch,
        should_stop=run.stop_requested,
    )
    metrics = _evaluate_and_save(run, result.model, split)
    reason = "early stopping" if result.stopped_early else "all epochs done"
    run.set_status(
        "finished",
        best_epoch=result.best_epoch,
        finished_at=now_iso(),
        message=f"finished ({reason}); best epoch {result.best_epoch}",
    )
    return metrics


def _save_epoch(run: Run, trainer: Trainer, result: EpochResult) -> None:
    """Write the epoch's weights, checkpoint and metrics, in that order.

    Each file is replaced atomically, so a crash between two writes leaves the
    previous checkpoint whole; `_repair_after_restore` then realigns weights
    and metrics with the checkpoint on resume.
    """
    record = {**result.to_record(), "time": now_iso()}
    try:
        if result.improved:
            run.save_weights(trainer.model, metadata={"epoch": str(result.epoch)})
        write_atomic(
            run.path / CHECKPOINT_FILE,
            lambda tmp: save_checkpoint(tmp, trainer, last_record=record),
        )
    except OSError as error:
        reason = "the disk is full" if error.errno == errno.ENOSPC else str(error)
        raise SaveFailed(
            f"failed to save epoch {result.epoch} of run {run.name!r} because "
            f"{reason}; the previous checkpoint is kept. Free some space, then "
            "resume the run"
        ) from error
    run.append_metrics(record)


def _repair_after_restore(run: Run, trainer: Trainer) -> None:
    """Make weights and metrics agree with a checkpoint just restored."""
    if trainer.best_state is not None:
        run.save_weights_from_state(trainer.best_state, epoch=trainer.best_epoch)
    records = [r for r in run.metrics() if r.get("epoch", 0) <= trainer.epoch]
    last = trainer.last_record
    if last is not None and all(r.get("epoch") != last.get("epoch") for r in records):
        records.append(last)
    run.rewrite_metrics(records)


def _evaluate_and_save(run: Run, model, split) -> dict[str, float]:
    run.set_status("running", message="evaluating on the test split")
    evaluation = evaluate(ModelScorer(model), split, "test")
    write_json_atomic(run.path / TEST_METRICS_FILE, evaluation.summary)
    evaluation.per_user.to_parquet(run.path / "test_per_user.parquet", index=False)
    return evaluation.summary


def _finish_stopped(run: Run) -> dict[str, float] | None:
    if not run.has_weights():
        run.set_status(
            "stopped",
            message="stopped before the first epoch ended",
            finished_at=now_iso(),
        )
        return None
    model = run.load_model()
    dataset = load_dataset(run.config.dataset)
    split = leave_one_out(dataset.interactions, *run.vocabularies())
    metrics = _evaluate_and_save(run, model, split)
    run.set_status(
        "stopped",
        message="stopped on request; the best epoch so far is kept",
        finished_at=now_iso(),
    )
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Entry point of the training process: ``python -m lrml.jobs RUN_DIR``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m lrml.jobs RUN_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    torch.set_num_threads(int(os.environ.get(TORCH_THREADS_ENV, "1")))
    run = Run(Path(argv[0]))
    status = 0
    try:
        train_in_foreground(run)
    except Exception:
        logger.exception("training run %s failed", run.name)
        status = 1
    # This run's slot is free now, so start the next queued run, if any.
    try:
        schedule(run.path.parent)
    except OSError:
        logger.exception("failed to start the next queued run after %s", run.name)
    return status


if __name__ == "__main__":
    sys.exit(main())
