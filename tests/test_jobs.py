"""Tests for lrml.jobs: foreground training into a run folder, and real background runs.

The foreground tests train on the synthetic interactions (the dataset loader is
replaced). The background tests spawn real training processes on MovieLens-100K
and follow them through the run folder, as the app does.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pandas as pd
import pytest
import torch

import lrml.jobs
from lrml.config import TrainConfig
from lrml.data import Dataset
from lrml.jobs import (
    DEFAULT_RUN_NAME,
    ensure_default_run,
    main,
    start_training,
    train_in_foreground,
)
from lrml.runs import FINAL_STATES, LOG_FILE, VOCAB_FILE, Run, create_run

# Small enough that a background run on MovieLens-100K takes seconds per epoch.
BACKGROUND_CONFIG = TrainConfig(epochs=3, embedding_dim=8, memory_size=4, patience=0)
BACKGROUND_TIMEOUT_S = 120.0


@pytest.fixture
def synthetic_dataset(interactions, monkeypatch) -> Dataset:
    """Make `lrml.jobs` load the synthetic interactions whatever the dataset name."""
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
    monkeypatch.setattr(lrml.jobs, "load_dataset", lambda name: dataset)
    return dataset


@pytest.fixture
def foreground_run(small_config, synthetic_dataset, models_dir) -> Run:
    return create_run(small_config, name="foreground", root=models_dir)


@pytest.fixture
def spawn(monkeypatch):
    """Start real training processes, and kill any still alive at teardown."""
    pids = []

    def start(run: Run) -> int:
        start_training(run)
        status = run.status()
        assert status["state"] == "starting", status
        pid = status["pid"]
        pids.append(pid)
        return pid

    yield start

    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _wait_for(run: Run, condition, timeout: float = BACKGROUND_TIMEOUT_S) -> dict:
    """Poll the run's status until ``condition(status)`` holds, or fail with its log."""
    deadline = time.monotonic() + timeout
    while True:
        status = run.status()
        if condition(status):
            return status
        if time.monotonic() > deadline:
            log_path = run.path / LOG_FILE
            log = log_path.read_text()[-3000:] if log_path.exists() else "(no log)"
            pytest.fail(
                f"timed out after {timeout} s; last status {status}; log:\n{log}"
            )
        time.sleep(0.2)


def _finished(status: dict) -> bool:
    return status["state"] in FINAL_STATES


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
    assert "finished_at" in status


def test_foreground_writes_run_files(foreground_run, small_config):
    train_in_foreground(foreground_run)

    assert len(foreground_run.metrics()) == small_config.epochs
    assert foreground_run.has_weights()
    assert (foreground_run.path / VOCAB_FILE).exists()
    assert (foreground_run.path / "test_per_user.parquet").exists()


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
    foreground_run.request_stop()

    metrics = train_in_foreground(foreground_run)

    assert metrics is None
    assert foreground_run.status()["state"] == "stopped"
    assert "before the first epoch" in foreground_run.status()["message"]
    assert not foreground_run.has_weights()


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
    assert status["state"] == "failed"
    assert status["message"] == "RuntimeError: boom"


def test_foreground_divergence_marks_failed(foreground_run):
    def poison(result, trainer):
        with torch.no_grad():
            trainer.model.user_embeddings.fill_(float("nan"))

    with pytest.raises(lrml.jobs.TrainingDiverged):
        train_in_foreground(foreground_run, on_epoch=poison)

    status = foreground_run.status()
    assert status["state"] == "failed"
    assert status["message"].startswith("loss became nan in epoch 2")


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


def test_background_run_finishes(spawn, models_dir, ml100k):
    run = create_run(BACKGROUND_CONFIG, name="background")

    pid = spawn(run)
    status = _wait_for(run, _finished)

    assert status["state"] == "finished", status
    assert status["pid"] == pid
    assert run.path.parent == models_dir
    assert len(run.metrics()) == 3
    assert run.has_weights()
    assert run.test_metrics()["users"] == 943
    assert 0.0 < run.test_metrics()["sampled_hr@10"] <= 1.0
    assert (run.path / LOG_FILE).stat().st_size > 0


def test_background_stop_request(spawn, ml100k):
    run = create_run(BACKGROUND_CONFIG.replace(epochs=500), name="to-stop")

    spawn(run)
    _wait_for(run, lambda status: status.get("epoch", 0) >= 1 or _finished(status))
    run.request_stop()
    status = _wait_for(run, _finished)

    assert status["state"] == "stopped", status
    assert "stopped on request" in status["message"]
    assert run.test_metrics() is not None
    assert len(run.metrics()) < 500


def test_background_kill_reads_interrupted(spawn, ml100k):
    run = create_run(BACKGROUND_CONFIG.replace(epochs=500), name="to-kill")

    pid = spawn(run)
    _wait_for(run, lambda status: status["state"] == "running" or _finished(status))
    os.kill(pid, signal.SIGKILL)
    status = _wait_for(run, lambda status: status["state"] != "running", timeout=30)

    assert status["state"] == "interrupted"
