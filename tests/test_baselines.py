"""Tests for lrml.baselines and lrml.synthetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrml.baselines import (
    BPRMF,
    PopularityScorer,
    TorchScorer,
    fit_als,
    fit_bpr,
    make_cml,
)
from lrml.config import TrainConfig
from lrml.evaluation import evaluate
from lrml.synthetic import powerlaw_interactions


def test_popularity_scores_counts(split):
    scorer = PopularityScorer(split)
    counts = np.bincount(split.train_items, minlength=split.n_items)

    scores = scorer.score_all(np.array([0, 1]))

    assert scores.shape == (2, split.n_items)
    assert np.array_equal(scores[0], counts)
    assert np.array_equal(scores[1], counts)


def test_cml_relation_is_zero(split):
    model = make_cml(
        TrainConfig(embedding_dim=8), split, torch.Generator().manual_seed(0)
    )
    p = model.users(torch.tensor([0, 1]))
    q = model.items(torch.tensor([2, 3]))

    assert torch.equal(model.relation(p, q), torch.zeros_like(p))


def test_cml_score_all_matches_forward(split):
    model = make_cml(
        TrainConfig(embedding_dim=8), split, torch.Generator().manual_seed(0)
    )
    users = torch.tensor([0, 3])
    items = torch.arange(split.n_items).repeat(2, 1)

    expected = -model(users, items).detach()
    actual = model.score_all(users)

    assert torch.allclose(actual, expected, atol=1e-5)


def test_bpr_score_all_matches_pairs(split):
    model = BPRMF(split.n_users, split.n_items, 4, torch.Generator().manual_seed(0))
    scorer = TorchScorer(model)
    users = np.array([0, 2])
    items = np.tile(np.arange(split.n_items), (2, 1))

    assert np.allclose(
        scorer.score_all(users), scorer.score_pairs(users, items), atol=1e-6
    )


def test_fit_bpr_beats_chance(split):
    result = fit_bpr(split, dim=8, epochs=5, patience=0)

    metrics = evaluate(result.scorer, split, "test", full=False).summary

    assert result.epochs == 5
    assert 1 <= result.best_epoch <= 5
    assert 0.0 <= metrics["sampled_hr@10"] <= 1.0


def test_fit_als_scorer_shapes(split):
    result = fit_als(split, factors=4, iterations=2)

    scores = result.scorer.score_all(np.array([0, 1, 2]))

    assert scores.shape == (3, split.n_items)
    assert np.isfinite(scores).all()


def test_powerlaw_pairs_distinct():
    frame = powerlaw_interactions(200, 100, 3000, seed=1)

    assert len(frame) == 3000
    assert not frame.duplicated(["user_id", "item_id"]).any()
    assert frame["item_id"].between(1, 100).all()
    assert frame["user_id"].between(1, 200).all()


def test_powerlaw_popular_items_first():
    frame = powerlaw_interactions(500, 200, 10_000, seed=2)
    counts = frame["item_id"].value_counts()

    assert counts.get(1, 0) > counts.get(200, 0)


def test_powerlaw_rejects_dense_request():
    with pytest.raises(
        ValueError, match="more than half of the 10 x 10 possible pairs"
    ):
        powerlaw_interactions(10, 10, 60)


def test_fit_bpr_refit_adds_best_epoch_count(split):
    result = fit_bpr(split, dim=8, epochs=3, patience=0, refit=True)

    assert 1 <= result.best_epoch <= 3
    assert result.epochs == 3 + result.best_epoch


def test_fit_bpr_refit_changes_model(split):
    plain = fit_bpr(split, dim=8, epochs=3, patience=0)
    refitted = fit_bpr(split, dim=8, epochs=3, patience=0, refit=True)

    users = np.arange(split.n_users)
    assert not np.allclose(
        plain.scorer.score_all(users), refitted.scorer.score_all(users)
    )


def test_fit_als_refit_trains_on_validation(split):
    plain = fit_als(split, factors=4, iterations=2)
    refitted = fit_als(split, factors=4, iterations=2, refit=True)

    users = np.arange(split.n_users)
    assert not np.allclose(
        plain.scorer.score_all(users), refitted.scorer.score_all(users)
    )
