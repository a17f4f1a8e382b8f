"""AppTest tests of the Train page: run states, the new-run form and the run actions.

A tiny run trains once per module on MovieLens-100K (one epoch) and is copied
into each test's models folder. `jobs.max_concurrent_runs` returns 0, so that a
submitted run stays queued and no training process starts, except in the test
that follows a real training process to its failure.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lrml import jobs
from lrml.config import TrainConfig
from lrml.runs import (
    CONFIG_FILE,
    FINAL_STATES,
    LIVE_STATES,
    LOG_FILE,
    STOP_FILE,
    Run,
    create_run,
    list_runs,
)

pytestmark = pytest.mark.slow

APP = Path(__file__).resolve().parent.parent / "app.py"
TRAIN_PAGE = "pages/train.py"
TIMEOUT_S = 60
PROCESS_TIMEOUT_S = 60.0
TINY_RUN = "tiny"
TINY_CONFIG = TrainConfig(epochs=1, embedding_dim=8, memory_size=4)
# The module whose queue calls max_concurrent_runs, which jobs re-exports.
SCHEDULER = importlib.import_module(jobs.max_concurrent_runs.__module__)


@pytest.fixture(scope="module")
def tiny_run_folder(tmp_path_factory) -> Path:
    """Train one epoch on MovieLens-100K into a folder that tests copy from."""
    root = tmp_path_factory.mktemp("train-page-runs")
    jobs.train_in_foreground(create_run(TINY_CONFIG, name=TINY_RUN, root=root))
    return root / TINY_RUN


@pytest.fixture
def add_tiny_run(tiny_run_folder, models_dir):
    """Return a function that copies the finished tiny run into the models folder."""

    def add(name: str = TINY_RUN) -> Run:
        models_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(tiny_run_folder, models_dir / name)
        # copytree keeps modification times, and list_runs orders by them.
        (models_dir / name / CONFIG_FILE).touch()
        return Run(models_dir / name)

    return add


def set_training_slots(monkeypatch, count: int) -> None:
    """Make `jobs.max_concurrent_runs` return ``count``, also where the queue reads it."""
    for module in {jobs, SCHEDULER}:
        monkeypatch.setattr(module, "max_concurrent_runs", lambda: count)


def kill_training_processes(models_dir: Path) -> list[str]:
    """Kill the training processes of the runs in ``models_dir`` and return the runs."""
    killed = []
    for run in list_runs(models_dir):
        status = run.status()
        pid = status.get("pid")
        if status["state"] in LIVE_STATES and pid != os.getpid():
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            killed.append(run.name)
    return killed


@pytest.fixture(autouse=True)
def no_training_slots(monkeypatch, models_dir):
    """Leave no training slot free, so that submitted runs stay in the queue.

    A training process that still runs at teardown is killed and fails the test.
    """
    set_training_slots(monkeypatch, 0)
    yield
    assert kill_training_processes(models_dir) == []


@pytest.fixture
def no_default_run(monkeypatch) -> None:
    """Keep app.py from queueing the default run into the empty models folder."""
    monkeypatch.setattr(jobs, "ensure_default_run", lambda root=None: None)


def open_train_page(**query: str) -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    for key, value in query.items():
        app.query_params[key] = value
    app.run()
    app.switch_page(TRAIN_PAGE).run()
    return app


def texts(elements) -> list[str]:
    return [element.value for element in elements]


def find_table(app: AppTest, column: str):
    for table in app.dataframe:
        if column in table.value.columns:
            return table.value
    raise AssertionError(f"no dataframe with a {column!r} column on the page")


def chart_specs(app: AppTest) -> dict[str, dict]:
    """Return the plotly figures on the page by their element key."""
    specs = {}
    for chart in app.get("plotly_chart"):
        key = chart.proto.id.rsplit("-", 1)[-1]
        specs[key] = json.loads(chart.proto.spec)
    return specs


def compare_widget(app: AppTest):
    """Return the multiselect of runs to compare, whose key contains its default."""
    [widget] = [w for w in app.multiselect if w.key.startswith("train_compare_")]
    return widget


def button_keys(app: AppTest) -> set[str]:
    return {button.key for button in app.button}


def dead_pid() -> int:
    """Return the id of a process that has exited and been reaped."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_page_without_runs(no_default_run):
    app = open_train_page()

    assert not app.exception, app.exception
    assert texts(app.error) == []
    assert any("No runs yet" in text for text in texts(app.info))
    assert app.get("plotly_chart") == []
    assert "train_submit" in button_keys(app)


def test_empty_models_dir_queues_default_run():
    app = open_train_page()

    assert not app.exception, app.exception
    assert [run.name for run in list_runs()] == [jobs.DEFAULT_RUN_NAME]
    assert any("queued at position 1 of 1" in text for text in texts(app.info))


def test_finished_run_shows_curves_and_table(add_tiny_run):
    add_tiny_run()

    app = open_train_page()

    assert not app.exception, app.exception
    assert texts(app.error) == []
    specs = chart_specs(app)
    assert sorted(specs) == [
        "train_curve_loss",
        "train_curve_val_hr@10",
        "train_curve_val_ndcg@10",
    ]
    assert [trace["name"] for trace in specs["train_curve_loss"]["data"]] == [TINY_RUN]
    table = find_table(app, "best val HR@10")
    row = table.set_index("name").loc[TINY_RUN]
    assert row["state"] == "finished"
    assert row["epochs"] == "1 / 1"
    assert row["embedding_dim"] == 8
    assert row["memory_size"] == 4
    assert 0.0 < row["best val HR@10"] <= 1.0
    assert 0.0 < row["test sampled HR@10"] <= 1.0
    assert row["duration"] is not None
    assert {"train_resume", "train_delete", "train_copy_settings"} <= button_keys(app)
    assert "train_stop" not in button_keys(app)


def test_compare_includes_training_run(add_tiny_run):
    add_tiny_run()
    live = add_tiny_run("live")
    # This process is alive, so the run reads as training.
    live.set_status("running", pid=os.getpid(), epoch=1, message="epoch 1 of 1")

    app = open_train_page(run=TINY_RUN)

    assert not app.exception, app.exception
    assert compare_widget(app).value == [TINY_RUN, "live"]
    loss = chart_specs(app)["train_curve_loss"]
    assert [trace["name"] for trace in loss["data"]] == [TINY_RUN, "live"]


def test_compare_keeps_user_choice(add_tiny_run):
    add_tiny_run()
    add_tiny_run("other")
    app = open_train_page(run=TINY_RUN)

    compare_widget(app).select("other").run()

    assert not app.exception, app.exception
    assert compare_widget(app).value == [TINY_RUN, "other"]
    loss = chart_specs(app)["train_curve_loss"]
    assert [trace["name"] for trace in loss["data"]] == [TINY_RUN, "other"]


def test_failed_run_shows_message_and_log(add_tiny_run):
    run = add_tiny_run("diverged")
    message = (
        "loss became nan in epoch 2; lower the learning rate (now 0.5) and start again"
    )
    run.set_status("failed", message=message)
    log_lines = [f"log line {number}" for number in range(1, 51)]
    (run.path / LOG_FILE).write_text("\n".join(log_lines) + "\n")

    app = open_train_page(run="diverged")

    assert not app.exception, app.exception
    errors = texts(app.error)
    assert len(errors) == 1
    assert "failed: loss became nan in epoch 2" in errors[0]
    assert "lower the learning rate" in errors[0]
    log = app.expander[0]
    assert log.label == f"Last 30 lines of {LOG_FILE}"
    assert texts(log.code)[0].splitlines() == log_lines[-30:]


def test_failed_process_shows_its_traceback(monkeypatch, models_dir):
    set_training_slots(monkeypatch, 1)
    config = TINY_CONFIG.replace(dataset="no-such-dataset")
    run = jobs.submit(create_run(config, name="broken"))
    try:
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while run.status()["state"] not in FINAL_STATES:
            assert time.monotonic() < deadline, run.status()
            time.sleep(0.2)
    finally:
        kill_training_processes(models_dir)

    app = open_train_page(run="broken")

    assert not app.exception, app.exception
    errors = texts(app.error)
    assert len(errors) == 1
    assert "Run **broken** failed" in errors[0]
    assert "no-such-dataset" in errors[0]
    log = texts(app.expander[0].code)[0]
    assert "Traceback" in log
    assert "no-such-dataset" in log


def test_interrupted_run_offers_resume(add_tiny_run):
    run = add_tiny_run()
    run.set_status("running", pid=dead_pid(), epoch=1)

    app = open_train_page()

    assert not app.exception, app.exception
    warnings = texts(app.warning)
    assert len(warnings) == 1
    assert "interrupted" in warnings[0]
    assert "can be resumed from epoch 1" in warnings[0]
    assert not app.button(key="train_resume").disabled


def test_queued_runs_show_positions(add_tiny_run):
    add_tiny_run()
    first = jobs.submit(create_run(TINY_CONFIG, name="first"))
    jobs.submit(create_run(TINY_CONFIG, name="second"))

    app = open_train_page(run="second")

    assert not app.exception, app.exception
    assert any("queued at position 2 of 2" in text for text in texts(app.info))
    queue = find_table(app, "position")
    assert queue["name"].tolist() == ["first", "second"]
    assert queue["position"].tolist() == [1, 2]
    assert "train_stop" in button_keys(app)
    assert "train_resume" not in button_keys(app)
    assert "train_delete" not in button_keys(app)
    assert first.status()["state"] == "queued"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("embedding_dim", 1, "embedding_dim must be in [2, 1024]; got 1"),
        ("learning_rate", 5.0, "learning_rate must be in [1e-06, 1.0]; got 5.0"),
        ("margin", -0.5, "margin must be in [0.0, 10.0]; got -0.5"),
        ("batch_size", 0, "batch_size must be in [1, 1000000]; got 0"),
    ],
)
def test_form_rejects_invalid_value(no_default_run, field, value, message):
    app = open_train_page()

    app.number_input(key=f"train_config_{field}").set_value(value)
    app.button(key="train_submit").click().run()

    assert not app.exception, app.exception
    errors = texts(app.error)
    assert len(errors) == 1
    assert message in errors[0]
    assert list_runs() == []


def test_form_rejects_invalid_run_name(no_default_run, models_dir):
    app = open_train_page()

    app.text_input(key="train_run_name").input("../outside")
    app.button(key="train_submit").click().run()

    errors = texts(app.error)
    assert len(errors) == 1
    assert "invalid run name '../outside'" in errors[0]
    assert list_runs() == []
    assert not (models_dir.parent / "outside").exists()


def test_form_queues_and_selects_run(add_tiny_run):
    add_tiny_run()
    app = open_train_page()

    app.text_input(key="train_run_name").input("from-form")
    app.number_input(key="train_config_embedding_dim").set_value(16)
    app.number_input(key="train_config_epochs").set_value(2)
    app.button(key="train_submit").click().run()

    assert not app.exception, app.exception
    assert texts(app.error) == []
    run = Run(list_runs()[0].path)
    assert run.name == "from-form"
    assert run.status()["state"] == "queued"
    assert [queued.name for queued in jobs.queued_runs()] == ["from-form"]
    assert run.config.embedding_dim == 16
    assert run.config.epochs == 2
    assert app.query_params["run"] == "from-form"
    assert app.header[0].value == "Run from-form"
    assert any("Queued run from-form" in text for text in texts(app.success))


def test_stop_removes_queued_run(add_tiny_run):
    add_tiny_run()
    run = jobs.submit(create_run(TINY_CONFIG, name="waiting"))
    app = open_train_page(run="waiting")

    app.button(key="train_stop").click().run()

    assert not app.exception, app.exception
    status = run.status()
    assert status["state"] == "stopped"
    assert "removed from the queue" in status["message"]
    assert "train_stop" not in button_keys(app)


def test_stop_requests_training_run_to_stop(add_tiny_run):
    run = add_tiny_run()
    run.set_status("running", pid=os.getpid(), epoch=1)
    app = open_train_page()

    app.button(key="train_stop").click().run()

    assert not app.exception, app.exception
    assert run.status()["state"] == "stopping"
    assert (run.path / STOP_FILE).exists()
    assert app.button(key="train_stop").disabled


def test_resume_requeues_with_more_epochs(add_tiny_run):
    run = add_tiny_run()
    app = open_train_page()

    app.number_input(key="train_resume_epochs").set_value(3)
    app.button(key="train_resume").click().run()

    assert not app.exception, app.exception
    assert texts(app.error) == []
    assert run.status()["state"] == "queued"
    assert [queued.name for queued in jobs.queued_runs()] == [TINY_RUN]
    assert run.config.epochs == 4
    assert "train_stop" in button_keys(app)


def test_resume_rejects_zero_epochs(add_tiny_run):
    run = add_tiny_run()
    app = open_train_page()

    app.number_input(key="train_resume_epochs").set_value(0)
    app.button(key="train_resume").click().run()

    errors = texts(app.error)
    assert len(errors) == 1
    assert "extra_epochs must be an integer from 1 to 9999" in errors[0]
    assert "got 0" in errors[0]
    assert run.status()["state"] == "finished"
    assert run.config.epochs == 1


def test_delete_needs_confirmation(add_tiny_run):
    add_tiny_run()
    doomed = add_tiny_run("doomed")
    app = open_train_page(run="doomed")

    assert app.button(key="train_delete").disabled

    app.checkbox(key="train_delete_confirm_doomed").check().run()
    assert doomed.path.exists()
    app.button(key="train_delete").click().run()

    assert not app.exception, app.exception
    assert texts(app.error) == []
    assert not doomed.path.exists()
    assert app.query_params["run"] == TINY_RUN
    assert app.header[0].value == f"Run {TINY_RUN}"


def test_copy_settings_fills_form(add_tiny_run):
    add_tiny_run()
    app = open_train_page()

    app.button(key="train_copy_settings").click().run()

    assert not app.exception, app.exception
    assert app.number_input(key="train_config_embedding_dim").value == 8
    assert app.number_input(key="train_config_memory_size").value == 4
    assert app.number_input(key="train_config_epochs").value == 1
    assert app.number_input(key="train_config_learning_rate").value == 1e-3


def test_unsubmitted_run_can_be_queued(add_tiny_run):
    add_tiny_run()
    # create_run leaves a run "queued" but outside the queue until it is submitted.
    run = create_run(TINY_CONFIG, name="created")
    app = open_train_page(run="created")
    assert any("not submitted" in text for text in texts(app.info))

    app.button(key="train_queue").click().run()

    assert not app.exception, app.exception
    assert [queued.name for queued in jobs.queued_runs()] == ["created"]
    assert run.status()["state"] == "queued"
    assert any("queued at position 1 of 1" in text for text in texts(app.info))
