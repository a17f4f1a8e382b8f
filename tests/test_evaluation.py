"""Tests for lrml.evaluation: metrics, ranks, sampled candidates and both protocols."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lrml.evaluation
from lrml.evaluation import (
    SAMPLED_NEGATIVES,
    ModelScorer,
    evaluate,
    evaluate_full,
    evaluate_sampled,
    rank_of_first,
    ranking_metrics,
    sample_candidates,
)
from lrml.model import LRML
from lrml.split import Split


class OracleScorer:
    """Score 1 for each user's held-out item of one stage and 0 for other items."""

    def __init__(self, split: Split, stage: str) -> None:
        users, items = split.held_out(stage)
        self.target = np.full(split.n_users, -1, dtype=np.int64)
        self.target[users] = items
        self.n_items = split.n_items

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return (items == self.target[users][:, None]).astype(np.float32)

    def score_all(self, users: np.ndarray) -> np.ndarray:
        items = np.broadcast_to(np.arange(self.n_items), (len(users), self.n_items))
        return self.score_pairs(users, items)


class KnownFirstScorer(OracleScorer):
    """Like `OracleScorer`, but `score_all` scores the stage's known items 2."""

    def __init__(self, split: Split, stage: str) -> None:
        super().__init__(split, stage)
        self.known = split.known_matrix(stage).toarray() > 0

    def score_all(self, users: np.ndarray) -> np.ndarray:
        return np.where(self.known[users], 2.0, super().score_all(users))


class ConstantScorer:
    """Score every item alike, so every candidate ties with the held-out item."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.zeros(items.shape, dtype=np.float32)

    def score_all(self, users: np.ndarray) -> np.ndarray:
        return np.zeros((len(users), self.n_items), dtype=np.float32)


def _history(split: Split) -> np.ndarray:
    """Return the dense user-by-item matrix of every interaction in the split."""
    history = split.train_matrix().toarray() > 0
    history[split.validation_users, split.validation_items] = True
    history[split.test_users, split.test_items] = True
    return history


def test_ranking_metrics_hand_values():
    metrics = ranking_metrics(np.array([0, 1, 4, 12]), ks=(1, 5, 10))

    assert metrics["hr@1"] == pytest.approx(0.25)
    assert metrics["hr@5"] == pytest.approx(0.75)
    assert metrics["hr@10"] == pytest.approx(0.75)
    assert metrics["ndcg@1"] == pytest.approx(0.25)
    expected_ndcg5 = (1.0 + 1.0 / math.log2(3) + 1.0 / math.log2(6)) / 4
    assert metrics["ndcg@5"] == pytest.approx(expected_ndcg5)
    assert metrics["ndcg@10"] == pytest.approx(expected_ndcg5)


def test_ranking_metrics_rank_at_cutoff_misses():
    metrics = ranking_metrics(np.array([10]), ks=(10,))

    assert metrics == {"hr@10": 0.0, "ndcg@10": 0.0}


def test_ranking_metrics_last_rank_inside_cutoff():
    metrics = ranking_metrics(np.array([9]), ks=(10,))

    assert metrics["hr@10"] == 1.0
    assert metrics["ndcg@10"] == pytest.approx(1.0 / math.log2(11))


def test_ranking_metrics_no_users():
    metrics = ranking_metrics(np.array([], dtype=np.int64), ks=(10,))

    assert metrics == {"hr@10": 0.0, "ndcg@10": 0.0}


def test_rank_of_first_counts_higher_scores():
    scores = np.array([[3.0, 1.0, 2.0], [1.0, 2.0, 3.0], [2.0, 3.0, 1.0]])

    assert rank_of_first(scores).tolist() == [0, 2, 1]


def test_rank_of_first_ties_count_against():
    scores = np.array([[2.0, 2.0, 2.0], [1.0, 1.0, 0.0]])

    assert rank_of_first(scores).tolist() == [2, 1]


def test_rank_of_first_skips_excluded():
    scores = np.array([[1.0, 5.0, 4.0, 0.0]])
    excluded = np.array([[False, True, False, False]])

    assert rank_of_first(scores, excluded).tolist() == [1]


def test_rank_of_first_nan_target_last():
    scores = np.array([[np.nan, 1.0, 2.0]])

    assert rank_of_first(scores).tolist() == [2]


@pytest.mark.parametrize("stage", ["validation", "test"])
def test_candidates_shape(split, stage):
    candidates = sample_candidates(split, stage)

    assert candidates.shape == (len(split.test_users), 1 + SAMPLED_NEGATIVES)
    assert candidates.dtype == np.int64


@pytest.mark.parametrize("stage", ["validation", "test"])
def test_candidates_first_column_target(split, stage):
    candidates = sample_candidates(split, stage)

    assert np.array_equal(candidates[:, 0], split.held_out(stage)[1])


@pytest.mark.parametrize("stage", ["validation", "test"])
def test_candidates_never_seen(split, stage):
    users, _ = split.held_out(stage)

    negatives = sample_candidates(split, stage)[:, 1:]

    assert not _history(split)[users[:, None], negatives].any()


def test_candidates_same_seed_same(split):
    first = sample_candidates(split, "test", seed=5)
    second = sample_candidates(split, "test", seed=5)

    assert np.array_equal(first, second)


def test_candidates_different_seed_differ(split):
    first = sample_candidates(split, "test", seed=5)
    second = sample_candidates(split, "test", seed=6)

    assert not np.array_equal(first[:, 1:], second[:, 1:])


def test_candidates_differ_between_stages(split):
    validation = sample_candidates(split, "validation")
    test = sample_candidates(split, "test")

    assert not np.array_equal(validation[:, 1:], test[:, 1:])


def test_candidates_ignore_global_rng(split):
    np.random.seed(0)
    first = sample_candidates(split, "test")
    np.random.seed(1)
    second = sample_candidates(split, "test")

    assert np.array_equal(first, second)


def test_candidates_custom_count(split):
    assert sample_candidates(split, "test", num_negatives=7).shape[1] == 8


def test_ml100k_candidates_never_seen(ml100k_split):
    users, _ = ml100k_split.held_out("test")

    negatives = sample_candidates(ml100k_split, "test")[:, 1:]

    assert not _history(ml100k_split)[users[:, None], negatives].any()


@pytest.mark.parametrize("stage", ["validation", "test"])
def test_sampled_oracle_hits_all(split, stage):
    metrics, ranks = evaluate_sampled(OracleScorer(split, stage), split, stage)

    assert metrics["hr@5"] == 1.0
    assert metrics["ndcg@10"] == 1.0
    assert not ranks.any()


def test_sampled_constant_scorer_ranks_last(split):
    metrics, ranks = evaluate_sampled(ConstantScorer(split.n_items), split, "test")

    assert (ranks == SAMPLED_NEGATIVES).all()
    assert metrics["hr@20"] == 0.0


def test_sampled_uses_given_candidates(split):
    candidates = sample_candidates(split, "test", num_negatives=3)
    scorer = OracleScorer(split, "validation")

    metrics, ranks = evaluate_sampled(
        scorer, split, "test", candidates=candidates, ks=(1,)
    )

    assert ranks.max() <= 3
    assert set(metrics) == {"hr@1", "ndcg@1"}


def test_sampled_popularity_ranks(split, make_popularity_scorer):
    scorer = make_popularity_scorer(split)
    candidates = sample_candidates(split, "test")

    _, ranks = evaluate_sampled(scorer, split, "test", candidates=candidates)

    scores = scorer.counts[candidates]
    expected = (scores[:, 1:] >= scores[:, :1]).sum(axis=1)
    assert np.array_equal(ranks, expected)


def test_sampled_batches_agree(monkeypatch, split, make_popularity_scorer):
    scorer = make_popularity_scorer(split)
    _, whole = evaluate_sampled(scorer, split, "test")

    monkeypatch.setattr(lrml.evaluation, "USERS_PER_BATCH", 1)
    _, batched = evaluate_sampled(scorer, split, "test")

    assert np.array_equal(batched, whole)


@pytest.mark.parametrize("stage", ["validation", "test"])
def test_full_oracle_hits_all(split, stage):
    metrics, ranks, _ = evaluate_full(OracleScorer(split, stage), split, stage)

    assert metrics["hr@5"] == 1.0
    assert not ranks.any()


def test_full_excludes_known_items(split):
    metrics, ranks, _ = evaluate_full(KnownFirstScorer(split, "test"), split, "test")

    assert metrics["hr@5"] == 1.0
    assert not ranks.any()


def test_full_popularity_ranks(split, make_popularity_scorer):
    scorer = make_popularity_scorer(split)
    known = split.known_matrix("test").toarray() > 0

    _, ranks, _ = evaluate_full(scorer, split, "test")

    expected = []
    for user, target in zip(*split.held_out("test")):
        others = ~known[user]
        others[target] = False
        expected.append(int((scorer.counts[others] >= scorer.counts[target]).sum()))
    assert ranks.tolist() == expected


def test_full_top10_excludes_known(split, make_popularity_scorer):
    known = split.known_matrix("test").toarray() > 0

    _, _, top10 = evaluate_full(make_popularity_scorer(split), split, "test")

    users, _ = split.held_out("test")
    assert top10.shape == (len(users), 10)
    assert not known[users[:, None], top10].any()


def test_full_top10_best_scores(split, make_popularity_scorer):
    scorer = make_popularity_scorer(split)
    known = split.known_matrix("test").toarray() > 0

    _, _, top10 = evaluate_full(scorer, split, "test")

    users, _ = split.held_out("test")
    for row, user in enumerate(users):
        allowed = np.sort(scorer.counts[~known[user]])[::-1]
        assert (
            np.sort(scorer.counts[top10[row]])[::-1].tolist() == allowed[:10].tolist()
        )


def test_full_coverage(split, make_popularity_scorer):
    metrics, _, top10 = evaluate_full(make_popularity_scorer(split), split, "test")

    assert metrics["coverage@10"] == pytest.approx(
        len(np.unique(top10)) / split.n_items
    )
    assert 0.0 < metrics["coverage@10"] < 1.0


def test_full_batches_agree(monkeypatch, split, make_popularity_scorer):
    scorer = make_popularity_scorer(split)
    whole_metrics, whole_ranks, whole_top = evaluate_full(scorer, split, "test")

    monkeypatch.setattr(lrml.evaluation, "USERS_PER_BATCH", 3)
    metrics, ranks, top = evaluate_full(scorer, split, "test")

    assert np.array_equal(ranks, whole_ranks)
    assert metrics == whole_metrics
    assert np.array_equal(np.sort(top, axis=1), np.sort(whole_top, axis=1))


def test_evaluate_summary_keys(split, make_popularity_scorer):
    evaluation = evaluate(make_popularity_scorer(split), split, "test", ks=(10,))

    assert set(evaluation.summary) == {
        "sampled_hr@10",
        "sampled_ndcg@10",
        "full_hr@10",
        "full_ndcg@10",
        "full_coverage@10",
        "users",
    }
    assert evaluation.summary["users"] == len(split.test_users)


def test_evaluate_per_user_table(split, make_popularity_scorer):
    evaluation = evaluate(make_popularity_scorer(split), split, "test")

    table = evaluation.per_user
    assert list(table.columns) == ["user", "item", "sampled_rank", "full_rank"]
    assert np.array_equal(table["user"], split.test_users)
    assert np.array_equal(table["item"], split.test_items)
    assert (table["full_rank"] >= 0).all()


def test_evaluate_without_full(split, make_popularity_scorer):
    evaluation = evaluate(make_popularity_scorer(split), split, "test", full=False)

    assert not any(name.startswith("full_") for name in evaluation.summary)
    assert "full_rank" not in evaluation.per_user


def test_evaluate_matches_parts(split, make_popularity_scorer):
    scorer = make_popularity_scorer(split)

    evaluation = evaluate(scorer, split, "validation")

    sampled, _ = evaluate_sampled(scorer, split, "validation")
    full, _, _ = evaluate_full(scorer, split, "validation")
    assert evaluation.summary["sampled_hr@10"] == sampled["hr@10"]
    assert evaluation.summary["full_ndcg@20"] == full["ndcg@20"]


def test_evaluate_oracle_perfect(split):
    evaluation = evaluate(OracleScorer(split, "test"), split, "test")

    assert evaluation.summary["sampled_hr@10"] == 1.0
    assert evaluation.summary["full_hr@10"] == 1.0
    assert evaluation.summary["full_ndcg@10"] == 1.0


def test_model_scorer_matches_model(split):
    generator = torch.Generator().manual_seed(0)
    model = LRML(split.n_users, split.n_items, 8, 4, generator=generator)
    scorer = ModelScorer(model)
    users = np.array([0, 3])
    items = np.array([[1, 2, 3], [4, 5, 6]])

    pairs = scorer.score_pairs(users, items)
    full = scorer.score_all(users)

    assert isinstance(pairs, np.ndarray)
    assert pairs.shape == (2, 3)
    assert np.allclose(full[np.arange(2)[:, None], items], pairs, atol=1e-5)
    assert not model.training


def test_model_scorer_sampled_ranks(split):
    generator = torch.Generator().manual_seed(0)
    model = LRML(split.n_users, split.n_items, 8, 4, generator=generator)
    candidates = sample_candidates(split, "test")

    _, ranks = evaluate_sampled(
        ModelScorer(model), split, "test", candidates=candidates
    )

    with torch.no_grad():
        distances = model(
            torch.from_numpy(split.test_users.copy()), torch.from_numpy(candidates)
        )
    expected = (distances[:, 1:] <= distances[:, :1]).sum(dim=1)
    assert ranks.tolist() == expected.tolist()
