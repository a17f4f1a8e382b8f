"""Tests of lrml.attention on seeded random models and a synthetic loaded run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lrml.attention import (
    attention_matrix,
    memory_tables,
    muted_ranking,
    muted_weights,
    pair_attention,
    pair_weights,
    rerank_with_muted_slots,
    single_slot_recommend,
    single_slot_scores,
)
from lrml.config import TrainConfig
from lrml.data import Dataset
from lrml.inference import LoadedRun, load_run, recommend
from lrml.model import LRML
from lrml.runs import create_run
from lrml.split import leave_one_out

N_USERS, N_ITEMS, DIM, SLOTS = 6, 40, 8, 5


@pytest.fixture
def model() -> LRML:
    generator = torch.Generator().manual_seed(11)
    # A larger init_scale than the default spreads the attention over slots.
    return LRML(
        N_USERS, N_ITEMS, DIM, SLOTS, init_scale=0.8, generator=generator
    ).eval()


@pytest.fixture
def loaded(tmp_path, interactions) -> LoadedRun:
    """A run with random weights over the synthetic interactions, loaded from disk."""
    item_ids = np.sort(interactions["item_id"].unique())
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": [f"Movie {item_id}" for item_id in item_ids],
            "year": pd.array([1990 + item_id % 10 for item_id in item_ids], "Int64"),
            "genres": ["Drama" if item_id % 3 else "Horror" for item_id in item_ids],
        }
    )
    user_ids = np.sort(interactions["user_id"].unique())
    users = pd.DataFrame(
        {
            "user_id": user_ids,
            "age": pd.array([20 + user_id % 40 for user_id in user_ids], "Int64"),
            "gender": ["F" if user_id % 2 else "M" for user_id in user_ids],
            "occupation": "student",
            "zip_code": "00000",
        }
    )
    dataset = Dataset("ml-100k", interactions, items, users, "synthetic")
    split = leave_one_out(interactions)
    run = create_run(TrainConfig(embedding_dim=DIM, memory_size=SLOTS), root=tmp_path)
    run.save_vocabularies(split.user_vocab, split.item_vocab)
    generator = torch.Generator().manual_seed(5)
    run.save_weights(
        LRML(
            split.n_users,
            split.n_items,
            DIM,
            SLOTS,
            init_scale=0.8,
            generator=generator,
        )
    )
    return load_run(run.path, dataset=dataset)


def test_pair_attention_steps_match_model(model):
    pair = pair_attention(model, 2, 7)
    keys, memories = memory_tables(model)

    np.testing.assert_allclose(pair.joint, pair.user_vector * pair.item_vector)
    np.testing.assert_allclose(pair.logits, pair.joint @ keys.T, rtol=1e-5)
    assert pair.weights.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(pair.relation, pair.weights @ memories, atol=1e-6)
    expected = model(torch.tensor([2]), torch.tensor([7]))[0].item()
    assert pair.distance == pytest.approx(expected, rel=1e-5)
    assert list(pair.dimensions().columns) == [
        "dimension",
        "p",
        "q",
        "p * q",
        "r",
        "p + r - q",
    ]


def test_pair_attention_rejects_unknown_item(model):
    with pytest.raises(IndexError, match=f"item index {N_ITEMS} is outside"):
        pair_attention(model, 0, N_ITEMS)


def test_memory_tables_are_copies(model):
    keys, _ = memory_tables(model)
    keys[:] = 0.0

    assert model.keys.abs().sum() > 0


def test_pair_weights_match_attention_matrix(model):
    items = np.array([3, 9, 0, 12])
    users = np.full(len(items), 4)

    weights = pair_weights(model, users, items, batch_size=3)

    np.testing.assert_allclose(weights, attention_matrix(model, 4, items), atol=1e-6)
    assert weights.shape == (4, SLOTS)


def test_pair_weights_rejects_mismatched_shapes(model):
    with pytest.raises(ValueError, match="1-D arrays of one length"):
        pair_weights(model, np.array([0, 1]), np.array([0]))


def test_muting_nothing_equals_model_score(model):
    items = np.arange(N_ITEMS)

    scores = rerank_with_muted_slots(model, 3, items, set())

    expected = model.score_pairs(torch.tensor([3]), torch.tensor(items[None]))[0]
    assert np.array_equal(scores, expected.numpy())


def test_muting_all_but_one_equals_single_slot(model):
    items = np.arange(N_ITEMS)
    for slot in range(SLOTS):
        muted = set(range(SLOTS)) - {slot}

        scores = rerank_with_muted_slots(model, 1, items, muted)

        np.testing.assert_allclose(
            scores, single_slot_scores(model, 1, slot), rtol=0, atol=1e-6
        )


def test_muted_weights_renormalise(model):
    items = np.arange(10)
    full = attention_matrix(model, 0, items)

    weights = muted_weights(model, 0, items, {1, 3})

    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    assert (weights[:, [1, 3]] == 0).all()
    kept = full[:, [0, 2, 4]]
    np.testing.assert_allclose(
        weights[:, [0, 2, 4]], kept / kept.sum(axis=1, keepdims=True), atol=1e-6
    )


def test_muting_changes_scores(model):
    items = np.arange(N_ITEMS)
    full = rerank_with_muted_slots(model, 2, items, set())

    muted = rerank_with_muted_slots(model, 2, items, {0})

    assert not np.allclose(full, muted)


def test_muting_every_slot_is_rejected(model):
    with pytest.raises(ValueError, match="at least one of the 5 slots unmuted"):
        rerank_with_muted_slots(model, 0, np.arange(3), set(range(SLOTS)))


@pytest.mark.parametrize("slot", [-1, SLOTS, 1.5, True])
def test_muting_unknown_slot_is_rejected(model, slot):
    with pytest.raises(ValueError, match=r"slot must be from 0 to 4; got"):
        rerank_with_muted_slots(model, 0, np.arange(3), {slot})


def test_single_slot_rejects_unknown_slot(model):
    with pytest.raises(ValueError, match=r"slot must be from 0 to 4; got 9"):
        single_slot_scores(model, 0, 9)


def test_single_slot_uses_memory_as_relation(model):
    _, memories = memory_tables(model)
    p = model.users(torch.tensor([2]))[0].detach().numpy()
    q = model.items(torch.tensor([5]))[0].detach().numpy()

    score = single_slot_scores(model, 2, 3, np.array([5]))[0]

    assert score == pytest.approx(-np.linalg.norm(p + memories[3] - q), rel=1e-5)


def test_rerank_rejects_unknown_user(model):
    with pytest.raises(IndexError, match=f"user index {N_USERS} is outside"):
        rerank_with_muted_slots(model, N_USERS, np.arange(3), set())


def test_muted_ranking_without_muting_keeps_ranks(loaded):
    ranking = muted_ranking(loaded, 3, set(), k=5)

    assert len(ranking) == 5
    assert list(ranking["rank_after"]) == [1, 2, 3, 4, 5]
    assert (ranking["move"] == 0).all()
    top = recommend(loaded, 3, 5)
    assert set(ranking["item_id"]) == set(top["item_id"])


def test_muted_ranking_reports_moves(loaded):
    ranking = muted_ranking(loaded, 3, {0, 1}, k=8)

    assert (ranking["move"] == ranking["rank_before"] - ranking["rank_after"]).all()
    assert ranking["rank_after"].is_monotonic_increasing
    in_either = (ranking["rank_before"] <= 8) | (ranking["rank_after"] <= 8)
    assert in_either.all()
    assert (ranking["move"] != 0).any()


def test_muted_ranking_rejects_muting_every_slot(loaded):
    with pytest.raises(ValueError, match="at least one of the 5 slots"):
        muted_ranking(loaded, 0, range(SLOTS))


def test_single_slot_recommend_ranks_by_slot(loaded):
    top = single_slot_recommend(loaded, 2, slot=4, k=6)

    assert list(top["rank"]) == list(range(1, 7))
    assert top["score"].is_monotonic_decreasing
    expected = single_slot_scores(loaded.model, 2, 4, top["item_index"].to_numpy())
    np.testing.assert_allclose(top["score"], expected)
    assert not top["item_index"].isin(loaded.known[2].indices).any()
    assert (top["rank_full"] >= 1).all()
