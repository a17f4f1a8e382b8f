"""Tests for lrml.jobs: training into a run folder, the queue, and real training processes.

The foreground tests train on the synthetic interactions in this process (the
dataset loader is replaced). The queue tests occupy training slots with plain
sleeping processes, so they start no training. The background tests, marked
slow, start real training processes on MovieLens-100K and follow them through
the run folder, as the app does.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import lrml.checkpoint
import lrml.jobs
import lrml.runner
import lrml.runs
from lrml import scheduler
from lrml.checkpoint import restore_checkpoint
from lrml.config import TrainConfig
from lrml.data import Dataset
from lrml.evaluation import ModelScorer, evaluate
from lrml.jobs import (
    DEFAULT_RUN_NAME,
    MAX_RUNS_ENV,
    TORCH_THREADS_ENV,
    SaveFailed,
    TrainingDiverged,
    delete,
    ensure_default_run,
    main,
    max_concurrent_runs,
    queued_runs,
    resume,
    resume_in_foreground,
    schedule,
    stop,
    submit,
    torch_threads,
    train_in_foreground,
)
from lrml.runs import (
    CHECKPOINT_FILE,
    FINAL_STATES,
    LOG_FILE,
    METRICS_FILE,
    STATUS_FILE,
    VOCAB_FILE,
    WEIGHTS_FILE,
    Run,
    create_run,
    list_runs,
    process_identity,
)
from lrml.split import leave_one_out
from lrml.training import Trainer

# Small enough that an epoch on MovieLens-100K takes about a second.
BACKGROUND_CONFIG = TrainConfig(
    epochs=2,
    embedding_dim=8,
    memory_size=4,
    patience=0,
    num_negatives=3,
    batch_size=4096,
)
LONG_CONFIG = BACKGROUND_CONFIG.replace(epochs=500)
BACKGROUND_TIMEOUT_S = 180.0
STARTED_LINE = re.compile(r"training process (\d+) started for run")


# Fixtures and helpers ----------------------------------------------------------


@pytest.fixture
def synthetic_dataset(interactions, monkeypatch) -> Dataset:
    """Make the runner load the synthetic interactions whatever the dataset name."""
    items = pd.DataFrame(
        {
            "item_id": sorted(interactions["item_id"].unique()),
            "title": "movie",
            "year": 2000,
            "genres": "",
        }
    )
    users = pd.DataFrame({"user_id": sorted(interactions["user_id"].unique())})
    dataset = Dataset("synthetic", interactions, items, users, "test fixture")
    monkeypatch.setattr(lrml.runner, "load_dataset", lambda name: dataset)
    return dataset


@pytest.fixture
def foreground_run(small_config, synthetic_dataset, models_dir) -> Run:
    return create_run(small_config, name="foreground", root=models_dir)


@pytest.fixture
def sleeper():
    """Start plain processes that sleep, standing in for a live training process."""
    processes = []

    def start() -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)"]
        )
        processes.append(process)
        return process

    yield start

    for process in processes:
        process.kill()
        process.wait()


@pytest.fixture
def occupy(sleeper, models_dir):
    """Return a function that fills one training slot with a sleeping process."""

    def fill(name: str = "occupant") -> tuple[Run, subprocess.Popen]:
        run = create_run(BACKGROUND_CONFIG, name=name, root=models_dir)
        process = sleeper()
        run.set_status("running", **process_identity(process.pid))
        return run, process

    return fill


@pytest.fixture(autouse=True)
def kill_training_processes(models_dir):
    """Kill every training process a test left running, at teardown."""
    yield
    for child in list(scheduler._children):
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    # Processes started by other processes (the submit race) are not our children.
    for run in list_runs(models_dir):
        pid = run.status().get("pid")
        if isinstance(pid, int) and pid != os.getpid() and _is_training(pid):
            os.killpg(pid, signal.SIGKILL)


def _is_training(pid: int) -> bool:
    try:
        return b"lrml.jobs" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _wait_for(run: Run, condition, timeout: float = BACKGROUND_TIMEOUT_S) -> dict:
    """Poll the run's status until ``condition(status)`` holds, or fail with its log."""
    deadline = time.monotonic() + timeout
    while True:
        status = run.status()
        if condition(status):
            return status
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out after {timeout} s; last status {status}; log:\n"
                f"{_log(run)[-3000:]}"
            )
        time.sleep(0.1)


def _finished(status: dict) -> bool:
    return status["state"] in FINAL_STATES


def _epoch_at_least(epoch: int):
    return lambda status: status.get("epoch", 0) >= epoch or _finished(status)


def _log(run: Run) -> str:
    path = run.path / LOG_FILE
    return path.read_text() if path.exists() else "(no log)"


def _epochs(run: Run) -> list[int]:
    return [record["epoch"] for record in run.metrics()]


def _temp_files(run: Run) -> list[str]:
    return [path.name for path in run.path.iterdir() if path.name.startswith(".")]


def _fail_writes_after(monkeypatch, module, calls_allowed: int) -> None:
    """Make ``module.save_file`` fail like a full disk after ``calls_allowed`` calls.

    A failing call writes half the file, then raises OSError(ENOSPC).
    """
    real_save_file = module.save_file
    calls = []

    def save_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) <= calls_allowed:
            return real_save_file(tensors, filename, metadata=metadata)
        real_save_file(tensors, filename, metadata=metadata)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr(module, "save_file", save_file)


# Training in this process ------------------------------------------------------


def test_foreground_returns_test_metrics(foreground_run):
    metrics = train_in_foreground(foreground_run)

    assert 0.0 <= metrics["sampled_hr@10"] <= 1.0
    assert "full_ndcg@10" in metrics
    assert foreground_run.test_metrics() == metrics


def test_foreground_status_finished(foreground_run, small_config):
    train_in_foreground(foreground_run)

    status = foreground_run.status()
    assert status["state"] == "finished"
    assert status["pid"] == os.getpid()
    assert 1 <= status["best_epoch"] <= small_config.epochs
    assert status["epoch"] == small_config.epochs
    assert "finished_at" in status


def test_foreground_refit_saves_the_tested_model(
    small_config, synthetic_dataset, models_dir
):
    run = create_run(small_config.replace(refit="on"), name="refit", root=models_dir)

    metrics = train_in_foreground(run)

    with safe_open(run.path / WEIGHTS_FILE, framework="pt") as weights:
        metadata = weights.metadata()
    best_epoch = run.status()["best_epoch"]
    assert metadata["refit_epochs"] == str(best_epoch)
    assert "refit on training and validation" in run.status()["message"]
    split = leave_one_out(synthetic_dataset.interactions, *run.vocabularies())
    again = evaluate(ModelScorer(run.load_model()), split, "test").summary
    assert again["sampled_hr@10"] == pytest.approx(metrics["sampled_hr@10"])
    assert again["full_ndcg@10"] == pytest.approx(metrics["full_ndcg@10"])


def test_foreground_writes_run_files(foreground_run, small_config):
    train_in_foreground(foreground_run)

    assert len(foreground_run.metrics()) == small_config.epochs
    assert foreground_run.has_weights()
    assert foreground_run.checkpoint_epoch() == small_config.epochs
    assert (foreground_run.path / VOCAB_FILE).exists()
    assert (foreground_run.path / "test_per_user.parquet").exists()
    assert _temp_files(foreground_run) == []


def test_foreground_metrics_records(foreground_run):
    train_in_foreground(foreground_run)

    records = foreground_run.metrics()
    assert [record["epoch"] for record in records] == [1, 2, 3]
    assert {"loss", "val_hr@10", "val_ndcg@10", "improved", "time"} <= set(records[0])


def test_foreground_saved_weights_load(foreground_run, synthetic_dataset):
    train_in_foreground(foreground_run)

    model = foreground_run.load_model()

    users, items = foreground_run.vocabularies()
    assert model.n_users == len(users)
    assert model.n_items == len(items)


def test_foreground_calls_on_epoch(foreground_run):
    epochs = []

    train_in_foreground(
        foreground_run, on_epoch=lambda result, _: epochs.append(result.epoch)
    )

    assert epochs == [1, 2, 3]


def test_foreground_stop_before_first_epoch(foreground_run):
    foreground_run.set_status("starting", **process_identity(os.getpid()))
    foreground_run.request_stop()

    metrics = train_in_foreground(foreground_run)

    assert metrics is None
    assert foreground_run.status()["state"] == "stopped"
    assert "before the first epoch" in foreground_run.status()["message"]
    assert not foreground_run.has_weights()


def test_foreground_ignores_stale_stop_request(foreground_run):
    foreground_run.request_stop()

    train_in_foreground(foreground_run)

    assert foreground_run.status()["state"] == "finished"


def test_foreground_stop_keeps_best_epoch(foreground_run):
    def stop_after_first(result, trainer):
        foreground_run.request_stop()

    metrics = train_in_foreground(foreground_run, on_epoch=stop_after_first)

    assert foreground_run.status()["state"] == "stopped"
    assert len(foreground_run.metrics()) == 1
    assert metrics == foreground_run.test_metrics()
    assert "sampled_hr@10" in metrics


def test_foreground_error_marks_failed(foreground_run):
    def fail(result, trainer):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        train_in_foreground(foreground_run, on_epoch=fail)

    status = foreground_run.status()
    log = _log(foreground_run)
    assert status["state"] == "failed"
    assert status["message"] == "RuntimeError: boom"
    assert "training run foreground failed:\nTraceback" in log
    assert log.endswith("RuntimeError: boom\n")


def test_foreground_divergence_marks_failed(foreground_run):
    def poison(result, trainer):
        with torch.no_grad():
            trainer.model.user_embeddings.fill_(float("nan"))

    with pytest.raises(TrainingDiverged):
        train_in_foreground(foreground_run, on_epoch=poison)

    status = foreground_run.status()
    assert status["state"] == "failed"
    assert status["message"].startswith("loss became nan in epoch 2")
    assert "lower the learning rate" in status["message"]
    assert foreground_run.checkpoint_epoch() == 1


def test_foreground_ctrl_c_marks_interrupted(foreground_run):
    def interrupt(result, trainer):
        if result.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_in_foreground(foreground_run, on_epoch=interrupt)

    status = foreground_run.status()
    assert status["state"] == "interrupted"
    assert status["message"] == (
        "interrupted by Ctrl-C; resume the run to continue after epoch 2"
    )


def test_foreground_rejects_run_of_live_process(foreground_run, sleeper):
    process = sleeper()
    foreground_run.set_status("running", **process_identity(process.pid))

    with pytest.raises(ValueError, match=f"already running in process {process.pid}"):
        train_in_foreground(foreground_run)

    assert foreground_run.status()["pid"] == process.pid
    assert not (foreground_run.path / METRICS_FILE).exists()


def test_foreground_rejects_non_run_folder(tmp_path):
    folder = tmp_path / "not-a-run"
    folder.mkdir()

    with pytest.raises(ValueError, match="is not a run folder"):
        train_in_foreground(Run(folder))


def test_resume_in_foreground_continues_epochs(foreground_run):
    train_in_foreground(foreground_run)

    resume_in_foreground(foreground_run, 2)

    assert _epochs(foreground_run) == [1, 2, 3, 4, 5]
    assert foreground_run.config.epochs == 5
    assert foreground_run.checkpoint_epoch() == 5
    assert foreground_run.status()["state"] == "finished"


def test_resume_repairs_files_after_crash(foreground_run):
    train_in_foreground(foreground_run)
    # A crash after the checkpoint of epoch 3 but before its metrics line, after
    # an earlier line was written twice, and in the middle of a weights write.
    lines = (foreground_run.path / METRICS_FILE).read_text().splitlines()
    torn = "\n".join([lines[0], lines[0], lines[1], lines[2][:10]]) + "\n"
    (foreground_run.path / METRICS_FILE).write_text(torn)
    (foreground_run.path / ".weights.safetensors.abcd1234").write_bytes(b"half")
    foreground_run.set_status("running", pid=None)
    assert foreground_run.status()["state"] == "interrupted"

    resume_in_foreground(foreground_run, 1)

    assert _epochs(foreground_run) == [1, 2, 3, 4]
    assert _temp_files(foreground_run) == []


def test_full_disk_keeps_previous_checkpoint(
    foreground_run, small_config, split, monkeypatch
):
    # Epoch 1 writes weights and checkpoint; epoch 2's checkpoint hits a full disk.
    _fail_writes_after(monkeypatch, lrml.checkpoint, calls_allowed=1)

    with pytest.raises(SaveFailed):
        train_in_foreground(foreground_run)

    status = foreground_run.status()
    assert status["state"] == "failed"
    assert status["message"] == (
        "failed to save epoch 2 of run 'foreground' because the disk is full; "
        "the checkpoint of epoch 1 is kept. Free some space, then resume the run"
    )
    assert _temp_files(foreground_run) == []
    assert _epochs(foreground_run) == [1]
    trainer = Trainer(small_config, split)
    restore_checkpoint(foreground_run.path / CHECKPOINT_FILE, trainer)
    assert trainer.epoch == 1
    assert foreground_run.load_model().n_users == split.n_users


def test_full_disk_run_resumes(foreground_run, monkeypatch):
    real_save_file = lrml.checkpoint.save_file
    _fail_writes_after(monkeypatch, lrml.checkpoint, calls_allowed=1)
    with pytest.raises(SaveFailed):
        train_in_foreground(foreground_run)
    monkeypatch.setattr(lrml.checkpoint, "save_file", real_save_file)

    resume_in_foreground(foreground_run, 2)

    assert _epochs(foreground_run) == [1, 2, 3]
    assert foreground_run.status()["state"] == "finished"


def test_full_disk_on_first_weights(foreground_run, monkeypatch):
    _fail_writes_after(monkeypatch, lrml.runs, calls_allowed=0)

    with pytest.raises(SaveFailed, match="no checkpoint was saved yet"):
        train_in_foreground(foreground_run)

    assert not foreground_run.has_weights()
    assert foreground_run.checkpoint_epoch() is None
    assert _temp_files(foreground_run) == []


def test_corrupt_checkpoint_marks_failed(foreground_run):
    train_in_foreground(foreground_run)
    path = foreground_run.path / CHECKPOINT_FILE
    path.write_bytes(path.read_bytes()[:100])

    with pytest.raises(ValueError, match="cannot resume run 'foreground'"):
        train_in_foreground(foreground_run)

    message = foreground_run.status()["message"]
    assert foreground_run.status()["state"] == "failed"
    assert "is not a readable checkpoint" in message
    assert f"Delete {path}" in message


# Limits ----------------------------------------------------------------------


def test_max_concurrent_runs_from_environment(monkeypatch):
    monkeypatch.setenv(MAX_RUNS_ENV, "3")

    assert max_concurrent_runs() == 3


def test_max_concurrent_runs_default(monkeypatch):
    monkeypatch.delenv(MAX_RUNS_ENV, raising=False)

    assert max_concurrent_runs() == max(1, len(os.sched_getaffinity(0)) // 2)


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_max_concurrent_runs_invalid(monkeypatch, value):
    monkeypatch.setenv(MAX_RUNS_ENV, value)

    with pytest.raises(ValueError, match=f"must be a positive integer; got '{value}'"):
        max_concurrent_runs()


def test_torch_threads_default(monkeypatch):
    monkeypatch.delenv(TORCH_THREADS_ENV, raising=False)

    assert torch_threads() == 1


@pytest.mark.parametrize("value", ["0", "257", "many"])
def test_torch_threads_invalid(monkeypatch, value):
    monkeypatch.setenv(TORCH_THREADS_ENV, value)

    with pytest.raises(ValueError, match=f"from 1 to 256; got '{value}'"):
        torch_threads()


# The queue (no training starts: sleeping processes fill the slots) -------------------


@pytest.fixture
def one_slot(monkeypatch):
    monkeypatch.setenv(MAX_RUNS_ENV, "1")


def test_created_run_waits_for_submit(one_slot, models_dir):
    create_run(BACKGROUND_CONFIG, name="created", root=models_dir)

    assert schedule(models_dir) == []
    assert queued_runs(models_dir) == []


def test_submit_queues_behind_live_run(one_slot, occupy, models_dir):
    occupy()
    run = create_run(BACKGROUND_CONFIG, name="waiting", root=models_dir)

    submit(run)

    status = run.status()
    assert status["state"] == "queued"
    assert status["message"] == "waiting for a free training slot"
    assert queued_runs(models_dir) == [run]


def test_queue_keeps_submission_order(one_slot, occupy, models_dir):
    occupy()
    names = ["c", "a", "b", "e", "d"]
    for name in names:
        submit(create_run(BACKGROUND_CONFIG, name=name, root=models_dir))

    assert [run.name for run in queued_runs(models_dir)] == names


def test_submit_twice_keeps_queue_place(one_slot, occupy, models_dir):
    occupy()
    first = submit(create_run(BACKGROUND_CONFIG, name="first", root=models_dir))
    submit(create_run(BACKGROUND_CONFIG, name="second", root=models_dir))
    queued_at = first.status()["queued_at"]

    submit(first)

    assert first.status()["queued_at"] == queued_at
    assert [run.name for run in queued_runs(models_dir)] == ["first", "second"]


def test_submit_leaves_live_run_alone(occupy):
    run, process = occupy()

    submit(run)

    assert run.status()["state"] == "running"
    assert run.status()["pid"] == process.pid


def test_submit_records_failed_start(models_dir, monkeypatch):
    def no_memory(*args, **kwargs):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(scheduler.subprocess, "Popen", no_memory)
    run = create_run(BACKGROUND_CONFIG, name="unlucky", root=models_dir)

    submit(run)

    status = run.status()
    assert status["state"] == "failed"
    assert status["message"] == (
        "failed to start the training process: [Errno 12] Cannot allocate memory"
    )


def test_stop_queued_run(one_slot, occupy, models_dir):
    occupy()
    run = submit(create_run(BACKGROUND_CONFIG, name="waiting", root=models_dir))

    stop(run)

    status = run.status()
    assert status["state"] == "stopped"
    assert status["message"] == "removed from the queue before it started"
    assert queued_runs(models_dir) == []


def test_stop_live_run_requests_stop(occupy):
    run, _ = occupy()

    stop(run)

    assert run.status()["state"] == "stopping"
    assert run.stop_requested()


def test_stop_finished_run_changes_nothing(models_dir):
    run = create_run(BACKGROUND_CONFIG, name="done", root=models_dir)
    run.set_status("finished")

    stop(run)

    assert run.status()["state"] == "finished"
    assert not run.stop_requested()


def test_stopped_run_submitted_again(one_slot, occupy, models_dir):
    occupy()
    run = submit(create_run(BACKGROUND_CONFIG, name="waiting", root=models_dir))
    stop(run)

    submit(run)

    assert run.status()["state"] == "queued"


@pytest.mark.parametrize("state", ["queued", "running"])
def test_resume_rejects_active_run(occupy, models_dir, state):
    run, _ = occupy()
    if state == "queued":
        run = create_run(BACKGROUND_CONFIG, name="queued", root=models_dir)

    with pytest.raises(ValueError, match=f"is {state}; stop it before resuming it"):
        resume(run, 1)


def test_resume_rejects_run_without_checkpoint(models_dir):
    run = create_run(BACKGROUND_CONFIG, name="empty", root=models_dir)
    run.set_status("stopped")

    with pytest.raises(ValueError, match="has no checkpoint to resume from"):
        resume(run, 1)

    assert run.status()["state"] == "stopped"


@pytest.mark.parametrize("extra", [0, -3, 9999, 2.5, True, "3"])
def test_resume_rejects_invalid_extra_epochs(foreground_run, extra):
    train_in_foreground(foreground_run)

    with pytest.raises(
        ValueError, match=r"extra_epochs must be an integer from 1 to 9997 .* got"
    ):
        resume(foreground_run, extra)

    assert foreground_run.config.epochs == 3
    assert foreground_run.status()["state"] == "finished"


@pytest.mark.parametrize("state", ["queued", "running"])
def test_delete_rejects_active_run(occupy, models_dir, state):
    run, _ = occupy()
    if state == "queued":
        run = create_run(BACKGROUND_CONFIG, name="queued", root=models_dir)

    with pytest.raises(ValueError, match=f"is {state}; stop it before deleting it"):
        delete(run)

    assert run.path.is_dir()


def test_delete_removes_folder(models_dir):
    run = create_run(BACKGROUND_CONFIG, name="done", root=models_dir)
    run.set_status("finished")

    delete(run)

    assert not run.path.exists()
    assert list_runs(models_dir) == []


def test_delete_rejects_folder_outside_models(models_dir, tmp_path):
    models_dir.mkdir()
    outside = create_run(BACKGROUND_CONFIG, name="outside", root=tmp_path / "other")
    outside.set_status("finished")

    with pytest.raises(ValueError, match="it is not a run folder in"):
        delete(outside)

    assert outside.path.is_dir()


def test_delete_rejects_symlink(models_dir, tmp_path):
    target = create_run(BACKGROUND_CONFIG, name="target", root=models_dir)
    target.set_status("finished")
    link = models_dir / "link"
    link.symlink_to(target.path)

    with pytest.raises(ValueError, match="it is not a run folder in"):
        delete(Run(link))

    assert target.path.is_dir()


def test_delete_rejects_folder_without_config(models_dir):
    folder = models_dir / "data"
    folder.mkdir(parents=True)

    with pytest.raises(ValueError, match="is not a run folder"):
        delete(Run(folder))

    assert folder.is_dir()


def test_delete_unreadable_status(models_dir):
    run = create_run(BACKGROUND_CONFIG, name="torn", root=models_dir)
    (run.path / STATUS_FILE).write_text('{"state": "runn')

    delete(run)

    assert not run.path.exists()


@pytest.mark.parametrize(
    "action",
    [submit, stop, lambda run: resume(run, 1), train_in_foreground],
    ids=["submit", "stop", "resume", "train_in_foreground"],
)
def test_actions_reject_non_run_folder(tmp_path, action):
    folder = tmp_path / "elsewhere"
    folder.mkdir()

    with pytest.raises(ValueError, match="is not a run folder"):
        action(Run(folder))

    assert list(folder.iterdir()) == []


@pytest.mark.parametrize(
    "action",
    [submit, stop, lambda run: resume(run, 1)],
    ids=["submit", "stop", "resume"],
)
def test_actions_reject_symlinked_run(models_dir, tmp_path, action):
    target = create_run(BACKGROUND_CONFIG, name="target", root=tmp_path / "other")
    target.set_status("finished")
    models_dir.mkdir()
    (models_dir / "link").symlink_to(target.path)

    with pytest.raises(ValueError, match="is not a run folder"):
        action(Run(models_dir / "link"))

    assert target.status()["state"] == "finished"


def test_actions_reject_unsafe_name(models_dir):
    with pytest.raises(ValueError, match="invalid run name '..'"):
        submit(Run(models_dir / ".."))


def test_jobs_main_usage(capsys):
    assert main([]) == 2
    assert "usage: python -m lrml.jobs RUN_DIR" in capsys.readouterr().err


def test_ensure_default_run_starts_once(monkeypatch, tmp_path):
    started = []
    monkeypatch.setattr(lrml.jobs, "start_training", started.append)

    first = ensure_default_run(tmp_path)
    second = ensure_default_run(tmp_path)

    assert first.name == DEFAULT_RUN_NAME
    assert first.config == TrainConfig()
    assert second is None
    assert started == [first]


def test_ensure_default_run_skips_existing(monkeypatch, tmp_path):
    started = []
    monkeypatch.setattr(lrml.jobs, "start_training", started.append)
    create_run(BACKGROUND_CONFIG, name="mine", root=tmp_path)

    assert ensure_default_run(tmp_path) is None
    assert started == []


def test_ensure_default_run_concurrent(monkeypatch, tmp_path):
    started = []
    monkeypatch.setattr(lrml.jobs, "start_training", started.append)
    barrier = threading.Barrier(8)
    results = []

    def call():
        barrier.wait()
        results.append(ensure_default_run(tmp_path))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(started) == 1
    assert sum(result is not None for result in results) == 1


def test_ensure_default_run_uses_models_dir(monkeypatch, models_dir):
    monkeypatch.setattr(lrml.jobs, "start_training", lambda run: None)

    run = ensure_default_run()

    assert run.path == models_dir / DEFAULT_RUN_NAME


# Real training processes ---------------------------------------------------------


@pytest.mark.slow
def test_background_run_started_once(models_dir, ml100k):
    """Four browser sessions submit one run at once; one process trains it."""
    run = create_run(BACKGROUND_CONFIG, name="background", root=models_dir)
    barrier = threading.Barrier(4)

    def session():
        barrier.wait()
        submit(run)

    threads = [threading.Thread(target=session) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    status = _wait_for(run, _finished)

    started = STARTED_LINE.findall(_log(run))
    assert status["state"] == "finished", status
    assert started == [str(status["pid"])]
    assert "with 1 torch thread" in _log(run)
    assert _epochs(run) == [1, 2]
    assert run.has_weights()
    assert run.test_metrics()["users"] == 943
    assert 0.0 < run.test_metrics()["sampled_hr@10"] <= 1.0


@pytest.mark.slow
def test_background_queue_starts_next(one_slot, models_dir, ml100k):
    first = submit(create_run(BACKGROUND_CONFIG, name="first", root=models_dir))
    second = submit(create_run(LONG_CONFIG, name="second", root=models_dir))
    third = submit(create_run(BACKGROUND_CONFIG, name="third", root=models_dir))

    assert first.status()["state"] in ("starting", "running")
    assert queued_runs(models_dir) == [second, third]
    with pytest.raises(ValueError, match="stop it before deleting it"):
        delete(first)
    with pytest.raises(ValueError, match="stop it before resuming it"):
        resume(first, 1)
    stop(third)
    assert queued_runs(models_dir) == [second]

    first_status = _wait_for(first, _finished)
    # NOTE: a SIGTERM sent as soon as the status read "running" was once lost,
    # and the run trained all its epochs. The cause is unknown, so the signal
    # is sent after the first epoch, which tests it during training.
    second_status = _wait_for(
        second,
        lambda status: status["state"] == "running" and status.get("epoch", 0) >= 1,
    )
    # SIGTERM ends the training process like Ctrl-C: it records "interrupted".
    os.kill(second_status["pid"], signal.SIGTERM)
    second_status = _wait_for(second, _finished)

    assert first_status["state"] == "finished"
    assert second_status["started_at"] >= first_status["finished_at"]
    assert second_status["state"] == "interrupted"
    assert second_status["message"].startswith("interrupted by a signal")
    assert third.status()["state"] == "stopped"
    assert not (third.path / LOG_FILE).exists()


@pytest.mark.slow
def test_background_kill_then_resume(models_dir, ml100k):
    run = submit(create_run(LONG_CONFIG, name="to-kill", root=models_dir))
    status = _wait_for(run, _epoch_at_least(2))
    assert status["state"] == "running", status

    os.kill(status["pid"], signal.SIGKILL)
    status = _wait_for(run, lambda status: status["state"] != "running", timeout=30)
    done = run.checkpoint_epoch()

    assert status["state"] == "interrupted"
    assert f"checkpoint of epoch {done}" in status["message"]
    assert done >= 2
    assert _epochs(run) == list(range(1, done + 1))

    resume(run, 100)
    _wait_for(run, _epoch_at_least(done + 1))
    stop(run)
    status = _wait_for(run, _finished)

    epochs = _epochs(run)
    assert status["state"] == "stopped", status
    assert epochs == list(range(1, len(epochs) + 1))
    assert len(epochs) > done
    assert f"resuming run to-kill after epoch {done}" in _log(run)
    assert run.config.epochs == done + 100
    assert run.test_metrics() is not None

    delete(run)
    assert not run.path.exists()


@pytest.mark.slow
def test_background_nan_fails_with_advice(models_dir, ml100k, monkeypatch):
    run = create_run(BACKGROUND_CONFIG.replace(epochs=1), name="nan", root=models_dir)
    with monkeypatch.context() as patch:
        patch.setattr(lrml.runner, "load_dataset", lambda name: ml100k)
        train_in_foreground(run)
    path = run.path / CHECKPOINT_FILE
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    tensors["model.user_embeddings"][0] = float("nan")
    save_file(tensors, str(path), metadata=metadata)

    resume(run, 2)
    status = _wait_for(run, _finished)

    assert status["state"] == "failed", status
    assert status["message"] == (
        "loss became nan in epoch 2; lower the learning rate (now 0.001) and "
        "start again"
    )
    assert "TrainingDiverged" in _log(run)
    assert run.checkpoint_epoch() == 1
    assert not run.load_model().user_embeddings.isnan().any()


@pytest.mark.slow
def test_background_failures_recorded(models_dir, monkeypatch):
    monkeypatch.setenv(MAX_RUNS_ENV, "2")
    bad_data = BACKGROUND_CONFIG.replace(dataset="no-such-data")
    data_run = submit(create_run(bad_data, name="bad-data", root=models_dir))
    # The training process reads the variable when it starts, at submit.
    monkeypatch.setenv(TORCH_THREADS_ENV, "lots")
    threads_run = submit(create_run(BACKGROUND_CONFIG, name="threads", root=models_dir))

    data_status = _wait_for(data_run, _finished)
    threads_status = _wait_for(threads_run, _finished)

    assert data_status["state"] == "failed"
    assert data_status["message"].startswith("DataError: ")
    assert "'no-such-data'" in data_status["message"]
    assert "Traceback (most recent call last)" in _log(data_run)
    assert "DataError" in _log(data_run)
    assert threads_status["state"] == "failed"
    assert threads_status["message"] == (
        "LRML_TORCH_THREADS must be an integer from 1 to 256; got 'lots'"
    )


@pytest.mark.slow
def test_restart_starts_waiting_queue(one_slot, occupy, models_dir):
    occupant, process = occupy()
    run = submit(create_run(LONG_CONFIG, name="waiting", root=models_dir))
    # The occupant dies without starting the next run, like a killed process.
    process.kill()
    process.wait()
    assert occupant.status()["state"] == "interrupted"
    assert run.status()["state"] == "queued"

    # The app calls this on every page load.
    assert ensure_default_run() is None

    status = run.status()
    assert status["state"] == "starting"
    assert status["pid"] != process.pid
