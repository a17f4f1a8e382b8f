"""Tests for the training commands of lrml.cli: train's progress display, runs, resume, stop.

``train`` runs as a real subprocess, once with pipes and once on a
pseudo-terminal, because what it shows depends on whether stderr is a
terminal. The other commands call `main` in this process.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from lrml import scheduler
from lrml.cli import main
from lrml.config import TrainConfig
from lrml.jobs import submit
from lrml.runs import LOG_FILE, REPO_ROOT, Run, create_run, process_identity

TRAIN_ARGS = [
    "train",
    "--epochs",
    "2",
    "--embedding-dim",
    "8",
    "--memory-size",
    "4",
    "--batch-size",
    "4096",
    "--set",
    "num_negatives=3",
]
SMALL_CONFIG = TrainConfig(
    epochs=2, embedding_dim=8, memory_size=4, batch_size=4096, num_negatives=3
)
TIMEOUT_S = 300


def _cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lrml", *args]


def _run_on_terminal(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``command`` with a pseudo-terminal as stdin, stdout and stderr."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        command,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=REPO_ROOT,
        env=env,
        close_fds=True,
    )
    os.close(terminal)
    chunks = []
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the child closed its end of the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    code = process.wait(timeout=TIMEOUT_S)
    return code, b"".join(chunks).decode("utf-8", errors="replace")


@pytest.fixture(scope="module")
def piped_training(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """Train a two-epoch run with stdout and stderr captured through pipes."""
    out = tmp_path_factory.mktemp("cli-training") / "piped"
    result = subprocess.run(
        _cli_command(*TRAIN_ARGS, "--out", str(out)),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.fixture
def trained_run(piped_training, models_dir) -> Run:
    """A copy of the piped run in this test's models folder."""
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / "trained"
    shutil.copytree(piped_training[0], path)
    return Run(path)


@pytest.fixture(autouse=True)
def kill_training_processes():
    """Kill the training processes a test started, at teardown."""
    yield
    for child in list(scheduler._children):
        if child.poll() is None:
            os.killpg(child.pid, 9)
            child.wait()


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_train_without_terminal_logs_lines(piped_training):
    _, result = piped_training

    assert re.search(r"INFO lrml.training: epoch 1: loss \d\.\d{4}", result.stderr)
    assert re.search(r"INFO lrml.training: epoch 2: loss \d\.\d{4}", result.stderr)
    assert "\r" not in result.stderr
    assert "epoch/s" not in result.stderr
    assert "run folder:" in result.stdout


@pytest.mark.slow
def test_train_writes_run_log(piped_training):
    out, _ = piped_training

    log = (out / LOG_FILE).read_text()

    assert "epoch 2: loss" in log
    assert "Loaded ml-100k" in log


@pytest.mark.slow
def test_train_on_terminal_shows_bar(tmp_path):
    out = tmp_path / "terminal"
    env = {**os.environ, "TERM": "xterm"}

    code, output = _run_on_terminal(_cli_command(*TRAIN_ARGS, "--out", str(out)), env)

    assert code == 0, output
    assert re.search(r"training: +100%\|.*\| 2/2 ", output), output
    assert re.search(r"loss=\d\.\d{4}, val_hr10=0\.\d{3}", output), output
    assert "\r" in output
    # The epoch log lines print above the bar, each on a line of its own.
    assert re.search(r"[\r\n]INFO lrml.training: epoch 2: loss", output), output


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--embedding-dim", "4096"],
            r"embedding_dim must be in \[2, 1024\]; got 4096",
        ),
        (["--memory-size", "0"], r"memory_size must be in \[1, 512\]; got 0"),
        (["--margin", "11"], r"margin must be in \[0.0, 10.0\]; got 11.0"),
        (
            ["--learning-rate", "nan"],
            r"learning_rate must be a finite number in \[1e-06, 1.0\]; got nan",
        ),
        (["--batch-size", "0"], r"batch_size must be in \[1, 1000000\]; got 0"),
        (["--num-negatives", "1001"], r"num_negatives must be in \[1, 1000\]"),
        (["--seed", "-1"], r"seed must be in \[0, 2147483647\]; got -1"),
        (["--set", "patience=-2"], r"patience must be in \[0, 10000\]; got -2"),
        (["--set", "clip_radius=0"], r"clip_radius must be in \[0.001, 100.0\]"),
        (["--set", "optimizer=lbfgs"], "optimizer must be one of adam, adagrad, sgd"),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else None,
)
def test_train_invalid_hyperparameter(capsys, models_dir, argv, message):
    code = main(["train", *argv])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1
    assert len(_error_lines(captured.err)) == 1
    assert re.search(message, captured.err)
    assert not models_dir.exists() or list(models_dir.iterdir()) == []


def test_train_invalid_threads_creates_no_run(capsys, models_dir, monkeypatch):
    monkeypatch.setenv("LRML_TORCH_THREADS", "0")

    code = main(["train", "--epochs", "1"])

    assert code == 2
    assert capsys.readouterr().err == (
        "error: LRML_TORCH_THREADS must be an integer from 1 to 256; got '0'\n"
    )
    assert not models_dir.exists() or list(models_dir.iterdir()) == []


def test_train_invalid_hyperparameter_in_subprocess(tmp_path):
    result = subprocess.run(
        _cli_command("train", "--epochs", "20000"),
        cwd=REPO_ROOT,
        env={**os.environ, "LRML_MODELS_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr == "error: epochs must be in [1, 10000]; got 20000\n"
    assert result.stdout == ""


@pytest.fixture
def occupant(models_dir, monkeypatch) -> Run:
    """Fill the only training slot with a run whose process sleeps."""
    monkeypatch.setenv("LRML_MAX_CONCURRENT_RUNS", "1")
    run = create_run(SMALL_CONFIG, name="occupant", root=models_dir)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    run.set_status("running", **process_identity(sleeper.pid), epoch=1)
    yield run
    sleeper.kill()
    sleeper.wait()


def test_runs_shows_queue_positions(capsys, models_dir, occupant):
    for name in ("next", "later"):
        submit(create_run(SMALL_CONFIG, name=name, root=models_dir))

    assert main(["runs"]) == 0

    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    states = {row[0]: row[1] for row in rows}
    assert all(len(row) == 5 for row in rows)
    assert states == {
        "occupant": "running",
        "next": "queued (1 of 2)",
        "later": "queued (2 of 2)",
    }


def test_resume_rejects_running_run(capsys, occupant):
    code = main(["resume", "occupant", "--epochs", "1"])

    assert code == 2
    assert _error_lines(capsys.readouterr().err) == [
        "error: run 'occupant' is running; stop it before resuming it"
    ]


def test_stop_running_run(capsys, occupant):
    assert main(["stop", "occupant"]) == 0

    assert capsys.readouterr().out == (
        "occupant: stopping (stop requested; stopping after the current batch)\n"
    )
    assert occupant.stop_requested()


@pytest.mark.slow
def test_resume_trains_more_epochs(capsys, caplog, trained_run):
    caplog.set_level(logging.INFO, logger="lrml")

    code = main(["resume", "trained", "--epochs", "1"])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "epochs: 3 " in captured.out
    assert [record["epoch"] for record in trained_run.metrics()] == [1, 2, 3]
    assert trained_run.config.epochs == 3
    assert (
        "resuming run trained after epoch 2"
        in (trained_run.path / LOG_FILE).read_text()
    )


@pytest.mark.slow
def test_resume_in_background(capsys, trained_run):
    code = main(["resume", "trained", "--epochs", "1", "--background"])

    assert code == 0
    assert capsys.readouterr().out == (
        "trained: starting (training process starting)\n"
    )
    assert trained_run.status()["state"] == "starting"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("epochs", "message"),
    [
        ("0", r"extra_epochs must be an integer from 1 to 9998 .*; got 0"),
        ("9999", r"extra_epochs must be an integer from 1 to 9998 .*; got 9999"),
    ],
)
def test_resume_invalid_epochs(capsys, trained_run, epochs, message):
    code = main(["resume", "trained", "--epochs", epochs])

    errors = _error_lines(capsys.readouterr().err)
    assert code == 2
    assert len(errors) == 1
    assert re.search(message, errors[0])
    assert trained_run.config.epochs == 2


def test_resume_missing_run(capsys, models_dir):
    code = main(["resume", "absent", "--epochs", "1"])

    errors = _error_lines(capsys.readouterr().err)
    assert code == 2
    expected = (
        f"error: no run 'absent' in {models_dir}: list runs with 'python -m lrml "
        "runs' or train one with 'python -m lrml train'"
    )
    assert errors == [expected]


def test_stop_queued_run(capsys, models_dir):
    create_run(SMALL_CONFIG, name="waiting", root=models_dir)

    assert main(["stop", "waiting"]) == 0

    assert capsys.readouterr().out == (
        "waiting: stopped (removed from the queue before it started)\n"
    )


def test_stop_rejects_unsafe_name(capsys, models_dir):
    assert main(["stop", "../outside"]) == 2

    expected = (
        "error: invalid run name '../outside': use 1 to 64 letters, digits, '.', "
        "'-' or '_', starting with a letter or digit"
    )
    assert _error_lines(capsys.readouterr().err) == [expected]
