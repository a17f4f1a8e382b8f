"""Train one run into its folder: status, per-epoch checkpoints, metrics, test scores.

`train_run` does the work of the training process that `lrml.jobs` starts, and
of the ``train`` command, once the caller owns the run (`lrml.jobs` makes sure
that only one process does). It continues from the run's checkpoint when there
is one. It records every outcome in status.json as "finished", "stopped" on
request, "failed" with the error, or "interrupted" on Ctrl-C or SIGTERM. A
process killed outright leaves a live state behind, which `Run.status` then
reads as "interrupted".
"""

from __future__ import annotations

import errno
import logging
import traceback
from collections.abc import Callable

import torch

from lrml.checkpoint import restore_checkpoint, save_checkpoint
from lrml.data import load_dataset
from lrml.evaluation import ModelScorer, evaluate
from lrml.run_data import filter_description, run_dataset
from lrml.runs import (
    CHECKPOINT_FILE,
    LOG_FILE,
    TEST_METRICS_FILE,
    VOCAB_FILE,
    Run,
    now_iso,
    write_atomic,
    write_json_atomic,
)
from lrml.split import Split, leave_one_out
from lrml.training import EpochResult, Trainer, TrainingDiverged, TrainingStopped, fit

logger = logging.getLogger(__name__)

TEST_PER_USER_FILE = "test_per_user.parquet"

EpochCallback = Callable[[EpochResult, Trainer], None]


class SaveFailed(RuntimeError):
    """Raised when a checkpoint, weights or metrics file cannot be written."""


def train_run(
    run: Run,
    device: torch.device | None = None,
    on_epoch: EpochCallback | None = None,
) -> dict[str, float] | None:
    """Train ``run`` in this process, writing everything into its folder.

    The caller must own the run: no other process may train it at the same time.

    Returns
    -------
    dict or None
        The test metrics of the best epoch, or None if the run was stopped
        before any epoch was saved.

    Raises
    ------
    TrainingDiverged, SaveFailed, Exception
        Whatever ended training, after its traceback was appended to train.log
        and status.json was set to "failed" with the error as its message.
    KeyboardInterrupt, SystemExit
        After status.json was set to "interrupted".
    """
    try:
        return _train(run, device, on_epoch)
    except TrainingStopped:
        return _finish_stopped(run)
    except (TrainingDiverged, SaveFailed) as error:
        _append_traceback(run)
        _set_final_status(run, "failed", str(error))
        raise
    except (KeyboardInterrupt, SystemExit) as error:
        reason = "Ctrl-C" if isinstance(error, KeyboardInterrupt) else "a signal"
        _set_final_status(run, "interrupted", _interrupted_message(run, reason))
        raise
    except Exception as error:
        _append_traceback(run)
        _set_final_status(run, "failed", f"{type(error).__name__}: {error}")
        raise


def _train(
    run: Run, device: torch.device | None, on_epoch: EpochCallback | None
) -> dict[str, float]:
    config = run.config
    # Loaded first, so a dataset or filter error leaves earlier results intact.
    dataset = run_dataset(config, load_dataset(config.dataset))
    run.remove_temp_files()
    (run.path / TEST_METRICS_FILE).unlink(missing_ok=True)
    resuming = (run.path / CHECKPOINT_FILE).exists()
    split = _split(run, dataset.interactions, resuming)

    trainer = Trainer(config, split, device)
    if resuming:
        _restore(run, trainer)
    else:
        # A fresh start owns the history: drop metrics of an earlier attempt.
        run.rewrite_metrics([])
    run.set_status(
        _live_state(run),
        epoch=trainer.epoch,
        best_epoch=trainer.best_epoch,
        message=f"training on {dataset.name} ({filter_description(config)}) from "
        f"{dataset.source}",
    )

    def record_epoch(result: EpochResult, trainer: Trainer) -> None:
        _save_epoch(run, trainer, result)
        run.set_status(
            _live_state(run),
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
    if result.refit_epochs:
        # The refit model replaces the best epoch's weights: it is the one tested.
        run.save_weights(
            result.model,
            metadata={
                "epoch": str(result.best_epoch),
                "refit_epochs": str(result.refit_epochs),
            },
        )
    metrics = _evaluate_and_save(run, result.model, split)
    reason = "early stopping" if result.stopped_early else "all epochs done"
    if result.refit_epochs:
        reason += f", then refit on training and validation for {result.refit_epochs}"
        reason += " epochs"
    run.set_status(
        "finished",
        best_epoch=result.best_epoch,
        finished_at=now_iso(),
        message=f"finished ({reason}); best epoch {result.best_epoch}",
    )
    return metrics


def _split(run: Run, interactions, resuming: bool) -> Split:
    # A resumed run keeps its saved vocabularies, so that the checkpoint's rows
    # still mean the same users and items.
    if resuming and (run.path / VOCAB_FILE).exists():
        return leave_one_out(interactions, *run.vocabularies())
    split = leave_one_out(interactions)
    run.save_vocabularies(split.user_vocab, split.item_vocab)
    return split


def _restore(run: Run, trainer: Trainer) -> None:
    path = run.path / CHECKPOINT_FILE
    try:
        restore_checkpoint(path, trainer)
    except ValueError as error:
        raise ValueError(
            f"cannot resume run {run.name!r}: {error}. Delete {path} to train the "
            "run from its first epoch, or delete the run"
        ) from error
    _repair_after_restore(run, trainer)
    logger.info("resuming run %s after epoch %d", run.name, trainer.epoch)


def _live_state(run: Run) -> str:
    # Once a stop was requested, the state stays "stopping" until training ends.
    return "stopping" if run.stop_requested() else "running"


def _save_epoch(run: Run, trainer: Trainer, result: EpochResult) -> None:
    """Write the epoch's weights, checkpoint and metrics, in that order.

    Each file is replaced atomically, so a crash or a full disk between two
    writes leaves the previous checkpoint whole. On resume,
    `_repair_after_restore` realigns weights and metrics with the checkpoint.
    """
    record = {**result.to_record(), "time": now_iso()}
    try:
        if result.improved:
            run.save_weights(trainer.model, metadata={"epoch": str(result.epoch)})
        write_atomic(
            run.path / CHECKPOINT_FILE,
            lambda tmp: save_checkpoint(tmp, trainer, last_record=record),
        )
        run.append_metrics(record)
    except OSError as error:
        reason = "the disk is full" if error.errno == errno.ENOSPC else str(error)
        kept_epoch = run.checkpoint_epoch()
        kept_text = (
            f"the checkpoint of epoch {kept_epoch} is kept"
            if kept_epoch is not None
            else "no checkpoint was saved yet"
        )
        raise SaveFailed(
            f"failed to save epoch {result.epoch} of run {run.name!r} because "
            f"{reason}; {kept_text}. Free some space, then resume the run"
        ) from error


def _repair_after_restore(run: Run, trainer: Trainer) -> None:
    """Make weights and metrics agree with a checkpoint just restored.

    The weights file is rewritten from the checkpoint's best epoch. The metrics
    keep one record per epoch up to the checkpoint's, the last one taken from
    the checkpoint when the process died before appending it.
    """
    if trainer.best_state is not None:
        run.save_weights_from_state(trainer.best_state, epoch=trainer.best_epoch)
    by_epoch = {}
    for record in run.metrics():
        epoch = record.get("epoch")
        if isinstance(epoch, int) and 1 <= epoch <= trainer.epoch:
            by_epoch[epoch] = record
    last = trainer.last_record
    if last is not None and last.get("epoch") not in by_epoch:
        by_epoch[last["epoch"]] = last
    run.rewrite_metrics([by_epoch[epoch] for epoch in sorted(by_epoch)])


def _evaluate_and_save(run: Run, model, split: Split) -> dict[str, float]:
    run.set_status(_live_state(run), message="evaluating on the test split")
    evaluation = evaluate(ModelScorer(model), split, "test")
    write_atomic(
        run.path / TEST_PER_USER_FILE,
        lambda tmp: evaluation.per_user.to_parquet(tmp, index=False),
    )
    write_json_atomic(run.path / TEST_METRICS_FILE, evaluation.summary)
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
    dataset = run_dataset(run.config, load_dataset(run.config.dataset))
    split = leave_one_out(dataset.interactions, *run.vocabularies())
    metrics = _evaluate_and_save(run, model, split)
    run.set_status(
        "stopped",
        message="stopped on request; the best epoch so far is kept",
        finished_at=now_iso(),
    )
    return metrics


def _interrupted_message(run: Run, reason: str) -> str:
    epoch = run.checkpoint_epoch()
    if epoch is None:
        return f"interrupted by {reason} before the first epoch was saved"
    return f"interrupted by {reason}; resume the run to continue after epoch {epoch}"


def _append_traceback(run: Run) -> None:
    """Append the exception being handled, with its traceback, to train.log.

    It is written before the status turns "failed", so a reader who sees that
    state finds the traceback in the log.
    """
    text = f"{now_iso()} training run {run.name} failed:\n{traceback.format_exc()}"
    try:
        with open(run.path / LOG_FILE, "a", encoding="utf-8") as handle:
            handle.write(text)
    except OSError:
        logger.exception("failed to append the traceback to %s", LOG_FILE)


def _set_final_status(run: Run, state: str, message: str) -> None:
    try:
        run.set_status(state, message=message, finished_at=now_iso())
    except OSError:
        # The error that ended training propagates anyway. status.json then
        # keeps its live state, which `Run.status` reads as "interrupted" once
        # this process is gone.
        logger.exception("failed to record state %s for run %s", state, run.name)
