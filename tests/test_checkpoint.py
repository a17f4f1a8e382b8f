"""Tests for lrml.checkpoint: a restored trainer continues exactly where it stopped."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lrml.checkpoint import FORMAT_VERSION, restore_checkpoint, save_checkpoint
from lrml.training import Trainer, fit


def _train(config, split, epochs, checkpoint_path=None):
    """Fit up to ``epochs``; return per-epoch snapshots and save a checkpoint then.

    Each snapshot contains the epoch's loss, validation metrics and a copy of the
    model's weights right after the epoch, before `fit` swaps in the best epoch.
    """
    trainer = Trainer(config, split)
    snapshots = {}

    def on_epoch(result, trainer):
        snapshots[result.epoch] = (
            result.loss,
            result.validation,
            copy.deepcopy(trainer.model.state_dict()),
        )
        if checkpoint_path is not None and result.epoch == epochs:
            save_checkpoint(checkpoint_path, trainer, last_record=result.to_record())

    fit(config.replace(epochs=epochs), split, trainer=trainer, on_epoch=on_epoch)
    return trainer, snapshots


def _resume(config, split, path, epochs):
    trainer = Trainer(config, split)
    restore_checkpoint(path, trainer)
    snapshots = {}

    def on_epoch(result, trainer):
        snapshots[result.epoch] = (
            result.loss,
            result.validation,
            copy.deepcopy(trainer.model.state_dict()),
        )

    fit(config.replace(epochs=epochs), split, trainer=trainer, on_epoch=on_epoch)
    return trainer, snapshots


def _optimizer_tensors(optimizer):
    return {
        (index, key): value
        for index, state in optimizer.state_dict()["state"].items()
        for key, value in state.items()
    }


@pytest.fixture
def checkpoint(tmp_path, small_config, split):
    """A checkpoint written after epoch 2, and the trainer that wrote it."""
    path = tmp_path / "checkpoint.safetensors"
    trainer, _ = _train(small_config, split, epochs=2, checkpoint_path=path)
    return path, trainer


@pytest.mark.parametrize("optimizer", ["adam", "adagrad", "sgd"])
def test_resume_equals_uninterrupted_run(tmp_path, small_config, split, optimizer):
    config = small_config.replace(optimizer=optimizer, learning_rate=0.05)
    path = tmp_path / "checkpoint.safetensors"
    _, straight = _train(config, split, epochs=4)
    _train(config, split, epochs=2, checkpoint_path=path)

    _, resumed = _resume(config, split, path, epochs=4)

    assert sorted(resumed) == [3, 4]
    for epoch in (3, 4):
        loss, validation, weights = resumed[epoch]
        assert loss == straight[epoch][0]
        assert validation == straight[epoch][1]
        for name, value in weights.items():
            assert torch.equal(value, straight[epoch][2][name]), (epoch, name)


def test_restore_sets_epoch_and_selection(checkpoint, small_config, split):
    path, original = checkpoint
    trainer = Trainer(small_config, split)

    restore_checkpoint(path, trainer)

    assert trainer.epoch == 2
    assert trainer.resumed_at == 2
    assert trainer.best_epoch == original.best_epoch
    assert trainer.best_score == original.best_score
    assert trainer.best_validation == original.best_validation
    assert trainer.last_record["epoch"] == 2


def test_restore_loads_best_weights(checkpoint, small_config, split):
    path, original = checkpoint
    trainer = Trainer(small_config, split)

    restore_checkpoint(path, trainer)

    assert trainer.best_state.keys() == original.best_state.keys()
    for name, value in original.best_state.items():
        assert torch.equal(trainer.best_state[name], value)


def test_restore_loads_optimizer_state(checkpoint, small_config, split):
    path, original = checkpoint
    trainer = Trainer(small_config, split)

    restore_checkpoint(path, trainer)

    restored = _optimizer_tensors(trainer.optimizer)
    expected = _optimizer_tensors(original.optimizer)
    assert restored.keys() == expected.keys()
    assert {key for _, key in expected} == {"step", "exp_avg", "exp_avg_sq"}
    for key, value in expected.items():
        assert torch.equal(restored[key], value), key


def test_restore_loads_numpy_generator(checkpoint, small_config, split):
    path, original = checkpoint
    trainer = Trainer(small_config, split)

    restore_checkpoint(path, trainer)

    assert trainer.rng.bit_generator.state == original.rng.bit_generator.state
    assert np.array_equal(
        trainer.rng.integers(0, 1000, 5), original.rng.integers(0, 1000, 5)
    )


def test_checkpoint_metadata_is_plain_json(checkpoint):
    path, _ = checkpoint

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()

    assert metadata["format"] == FORMAT_VERSION
    assert metadata["epoch"] == "2"
    assert json.loads(metadata["last_record"])["epoch"] == 2
    assert json.loads(metadata["numpy_rng"])["bit_generator"] == "PCG64"


def test_restore_rejects_garbage(tmp_path, small_config, split):
    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes(b"not a safetensors file at all")

    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        restore_checkpoint(path, Trainer(small_config, split))


def test_restore_rejects_truncated_file(checkpoint, small_config, split):
    path, _ = checkpoint
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        restore_checkpoint(path, Trainer(small_config, split))


def test_restore_rejects_missing_file(tmp_path, small_config, split):
    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        restore_checkpoint(
            tmp_path / "absent.safetensors", Trainer(small_config, split)
        )


def test_restore_rejects_other_format(checkpoint, small_config, split):
    path, _ = checkpoint
    with safe_open(str(path), framework="pt") as handle:
        metadata = {**handle.metadata(), "format": "99"}
    save_file(load_file(str(path)), str(path), metadata=metadata)

    with pytest.raises(ValueError, match="checkpoint format '99'"):
        restore_checkpoint(path, Trainer(small_config, split))


def test_restore_rejects_missing_metadata(checkpoint, small_config, split):
    path, _ = checkpoint
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    del metadata["numpy_rng"]
    save_file(load_file(str(path)), str(path), metadata=metadata)

    with pytest.raises(ValueError, match="invalid metadata.*numpy_rng"):
        restore_checkpoint(path, Trainer(small_config, split))


def test_restore_rejects_other_config(checkpoint, small_config, split):
    path, _ = checkpoint
    other = small_config.replace(embedding_dim=small_config.embedding_dim * 2)

    with pytest.raises(ValueError, match="does not match the run's config"):
        restore_checkpoint(path, Trainer(other, split))


def test_restore_rejects_other_optimizer(checkpoint, small_config, split):
    path, _ = checkpoint

    with pytest.raises(ValueError, match="does not match the run's config"):
        restore_checkpoint(path, Trainer(small_config.replace(optimizer="sgd"), split))
