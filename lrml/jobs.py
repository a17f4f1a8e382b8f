"""Background training: each run trains in its own process, tracked through its folder.

The app and the command line start a run with `start_training`, which spawns
``python -m lrml.jobs RUN_DIR``. That process writes status, metrics and weights
into the run folder, and checks for a stop request between batches, so any
number of readers (browser sessions, a terminal) can follow it by reading files.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from lrml.config import TrainConfig
from lrml.data import load_dataset
from lrml.evaluation import ModelScorer, evaluate
from lrml.runs import (
    LOG_FILE,
    REPO_ROOT,
    TEST_METRICS_FILE,
    Run,
    create_run,
    list_runs,
    models_dir,
    now_iso,
    write_json_atomic,
)
from lrml.split import leave_one_out
from lrml.training import EpochResult, Trainer, TrainingDiverged, TrainingStopped, fit

logger = logging.getLogger(__name__)

DEFAULT_RUN_NAME = "default"
TORCH_THREADS_ENV = "LRML_TORCH_THREADS"


def start_training(run: Run) -> int:
    """Spawn the training process for ``run`` and return its process id.

    The child gets its own session, so it outlives the app's server if that
    stops, and its output goes to the run's ``train.log``.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
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
    if run.status().get("state") == "queued":
        # The child overwrites this with "running" once it has imported torch.
        run.set_status("queued", pid=process.pid, message="training process started")
    logger.info("started training run %s as process %d", run.name, process.pid)
    return process.pid


def ensure_default_run(root: Path | None = None) -> Run | None:
    """Start the default configuration when the models folder holds no run yet.

    Returns the new run, or None when a run already exists. Safe to call from
    many browser sessions at once: only the caller whose ``mkdir`` succeeds
    starts a process.
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


def train_in_foreground(
    run: Run,
    device: torch.device | None = None,
    on_epoch=None,
) -> dict[str, float] | None:
    """Train ``run`` in this process, writing everything into its folder.

    Returns the test metrics of the best epoch, or None if no epoch finished.
    Errors are written to the status file before they propagate.
    """
    run.set_status(
        "running", pid=os.getpid(), started_at=now_iso(), message="loading data"
    )
    try:
        return _train(run, device, on_epoch)
    except TrainingStopped:
        metrics = _finish_stopped(run)
        return metrics
    except TrainingDiverged as error:
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
    run.set_status(
        "running", message=f"training on {dataset.name} from {dataset.source}"
    )

    trainer = Trainer(config, split, device)
    best = {"epoch": 0}

    def record_epoch(result: EpochResult, trainer: Trainer) -> None:
        if result.improved:
            run.save_weights(trainer.model, metadata={"epoch": str(result.epoch)})
            best["epoch"] = result.epoch
        run.append_metrics({**result.to_record(), "time": now_iso()})
        run.set_status(
            "running",
            epoch=result.epoch,
            best_epoch=best["epoch"],
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


def _evaluate_and_save(run: Run, model, split) -> dict[str, float]:
    run.set_status("running", message="evaluating on the test split")
    started = time.perf_counter()
    evaluation = evaluate(ModelScorer(model), split, "test")
    summary = {**evaluation.summary, "seconds": time.perf_counter() - started}
    write_json_atomic(run.path / TEST_METRICS_FILE, summary)
    evaluation.per_user.to_parquet(run.path / "test_per_user.parquet", index=False)
    return summary


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
        "stopped", message="stopped on request; best epoch kept", finished_at=now_iso()
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
    try:
        train_in_foreground(run)
    except Exception:
        logger.exception("training run %s failed", run.name)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
