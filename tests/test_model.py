"""Tests for lrml.model: clipping, memory attention, distances and score_all."""

from __future__ import annotations

import pytest
import torch

import lrml.model
from lrml.model import DISTANCE_EPS, LRML

N_USERS, N_ITEMS, DIM, MEMORY = 12, 30, 8, 5


def _model(seed: int = 0, **kwargs) -> LRML:
    options = {"init_scale": 0.3, **kwargs}
    generator = torch.Generator().manual_seed(seed)
    return LRML(N_USERS, N_ITEMS, DIM, MEMORY, generator=generator, **options)


def _reference_distance(model: LRML, user: int, item: int) -> torch.Tensor:
    """Compute ||p + r - q|| for one pair step by step, without broadcasting."""
    p = model.user_embeddings[user]
    q = model.item_embeddings[item]
    p = p * min(1.0, model.clip_radius / float(p.norm()))
    q = q * min(1.0, model.clip_radius / float(q.norm()))
    weights = torch.softmax(model.keys @ (p * q), dim=0)  # (memory_size,)
    relation = model.memories.T @ weights  # (d,)
    squared = ((p + relation - q) ** 2).sum()
    return squared if model.squared else torch.sqrt(squared + DISTANCE_EPS)


def test_parameter_shapes():
    model = _model()

    assert model.user_embeddings.shape == (N_USERS, DIM)
    assert model.item_embeddings.shape == (N_ITEMS, DIM)
    assert model.keys.shape == (MEMORY, DIM)
    assert model.memories.shape == (MEMORY, DIM)
    assert model.n_users == N_USERS
    assert model.n_items == N_ITEMS
    assert model.memory_size == MEMORY


def test_same_generator_seed_same_weights():
    first, second = _model(seed=4), _model(seed=4)

    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name


def test_different_seed_different_weights():
    assert not torch.equal(_model(seed=4).keys, _model(seed=5).keys)


def test_init_scale_sets_spread():
    generator = torch.Generator().manual_seed(0)
    model = LRML(2000, 10, 16, 4, init_scale=0.05, generator=generator)

    assert model.user_embeddings.std().item() == pytest.approx(0.05, rel=0.05)


def test_clip_scales_long_rows_to_radius():
    model = _model(clip_radius=1.0)
    vectors = torch.tensor([[3.0, 4.0], [0.6, 0.0], [0.0, 0.0]])

    clipped = model.clip(vectors)

    assert torch.allclose(clipped[0], torch.tensor([0.6, 0.8]))
    assert torch.equal(clipped[1], vectors[1])
    assert torch.equal(clipped[2], vectors[2])


def test_clip_respects_radius():
    model = _model(clip_radius=2.5, init_scale=3.0)

    norms = model.users(torch.arange(N_USERS)).norm(dim=-1)

    assert norms.max().item() <= 2.5 + 1e-5
    assert torch.allclose(norms, torch.full_like(norms, 2.5))


def test_clip_leaves_tables_unchanged():
    model = _model(init_scale=3.0)
    users_before = model.user_embeddings.detach().clone()
    items_before = model.item_embeddings.detach().clone()

    model.users(torch.arange(N_USERS))
    model.items(torch.arange(N_ITEMS))
    model(torch.arange(N_USERS), torch.arange(N_USERS))

    assert torch.equal(model.user_embeddings, users_before)
    assert torch.equal(model.item_embeddings, items_before)
    assert model.user_embeddings.norm(dim=-1).min().item() > 1.0


def test_attention_rows_sum_to_one():
    model = _model()
    p = model.users(torch.arange(6))
    q = model.items(torch.arange(6))

    weights = model.attention(p, q)

    assert weights.shape == (6, MEMORY)
    assert torch.allclose(weights.sum(-1), torch.ones(6))
    assert (weights >= 0).all()


def test_attention_is_softmax_of_keys():
    model = _model()
    p = model.users(torch.tensor([2]))
    q = model.items(torch.tensor([7]))

    weights = model.attention(p, q)

    expected = torch.softmax((p * q) @ model.keys.T, dim=-1)
    assert torch.allclose(weights, expected)


def test_relation_is_weighted_memories():
    model = _model()
    p = model.users(torch.arange(4))
    q = model.items(torch.arange(4))

    relation = model.relation(p, q)

    assert relation.shape == (4, DIM)
    assert torch.allclose(relation, model.attention(p, q) @ model.memories)


def test_distance_l2():
    model = _model()
    p, r, q = (
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([[0.0, 1.0]]),
        torch.tensor([[0.0, -1.0]]),
    )

    distance = model.distance(p, r, q)

    assert distance.item() == pytest.approx(5**0.5)


def test_distance_squared():
    model = _model(squared=True)
    p, r, q = (
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([[0.0, 1.0]]),
        torch.tensor([[0.0, -1.0]]),
    )

    assert model.distance(p, r, q).item() == pytest.approx(5.0)


@pytest.mark.parametrize("squared", [False, True], ids=["l2", "squared_l2"])
def test_forward_matches_reference(squared):
    model = _model(squared=squared, init_scale=0.6)
    users = torch.tensor([0, 3, 3, 11])
    items = torch.tensor([5, 5, 29, 0])

    with torch.no_grad():
        distances = model(users, items)
        expected = torch.stack(
            [_reference_distance(model, int(u), int(i)) for u, i in zip(users, items)]
        )

    assert distances.shape == (4,)
    assert torch.allclose(distances, expected, atol=1e-6)


def test_forward_broadcasts_users_over_items():
    model = _model()
    users = torch.tensor([1, 4, 9])
    items = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])

    with torch.no_grad():
        grid = model(users, items)
        pairwise = model(users.repeat_interleave(4), items.reshape(-1)).reshape(3, 4)

    assert grid.shape == (3, 4)
    assert torch.allclose(grid, pairwise, atol=1e-6)


def test_score_pairs_is_negative_distance():
    model = _model()
    users = torch.tensor([1, 2])
    items = torch.tensor([[3, 4], [5, 6]])

    scores = model.score_pairs(users, items)

    with torch.no_grad():
        assert torch.equal(scores, -model(users, items))
    assert not scores.requires_grad


@pytest.mark.parametrize("squared", [False, True], ids=["l2", "squared_l2"])
@pytest.mark.parametrize("init_scale", [0.1, 1.0], ids=["inside_ball", "clipped"])
def test_score_all_matches_forward(squared, init_scale):
    model = _model(squared=squared, init_scale=init_scale)
    users = torch.arange(N_USERS)

    scores = model.score_all(users)

    with torch.no_grad():
        expected = -model(users, torch.arange(N_ITEMS).expand(N_USERS, N_ITEMS))
    assert scores.shape == (N_USERS, N_ITEMS)
    assert torch.allclose(scores, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("squared", [False, True], ids=["l2", "squared_l2"])
def test_score_all_across_chunks(monkeypatch, squared):
    model = _model(squared=squared, init_scale=0.5)
    users = torch.tensor([0, 5, 7])
    whole = model.score_all(users)

    # 3 users x 2 items per chunk: 15 chunks, the last one partial.
    monkeypatch.setattr(lrml.model, "SCORE_CHUNK_PAIRS", 7)
    chunked = model.score_all(users)

    assert torch.allclose(chunked, whole, atol=1e-6, rtol=0)


def test_score_all_ranks_like_forward():
    model = _model(init_scale=0.5)
    users = torch.arange(N_USERS)

    scores = model.score_all(users)

    with torch.no_grad():
        expected = -model(users, torch.arange(N_ITEMS).expand(N_USERS, N_ITEMS))
    assert torch.equal(scores.argmax(dim=1), expected.argmax(dim=1))


def _model_with_exact_match() -> LRML:
    """Make item 0 sit exactly at p + r for user 0 (memories are zero, so r = 0)."""
    model = _model()
    with torch.no_grad():
        model.memories.zero_()
        model.item_embeddings[0] = model.user_embeddings[0]
    return model


def test_exact_match_distance_near_zero():
    model = _model_with_exact_match()

    with torch.no_grad():
        distance = model(torch.tensor([0]), torch.tensor([0]))

    assert distance.item() == pytest.approx(DISTANCE_EPS**0.5)


@pytest.mark.parametrize("squared", [False, True], ids=["l2", "squared_l2"])
def test_exact_match_gradient_finite(squared):
    model = _model_with_exact_match()
    model.squared = squared

    model(torch.tensor([0, 1]), torch.tensor([0, 2])).sum().backward()

    for name, parameter in model.named_parameters():
        assert torch.isfinite(parameter.grad).all(), name


def test_zero_embedding_gradient_finite():
    model = _model()
    with torch.no_grad():
        model.user_embeddings[0] = 0.0

    model(torch.tensor([0]), torch.tensor([3])).sum().backward()

    assert torch.isfinite(model.user_embeddings.grad).all()


def test_exact_match_ranks_first():
    model = _model_with_exact_match()

    scores = model.score_all(torch.tensor([0]))

    assert scores.argmax().item() == 0


def test_score_all_near_zero_distance():
    model = _model()
    with torch.no_grad():
        model.memories.zero_()
        model.item_embeddings[0] = model.user_embeddings[0] * 1.0001

    scores = model.score_all(torch.tensor([0]))

    with torch.no_grad():
        expected = -model(torch.tensor([0]), torch.tensor([[0]]))
    assert scores[0, 0].item() == pytest.approx(expected.item(), abs=1e-5)


def test_sparse_gradients_equal_dense():
    users = torch.tensor([0, 3, 3, 7])
    items = torch.tensor([[1, 2], [4, 5], [1, 29], [0, 6]])
    gradients = {}
    for sparse in (False, True):
        model = _model()
        model.sparse_gradients = sparse
        model(users[:, None], items).sum().backward()
        gradients[sparse] = (model.user_embeddings.grad, model.item_embeddings.grad)

    assert not gradients[False][0].is_sparse
    assert gradients[True][0].is_sparse
    assert gradients[True][1].is_sparse
    torch.testing.assert_close(gradients[True][0].to_dense(), gradients[False][0])
    torch.testing.assert_close(gradients[True][1].to_dense(), gradients[False][1])
