"""Tests for lrml.runs: run folders, status, metrics, weights and listing."""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lrml.config import TrainConfig
from lrml.model import LRML
from lrml.runs import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    STATUS_FILE,
    WEIGHTS_FILE,
    Run,
    create_run,
    default_run_name,
    list_runs,
    models_dir,
    now_iso,
    open_run,
    process_identity,
    process_start_time,
    validate_run_name,
    write_atomic,
    write_json_atomic,
)
from lrml.vocab import Vocabulary

CONFIG = TrainConfig(embedding_dim=8, memory_size=4, epochs=2)


class MarkerPayload:
    """Unpickling this object creates ``path``: proof that a loader ran pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture
def run(tmp_path) -> Run:
    return create_run(CONFIG, name="run-1", root=tmp_path / "models")


def _model(config: TrainConfig = CONFIG, seed: int = 0) -> LRML:
    generator = torch.Generator().manual_seed(seed)
    return LRML(
        9,
        13,
        config.embedding_dim,
        config.memory_size,
        clip_radius=config.clip_radius,
        squared=config.distance == "squared_l2",
        generator=generator,
    )


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("name", ["run-1", "a", "ml-100k_d32.n20", "A" * 64, "0"])
def test_valid_run_names(name):
    assert validate_run_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "/abs",
        "",
        "a/b",
        "a\\b",
        ".hidden",
        "-flag",
        "x" * 65,
        "with space",
        "..",
    ],
)
def test_invalid_run_names(name):
    with pytest.raises(ValueError, match="invalid run name"):
        validate_run_name(name)


def test_run_name_must_be_string():
    with pytest.raises(ValueError, match="invalid run name None"):
        validate_run_name(None)


def test_models_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LRML_MODELS_DIR", str(tmp_path / "elsewhere"))

    assert models_dir() == tmp_path / "elsewhere"


def test_create_run_writes_config(run):
    assert json.loads((run.path / CONFIG_FILE).read_text()) == CONFIG.to_dict()
    assert run.config == CONFIG
    assert run.name == "run-1"


def test_create_run_status_file_queued(run):
    status = json.loads((run.path / STATUS_FILE).read_text())

    assert status["state"] == "queued"
    assert "created_at" in status


def test_create_run_status_queued(run):
    assert run.status()["state"] == "queued"


def test_create_run_same_name_twice(run):
    with pytest.raises(FileExistsError):
        create_run(CONFIG, name="run-1", root=run.path.parent)


def test_create_run_keeps_first_config(run):
    with pytest.raises(FileExistsError):
        create_run(CONFIG.replace(epochs=9), name="run-1", root=run.path.parent)

    assert run.config.epochs == CONFIG.epochs


@pytest.mark.parametrize("name", ["../escape", "/abs", "a/b"])
def test_create_run_rejects_unsafe_name(tmp_path, name):
    root = tmp_path / "models"

    with pytest.raises(ValueError, match="invalid run name"):
        create_run(CONFIG, name=name, root=root)

    assert list(tmp_path.iterdir()) == [root]
    assert list(root.iterdir()) == []


def test_create_run_default_name(tmp_path):
    first = create_run(CONFIG, root=tmp_path)
    second = create_run(CONFIG, root=tmp_path)

    assert first.name.startswith("ml-100k-d8-n4-")
    assert second.name != first.name


def test_create_run_uses_models_dir(models_dir):
    run = create_run(CONFIG, name="here")

    assert run.path == models_dir / "here"


def test_set_status_merges_fields(run):
    run.set_status("running", pid=os.getpid(), epoch=1)
    run.set_status("running", epoch=2)

    status = run.status()
    assert status["epoch"] == 2
    assert status["pid"] == os.getpid()
    assert "created_at" in status


def test_status_live_process_running(run):
    run.set_status("running", pid=os.getpid())

    assert run.status()["state"] == "running"


def test_status_queued_without_process(run):
    run.set_status("queued", pid=None)

    assert run.status()["state"] == "queued"


@pytest.mark.parametrize("state", ["starting", "running", "stopping"])
def test_status_dead_process_interrupted(run, state):
    run.set_status(state, pid=_dead_pid())

    status = run.status()

    assert status["state"] == "interrupted"
    assert status["message"].startswith("the training process ended")


def test_status_zombie_process_interrupted(run):
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        stat = Path(f"/proc/{process.pid}/stat")
        deadline = time.monotonic() + 30
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "child did not exit"
            time.sleep(0.05)
        run.set_status("running", pid=process.pid)

        assert run.status()["state"] == "interrupted"
    finally:
        process.wait()


def test_status_without_pid_interrupted(run):
    run.set_status("running", pid=None)

    assert run.status()["state"] == "interrupted"


@pytest.mark.parametrize("state", ["finished", "stopped", "failed"])
def test_status_final_state_kept(run, state):
    run.set_status(state, pid=_dead_pid())

    assert run.status()["state"] == state


def test_status_file_missing(run):
    (run.path / STATUS_FILE).unlink()

    assert run.status()["state"] == "unknown"


def test_status_file_left_unchanged(run):
    run.set_status("running", pid=_dead_pid())

    run.status()

    assert json.loads((run.path / STATUS_FILE).read_text())["state"] == "running"


def test_metrics_round_trip(run):
    run.append_metrics({"epoch": 1, "loss": 0.5})
    run.append_metrics({"epoch": 2, "loss": 0.4})

    assert run.metrics() == [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.4}]


def test_metrics_skip_torn_last_line(run):
    run.append_metrics({"epoch": 1, "loss": 0.5})
    run.append_metrics({"epoch": 2, "loss": 0.4})
    with open(run.path / METRICS_FILE, "a", encoding="utf-8") as handle:
        handle.write('{"epoch": 3, "lo')

    assert [record["epoch"] for record in run.metrics()] == [1, 2]


def test_metrics_missing_file(run):
    assert run.metrics() == []


def test_test_metrics_absent(run):
    assert run.test_metrics() is None


def test_test_metrics_present(run):
    write_json_atomic(run.path / "test_metrics.json", {"sampled_hr@10": 0.5})

    assert run.test_metrics() == {"sampled_hr@10": 0.5}


def test_stop_request(run):
    assert not run.stop_requested()

    run.request_stop()

    assert run.stop_requested()


def test_vocabularies_round_trip(run):
    users = Vocabulary([3, 1, 2], kind="user")
    items = Vocabulary([10, 20], kind="item")

    run.save_vocabularies(users, items)
    loaded_users, loaded_items = run.vocabularies()

    assert loaded_users == users
    assert loaded_items == items
    assert loaded_users.kind == "user"
    assert loaded_items.kind == "item"


def test_write_json_atomic_leaves_no_temp_files(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    write_json_atomic(tmp_path / "a.json", {"x": 2})

    assert [path.name for path in tmp_path.iterdir()] == ["a.json"]
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}


def test_weights_round_trip(run):
    model = _model()

    run.save_weights(model, metadata={"epoch": "2"})
    loaded = run.load_model()

    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert not loaded.training


def test_weights_round_trip_scores(run):
    model = _model()
    run.save_weights(model)

    loaded = run.load_model()

    users = torch.arange(9)
    assert torch.equal(loaded.score_all(users), model.score_all(users))


def test_load_model_uses_config_options(tmp_path):
    config = CONFIG.replace(distance="squared_l2", clip_radius=2.5)
    run = create_run(config, name="squared", root=tmp_path)
    run.save_weights(_model(config))

    loaded = run.load_model()

    assert loaded.squared
    assert loaded.clip_radius == 2.5


def test_save_weights_leaves_no_temp_files(run):
    run.save_weights(_model(seed=0))
    run.save_weights(_model(seed=1))

    names = sorted(path.name for path in run.path.iterdir())
    assert names == [CONFIG_FILE, STATUS_FILE, WEIGHTS_FILE]


def test_save_weights_replaces_previous(run):
    run.save_weights(_model(seed=0))
    second = _model(seed=1)
    run.save_weights(second)

    assert torch.equal(run.load_model().keys, second.keys)


def test_load_model_without_weights(run):
    with pytest.raises(FileNotFoundError, match="run 'run-1' has no weights yet"):
        run.load_model()


def test_load_model_config_mismatch(run):
    run.save_weights(_model(CONFIG.replace(embedding_dim=6)))

    with pytest.raises(ValueError, match="holds embedding_dim 6 and memory_size 4"):
        run.load_model()


def test_load_model_missing_tensor(run):
    tensors = {name: tensor for name, tensor in _model().state_dict().items()}
    del tensors["memories"]
    save_file(tensors, str(run.path / WEIGHTS_FILE))

    with pytest.raises(ValueError, match=r"lacks the tensor\(s\) memories"):
        run.load_model()


def test_pickle_payload_works(tmp_path):
    """Check the payload used below: unpickling it does create the marker."""
    marker = tmp_path / "marker"

    pickle.loads(pickle.dumps(MarkerPayload(marker)))

    assert marker.exists()


def test_pickle_weights_rejected_unexecuted(run, tmp_path):
    marker = tmp_path / "pickle-was-executed"
    (run.path / WEIGHTS_FILE).write_bytes(pickle.dumps(MarkerPayload(marker)))

    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        run.load_model()

    assert not marker.exists()


def test_torch_checkpoint_weights_rejected(run, tmp_path):
    marker = tmp_path / "pickle-was-executed"
    torch.save({"payload": MarkerPayload(marker)}, run.path / WEIGHTS_FILE)

    with pytest.raises(ValueError, match="delete the run and train it again"):
        run.load_model()

    assert not marker.exists()


def test_truncated_weights_rejected(run):
    run.save_weights(_model())
    path = run.path / WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[:100])

    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        run.load_model()


def test_open_run_by_name(run):
    assert open_run("run-1", root=run.path.parent) == run


def test_open_run_by_path(run):
    assert open_run(run.path) == run


def test_open_run_from_models_dir(models_dir):
    created = create_run(CONFIG, name="in-env")

    assert open_run("in-env") == created


def test_open_run_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run 'missing' in"):
        open_run("missing", root=tmp_path)


def test_open_run_rejects_escape(tmp_path):
    with pytest.raises(ValueError, match="invalid run name"):
        open_run("../elsewhere", root=tmp_path / "models")


def test_list_runs_newest_first(tmp_path):
    old = create_run(CONFIG, name="old", root=tmp_path)
    new = create_run(CONFIG, name="new", root=tmp_path)
    os.utime(old.path / CONFIG_FILE, (1_000_000, 1_000_000))
    os.utime(new.path / CONFIG_FILE, (2_000_000, 2_000_000))

    assert [run.name for run in list_runs(tmp_path)] == ["new", "old"]


def test_list_runs_skips_other_entries(tmp_path):
    create_run(CONFIG, name="real", root=tmp_path)
    (tmp_path / "empty-folder").mkdir()
    (tmp_path / "notes.txt").write_text("not a run")

    assert [run.name for run in list_runs(tmp_path)] == ["real"]


def test_list_runs_missing_root(tmp_path):
    assert list_runs(tmp_path / "absent") == []


def test_list_runs_default_root(models_dir):
    create_run(CONFIG, name="env-run")

    assert [run.name for run in list_runs()] == ["env-run"]


# Reading runs after a restart -------------------------------------------------


def _write_checkpoint_stub(run: Run, epoch: int) -> None:
    """Write a safetensors file carrying only the checkpoint's epoch metadata."""
    save_file(
        {"x": torch.zeros(1)},
        str(run.path / CHECKPOINT_FILE),
        metadata={"epoch": str(epoch)},
    )


def test_status_own_process_running(run):
    run.set_status("running", **process_identity(os.getpid()))

    assert run.status()["state"] == "running"


def test_status_reused_pid_interrupted(run):
    # The recorded process is gone and its id now belongs to a later process.
    start = process_start_time(os.getpid())
    run.set_status("running", pid=os.getpid(), pid_start=start - 1)

    assert run.status()["state"] == "interrupted"


def test_process_start_time_of_dead_process():
    assert process_start_time(_dead_pid()) is None


def test_process_start_time_stable():
    assert process_start_time(os.getpid()) == process_start_time(os.getpid())


def test_interrupted_message_names_checkpoint(run):
    _write_checkpoint_stub(run, epoch=4)
    run.set_status("running", pid=_dead_pid())

    message = run.status()["message"]

    assert "the checkpoint of epoch 4" in message
    assert "resume the run" in message


def test_interrupted_message_without_checkpoint(run):
    run.set_status("stopping", pid=_dead_pid())

    assert run.status()["message"] == (
        "the training process ended before its first epoch was saved; "
        "start the run again"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "status.json is unreadable"),
        (b'{"state": "runn', "status.json is unreadable"),
        (b"\xff\xfe\x00garbage", "status.json is unreadable"),
        (b'["running"]', "status.json does not contain a state"),
        (b'{"pid": 12}', "status.json does not contain a state"),
    ],
    ids=["empty", "torn", "binary", "list", "no-state"],
)
def test_status_file_damaged(run, content, message):
    (run.path / STATUS_FILE).write_bytes(content)

    status = run.status()

    assert status["state"] == "unknown"
    assert status["message"].startswith(message)


def test_set_status_replaces_torn_file(run):
    (run.path / STATUS_FILE).write_text('{"state": "runn')

    run.set_status("failed", message="boom")

    assert run.status() == {
        "state": "failed",
        "message": "boom",
        "updated_at": run.status()["updated_at"],
    }


def test_remove_temp_files(run):
    leftovers = [".weights.safetensors.abcd1234", ".status.json.x_9z0k1q"]
    for name in leftovers:
        (run.path / name).write_bytes(b"half")
    (run.path / "notes.txt").write_text("mine")

    removed = run.remove_temp_files()

    assert sorted(path.name for path in removed) == sorted(leftovers)
    assert sorted(path.name for path in run.path.iterdir()) == [
        CONFIG_FILE,
        "notes.txt",
        STATUS_FILE,
    ]


def test_write_atomic_failure_keeps_old_file(tmp_path):
    path = tmp_path / "a.json"
    write_json_atomic(path, {"x": 1})

    def fill_disk(tmp):
        tmp.write_text('{"x": ')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, fill_disk)

    assert json.loads(path.read_text()) == {"x": 1}
    assert [entry.name for entry in tmp_path.iterdir()] == ["a.json"]


def test_now_iso_microseconds():
    assert len(now_iso("microseconds")) == len("2024-01-01T00:00:00.000000+00:00")


def test_default_run_name_path_dataset(tmp_path):
    config = TrainConfig(dataset="/elsewhere/My Ratings.csv")

    name = default_run_name(config, tmp_path)

    assert name.startswith("My_Ratings-d")
    assert validate_run_name(name) == name
