"""Tests for lrml.training: hinge loss, the Trainer, fit, refit and choose_device."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

import lrml.training
from lrml.baselines import CML, make_cml
from lrml.training import (
    EpochResult,
    Trainer,
    TrainingDiverged,
    TrainingStopped,
    choose_device,
    fit,
    hinge_loss,
    refit,
    with_validation_in_train,
)

# Two positives with two negatives each and margin 0.5. The hinge terms are
# relu(0.5 + 1.0 - [1.2, 3.0]) = [0.3, 0.0] and
# relu(0.5 + 2.0 - [2.1, 1.5]) = [0.4, 1.0].
POSITIVE = torch.tensor([1.0, 2.0])
NEGATIVE = torch.tensor([[1.2, 3.0], [2.1, 1.5]])


@pytest.mark.parametrize(
    ("reduction", "expected"),
    [
        ("sum", (0.3 + 1.4) / 2),
        ("mean", (0.15 + 0.7) / 2),
        ("hardest", (0.3 + 1.0) / 2),
    ],
)
def test_hinge_loss_hand_values(reduction, expected):
    loss = hinge_loss(POSITIVE, NEGATIVE, margin=0.5, reduction=reduction)

    assert loss.item() == pytest.approx(expected)


def test_hinge_loss_zero_beyond_margin():
    loss = hinge_loss(torch.tensor([0.1]), torch.tensor([[0.7, 2.0]]), 0.5, "sum")

    assert loss.item() == 0.0


def test_hinge_loss_zero_margin():
    loss = hinge_loss(torch.tensor([1.0]), torch.tensor([[0.5, 1.5]]), 0.0, "sum")

    assert loss.item() == pytest.approx(0.5)


def test_hinge_loss_rejects_reduction():
    with pytest.raises(
        ValueError, match="reduction must be sum, mean or hardest; got 'max'"
    ):
        hinge_loss(POSITIVE, NEGATIVE, 0.5, "max")


def test_hinge_loss_gradient_direction():
    positive = POSITIVE.clone().requires_grad_()
    negative = NEGATIVE.clone().requires_grad_()

    hinge_loss(positive, negative, 0.5, "sum").backward()

    assert (positive.grad > 0).all()
    assert (negative.grad <= 0).all()
    assert negative.grad[0, 1].item() == 0.0


def _batch(trainer: Trainer, size: int = 16):
    users = trainer.split.train_users[:size].copy()
    positives = trainer.split.train_items[:size].copy()
    negatives = trainer.sampler.sample(users, 3, np.random.default_rng(0))
    return (
        torch.from_numpy(users),
        torch.from_numpy(positives),
        torch.from_numpy(negatives),
    )


@pytest.mark.parametrize("negative_relation", ["own", "shared"])
def test_batch_loss_matches_formula(small_config, split, negative_relation):
    config = small_config.replace(negative_relation=negative_relation, margin=0.7)
    trainer = Trainer(config, split)
    model = trainer.model
    users, positives, negatives = _batch(trainer)

    loss = trainer._batch_loss(users, positives, negatives)

    with torch.no_grad():
        d_pos = model(users, positives)  # (b,)
        if negative_relation == "own":
            d_neg = model(users, negatives)  # (b, k)
        else:
            p = model.users(users).unsqueeze(1)
            r = model.relation(model.users(users), model.items(positives)).unsqueeze(1)
            d_neg = model.distance(p, r, model.items(negatives))
        expected = torch.relu(0.7 + d_pos[:, None] - d_neg).max(dim=1).values.mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_batch_loss_l2_weight(small_config, split):
    plain = Trainer(small_config, split)
    weighted = Trainer(small_config.replace(l2_weight=0.5), split)
    batch = _batch(plain)

    difference = weighted._batch_loss(*batch) - plain._batch_loss(*batch)

    users, positives, negatives = batch
    with torch.no_grad():
        squares = (
            plain.model.users(users).pow(2).sum(-1)
            + plain.model.items(positives).pow(2).sum(-1)
            + plain.model.items(negatives).pow(2).sum((1, 2))
        )
    assert difference.item() == pytest.approx(0.5 * squares.mean().item(), rel=1e-4)


@pytest.mark.parametrize(
    "changes",
    [
        {"optimizer": "adagrad"},
        {"optimizer": "sgd", "learning_rate": 0.1},
        {"negative_reduction": "sum"},
        {"negative_reduction": "mean"},
        {"negative_relation": "shared"},
        {"distance": "squared_l2"},
        {"l2_weight": 0.01},
    ],
    ids=lambda changes: "-".join(f"{k}={v}" for k, v in changes.items()),
)
def test_fit_runs_each_option(small_config, split, changes):
    result = fit(small_config.replace(epochs=2, **changes), split)

    assert len(result.history) == 2
    assert all(math.isfinite(epoch.loss) for epoch in result.history)


def test_training_loss_decreases(small_config, split):
    # The synthetic split has only a few batches per epoch, so at the default
    # learning rate the loss is mostly sampling noise; 0.01 makes the trend clear.
    result = fit(small_config.replace(epochs=8, learning_rate=0.01), split)

    assert result.history[-1].loss < result.history[0].loss


def test_epoch_counter_advances(small_config, split):
    trainer = Trainer(small_config, split)

    trainer.train_epoch()
    trainer.train_epoch()

    assert trainer.epoch == 2


def test_fit_history_records(small_config, split):
    result = fit(small_config, split)

    assert [epoch.epoch for epoch in result.history] == [1, 2, 3]
    assert result.history[0].improved
    assert set(result.history[0].validation) == {"hr@10", "ndcg@10"}
    assert all(epoch.seconds >= 0 for epoch in result.history)
    assert not result.stopped_early


def test_epoch_record_prefixes_validation():
    result = EpochResult(
        epoch=2, loss=0.5, seconds=1.5, validation={"hr@10": 0.25}, improved=True
    )

    assert result.to_record() == {
        "epoch": 2,
        "loss": 0.5,
        "seconds": 1.5,
        "improved": True,
        "val_hr@10": 0.25,
    }


def test_fit_calls_on_epoch(small_config, split):
    seen = []

    fit(small_config, split, on_epoch=lambda result, trainer: seen.append(result.epoch))

    assert seen == [1, 2, 3]


@pytest.fixture
def stalled_config(small_config):
    """A config whose validation HR@10 stays flat: SGD steps of 1e-6 change no rank.

    Refit is off, so that ``fit`` returns the best epoch's weights.
    """
    return small_config.replace(
        epochs=10, optimizer="sgd", learning_rate=1e-6, patience=2, refit="off"
    )


def test_early_stopping_after_patience(stalled_config, split):
    result = fit(stalled_config, split)

    assert result.stopped_early
    assert len(result.history) == 3
    assert result.best_epoch == 1


def test_improvement_must_be_strict(stalled_config, split):
    result = fit(stalled_config, split)

    scores = [epoch.validation["hr@10"] for epoch in result.history]
    assert len(set(scores)) == 1
    assert [epoch.improved for epoch in result.history] == [True, False, False]


def test_patience_zero_runs_all_epochs(stalled_config, split):
    result = fit(stalled_config.replace(epochs=4, patience=0), split)

    assert len(result.history) == 4
    assert not result.stopped_early


def test_best_epoch_weights_kept(stalled_config, split):
    snapshots = {}

    def snapshot(result, trainer):
        snapshots[result.epoch] = trainer.model.user_embeddings.detach().clone()

    result = fit(stalled_config, split, on_epoch=snapshot)

    assert torch.equal(result.model.user_embeddings, snapshots[1])
    assert not torch.equal(result.model.user_embeddings, snapshots[3])


def test_best_validation_reported(stalled_config, split):
    result = fit(stalled_config, split)

    assert result.best_validation == result.history[0].validation


def test_stop_before_first_batch(small_config, split):
    with pytest.raises(TrainingStopped):
        fit(small_config, split, should_stop=lambda: True)


def test_stop_during_second_epoch(small_config, split):
    batches_per_epoch = math.ceil(len(split.train_users) / small_config.batch_size)
    calls, finished = [], []

    def should_stop():
        calls.append(1)
        return len(calls) > batches_per_epoch + 1

    with pytest.raises(TrainingStopped):
        fit(
            small_config,
            split,
            should_stop=should_stop,
            on_epoch=lambda result, trainer: finished.append(result.epoch),
        )

    assert finished == [1]
    assert len(calls) == batches_per_epoch + 2


def test_nan_weights_raise_diverged(small_config, split):
    trainer = Trainer(small_config, split)
    with torch.no_grad():
        trainer.model.user_embeddings.fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match=r"loss became nan in epoch 1;"):
        fit(small_config, split, trainer=trainer)


def test_diverged_message_names_learning_rate(small_config, split):
    config = small_config.replace(learning_rate=0.02)
    trainer = Trainer(config, split)
    with torch.no_grad():
        trainer.model.memories.fill_(float("nan"))

    with pytest.raises(
        TrainingDiverged, match=r"lower the learning rate \(now 0\.02\)"
    ):
        fit(config, split, trainer=trainer)


def test_diverged_in_later_epoch(small_config, split):
    trainer = Trainer(small_config, split)

    def poison(result, trainer):
        with torch.no_grad():
            trainer.model.keys.fill_(float("inf"))

    with pytest.raises(TrainingDiverged, match=r"in epoch 2;"):
        fit(small_config, split, trainer=trainer, on_epoch=poison)


def test_same_seed_same_weights(small_config, split):
    first = fit(small_config, split)
    np.random.seed(123)
    np.random.random(1000)
    torch.manual_seed(321)
    torch.rand(1000)
    second = fit(small_config, split)

    for name, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, second.model.state_dict()[name]), name


def test_same_seed_same_metrics(small_config, split):
    first = fit(small_config, split)
    np.random.random(1000)
    torch.rand(1000)
    second = fit(small_config, split)

    assert [epoch.loss for epoch in first.history] == [
        epoch.loss for epoch in second.history
    ]
    assert [epoch.validation for epoch in first.history] == [
        epoch.validation for epoch in second.history
    ]


def test_different_seed_different_weights(small_config, split):
    first = fit(small_config, split)
    second = fit(small_config.replace(seed=8), split)

    assert not torch.equal(first.model.user_embeddings, second.model.user_embeddings)


def test_validation_candidates_fixed(small_config, split):
    first = Trainer(small_config, split)
    second = Trainer(small_config.replace(seed=99), split)

    assert np.array_equal(first.validation_candidates, second.validation_candidates)


def test_choose_device_default_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    assert choose_device() == torch.device("cpu")
    assert choose_device("auto") == torch.device("cpu")


def test_choose_device_default_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    assert choose_device(None) == torch.device("cuda")


def test_choose_device_explicit_cpu():
    assert choose_device("cpu") == torch.device("cpu")


def test_choose_device_cuda_missing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    with pytest.raises(
        ValueError, match="device 'cuda:0' requested but CUDA is not available"
    ):
        choose_device("cuda:0")


def test_choose_device_rejects_unknown_name():
    with pytest.raises(ValueError, match="'tpu'"):
        choose_device("tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_on_cuda_device(small_config, split):
    result = fit(small_config, split, device=torch.device("cuda"))

    assert result.model.keys.device.type == "cuda"
    assert len(result.history) == small_config.epochs


def test_epoch_negatives_never_training_positives(small_config, split, monkeypatch):
    trainer = Trainer(small_config.replace(num_negatives=5), split)
    seen = []
    original = trainer._batch_loss

    def record(users, positives, negatives):
        seen.append((users.clone(), positives.clone(), negatives.clone()))
        return original(users, positives, negatives)

    monkeypatch.setattr(trainer, "_batch_loss", record)
    trainer.train_epoch()

    users = torch.cat([batch[0] for batch in seen]).numpy()
    positives = torch.cat([batch[1] for batch in seen]).numpy()
    negatives = torch.cat([batch[2] for batch in seen]).numpy()
    known = split.train_matrix().toarray() > 0
    assert not known[users[:, None], negatives].any()
    assert len(users) == len(split.train_users)
    pairs = sorted(zip(users.tolist(), positives.tolist()))
    assert pairs == sorted(zip(split.train_users.tolist(), split.train_items.tolist()))


def test_epoch_blocks_cover_every_pair(small_config, split, monkeypatch):
    monkeypatch.setattr(lrml.training, "EPOCH_BLOCK_ROWS", 50)
    trainer = Trainer(small_config, split)
    positives = []
    original = trainer._batch_loss

    def record(users, batch_positives, negatives):
        positives.append(batch_positives.clone())
        return original(users, batch_positives, negatives)

    monkeypatch.setattr(trainer, "_batch_loss", record)
    trainer.train_epoch()

    assert len(split.train_users) > 50
    assert all(len(batch) <= 50 for batch in positives)
    assert sorted(torch.cat(positives).tolist()) == sorted(split.train_items.tolist())


def test_trainer_uses_model_factory(small_config, split):
    trainer = Trainer(small_config, split, model_factory=make_cml)

    assert isinstance(trainer.model, CML)


def test_with_validation_in_train_adds_pairs(split):
    merged = with_validation_in_train(split)

    added = len(split.validation_users)
    assert len(merged.train_users) == len(split.train_users) + added
    assert np.array_equal(merged.train_users[-added:], split.validation_users)
    assert np.array_equal(merged.train_items[-added:], split.validation_items)
    assert np.isnan(merged.train_ratings[-added:]).all()
    assert np.array_equal(merged.test_items, split.test_items)
    assert np.array_equal(merged.validation_items, split.validation_items)


def test_refit_off_keeps_selection_model(small_config, split):
    config = small_config.replace(refit="off")
    trainer = Trainer(config, split)

    result = fit(config, split, trainer=trainer)

    assert result.refit_epochs == 0
    assert result.model is trainer.model


def test_refit_trains_best_epoch_count(small_config, split, caplog):
    caplog.set_level(logging.INFO, logger="lrml.training")

    result = fit(small_config.replace(epochs=4, refit="on"), split)

    messages = [record.getMessage() for record in caplog.records]
    refit_lines = [line for line in messages if line.startswith("refit epoch")]
    assert result.refit_epochs == result.best_epoch
    assert len(refit_lines) == result.best_epoch
    assert len(result.history) == 4


def test_refit_model_differs_from_selection(small_config, split):
    config = small_config.replace(refit="on")

    selected = fit(config.replace(refit="off"), split).model
    refitted = fit(config, split).model

    assert not torch.equal(selected.user_embeddings, refitted.user_embeddings)


def test_refit_matches_direct_refit_call(small_config, split):
    config = small_config.replace(refit="on")

    result = fit(config, split)
    direct = refit(config, split, result.best_epoch)

    for name, tensor in result.model.state_dict().items():
        assert torch.equal(tensor, direct.state_dict()[name]), name


def test_refit_same_seed_same_weights(small_config, split):
    config = small_config.replace(refit="on")

    first = fit(config, split).model
    np.random.random(100)
    second = fit(config, split).model

    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name


def test_refit_negatives_exclude_validation_items(small_config, split):
    merged = with_validation_in_train(split)
    trainer = Trainer(small_config.replace(num_negatives=20), merged)

    users = np.repeat(split.validation_users, 50)
    negatives = trainer.sampler.sample(users, 20, np.random.default_rng(0))

    validation = dict(zip(split.validation_users, split.validation_items))
    expected = np.array([validation[user] for user in users])
    assert not (negatives == expected[:, None]).any()


def test_refit_keeps_model_factory(small_config, split):
    config = small_config.replace(refit="on")
    trainer = Trainer(config, split, model_factory=make_cml)

    result = fit(config, split, trainer=trainer)

    assert result.refit_epochs > 0
    assert isinstance(result.model, CML)


def test_refit_can_be_stopped(small_config, split):
    config = small_config.replace(refit="on")
    batches = math.ceil(len(split.train_users) / config.batch_size)
    calls = []

    def stop_in_refit():
        calls.append(1)
        return len(calls) > config.epochs * batches

    with pytest.raises(TrainingStopped):
        fit(config, split, should_stop=stop_in_refit)

    assert len(calls) == config.epochs * batches + 1


@pytest.mark.parametrize(
    ("optimizer", "sparse"), [("adam", False), ("adagrad", True), ("sgd", True)]
)
def test_trainer_sparse_gradients_follow_optimizer(
    small_config, split, optimizer, sparse
):
    trainer = Trainer(small_config.replace(optimizer=optimizer), split)

    assert trainer.model.sparse_gradients is sparse


@pytest.mark.parametrize("optimizer", ["adagrad", "sgd"])
def test_sparse_steps_match_dense_steps(small_config, split, optimizer):
    config = small_config.replace(optimizer=optimizer, learning_rate=0.05)
    weights = {}
    for sparse in (True, False):
        trainer = Trainer(config, split)
        trainer.model.sparse_gradients = sparse
        trainer.train_epoch()
        trainer.train_epoch()
        weights[sparse] = trainer.model.state_dict()

    for name, value in weights[True].items():
        torch.testing.assert_close(value, weights[False][name], atol=1e-5, rtol=1e-4)
