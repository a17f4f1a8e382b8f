"""Tests for lrml.sampling: unseen negatives, drawn uniformly and reproducibly."""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.sparse as sp

from lrml.sampling import REJECTION_ROUNDS, NegativeSampler


def _random_known(
    seed: int, n_users: int, n_items: int, density: float
) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < density
    dense[:, 0] = False  # every user keeps at least one unseen item
    return sp.csr_matrix(dense.astype(np.float32))


def _known_with_rows(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    dense = np.zeros((len(rows), n_items), dtype=np.float32)
    for user, items in enumerate(rows):
        dense[user, items] = 1.0
    return sp.csr_matrix(dense)


def test_sample_never_returns_known_item():
    known = _random_known(seed=1, n_users=50, n_items=40, density=0.6)
    sampler = NegativeSampler(known)
    users = np.repeat(np.arange(50), 20)

    negatives = sampler.sample(users, 10, np.random.default_rng(0))

    dense = known.toarray() > 0
    assert not dense[users[:, None], negatives].any()


def test_sample_shape_and_dtype():
    sampler = NegativeSampler(_random_known(seed=2, n_users=5, n_items=30, density=0.3))

    negatives = sampler.sample(np.array([0, 3, 4]), 7, np.random.default_rng(0))

    assert negatives.shape == (3, 7)
    assert negatives.dtype == np.int64
    assert negatives.min() >= 0
    assert negatives.max() < 30


def test_sample_empty_user_batch():
    sampler = NegativeSampler(_random_known(seed=2, n_users=5, n_items=30, density=0.3))

    negatives = sampler.sample(
        np.array([], dtype=np.int64), 4, np.random.default_rng(0)
    )

    assert negatives.shape == (0, 4)


def test_nearly_full_user_gets_only_unseen():
    n_items = 500
    seen = [item for item in range(n_items) if item != 123]
    sampler = NegativeSampler(_known_with_rows([seen], n_items))

    started = time.perf_counter()
    negatives = sampler.sample(
        np.zeros(200, dtype=np.int64), 5, np.random.default_rng(0)
    )
    elapsed = time.perf_counter() - started

    assert set(negatives.ravel().tolist()) == {123}
    assert elapsed < 5.0


def test_exact_draw_is_uniform():
    # With 3 unseen items of 20, about a quarter of the draws are still rejected
    # after REJECTION_ROUNDS rounds and go through the exact draw.
    unseen = [0, 9, 19]
    seen = [item for item in range(20) if item not in unseen]
    sampler = NegativeSampler(_known_with_rows([seen], 20))
    assert REJECTION_ROUNDS < 20

    negatives = sampler.sample(
        np.zeros(3000, dtype=np.int64), 10, np.random.default_rng(5)
    )

    values, counts = np.unique(negatives, return_counts=True)
    assert values.tolist() == unseen
    assert np.allclose(counts / counts.sum(), 1 / 3, atol=0.02)


def test_sample_uniform_over_unseen():
    sampler = NegativeSampler(_known_with_rows([[1, 2, 3, 4, 5]], 10))

    negatives = sampler.sample(
        np.zeros(10_000, dtype=np.int64), 5, np.random.default_rng(1)
    )

    values, counts = np.unique(negatives, return_counts=True)
    assert values.tolist() == [0, 6, 7, 8, 9]
    assert np.allclose(counts / counts.sum(), 0.2, atol=0.01)


def test_user_with_every_item_rejected():
    known = _known_with_rows([[0, 1], [0, 1, 2, 3, 4], [3]], 5)

    with pytest.raises(
        ValueError, match="user index 1 has interacted with all 5 items"
    ):
        NegativeSampler(known)


def test_duplicate_entries_do_not_fill_user():
    # Stored twice, item 0 must not count as two of the three items.
    rows, cols = np.array([0, 0, 0]), np.array([0, 0, 1])
    known = sp.csr_matrix((np.ones(3), (rows, cols)), shape=(1, 3))

    negatives = NegativeSampler(known).sample(
        np.array([0]), 20, np.random.default_rng(0)
    )

    assert set(negatives.ravel().tolist()) == {2}


def test_same_seed_same_negatives():
    sampler = NegativeSampler(
        _random_known(seed=3, n_users=20, n_items=50, density=0.5)
    )
    users = np.arange(20)

    first = sampler.sample(users, 6, np.random.default_rng(42))
    second = sampler.sample(users, 6, np.random.default_rng(42))

    assert np.array_equal(first, second)


def test_different_seed_different_negatives():
    sampler = NegativeSampler(
        _random_known(seed=3, n_users=20, n_items=50, density=0.5)
    )
    users = np.arange(20)

    first = sampler.sample(users, 6, np.random.default_rng(42))
    second = sampler.sample(users, 6, np.random.default_rng(43))

    assert not np.array_equal(first, second)


def test_global_rng_not_used():
    sampler = NegativeSampler(
        _random_known(seed=3, n_users=20, n_items=50, density=0.5)
    )
    users = np.arange(20)

    np.random.seed(0)
    first = sampler.sample(users, 6, np.random.default_rng(42))
    np.random.seed(1)
    second = sampler.sample(users, 6, np.random.default_rng(42))

    assert np.array_equal(first, second)


def test_contains_known_pairs():
    sampler = NegativeSampler(_known_with_rows([[1, 3], [0]], 4))

    found = sampler.contains(np.array([0, 0, 0, 1, 1]), np.array([1, 2, 3, 0, 3]))

    assert found.tolist() == [True, False, True, True, False]


def test_contains_on_empty_matrix():
    sampler = NegativeSampler(sp.csr_matrix((3, 4), dtype=np.float32))

    found = sampler.contains(np.array([0, 2]), np.array([1, 3]))

    assert found.tolist() == [False, False]


def test_sample_on_empty_matrix():
    sampler = NegativeSampler(sp.csr_matrix((3, 4), dtype=np.float32))

    negatives = sampler.sample(np.array([0, 1, 2]), 5, np.random.default_rng(0))

    assert negatives.shape == (3, 5)
    assert negatives.max() < 4


def test_ml100k_training_negatives_unseen(ml100k_split):
    known = ml100k_split.train_matrix()
    sampler = NegativeSampler(known)
    users = ml100k_split.train_users[:5000]

    negatives = sampler.sample(users, 5, np.random.default_rng(0))

    assert not sampler.contains(np.repeat(users[:, None], 5, axis=1), negatives).any()
    assert known[users[:, None], negatives].sum() == 0
