"""Leave-one-out evaluation: HR@K and nDCG@K, sampled and over the full ranking."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from lrml.model import LRML
from lrml.sampling import NegativeSampler
from lrml.split import Split

logger = logging.getLogger(__name__)

SAMPLED_NEGATIVES = 100
# Fixed so that every model and every run is scored against the same candidates.
CANDIDATE_SEED = 2018
DEFAULT_KS = (5, 10, 20)
USERS_PER_BATCH = 256


class Scorer(Protocol):
    """Anything that scores items for users; a higher score ranks first."""

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Score ``items`` (b, k) for ``users`` (b,); returns (b, k)."""

    def score_all(self, users: np.ndarray) -> np.ndarray:
        """Score every item for ``users`` (b,); returns (b, n_items)."""


class ModelScorer:
    """Adapt an `LRML` model to the `Scorer` protocol, in eval mode."""

    def __init__(self, model: LRML) -> None:
        self.model = model

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        self.model.eval()
        device = self.model.keys.device
        scores = self.model.score_pairs(
            torch.tensor(users, device=device), torch.tensor(items, device=device)
        )
        return scores.float().cpu().numpy()

    def score_all(self, users: np.ndarray) -> np.ndarray:
        self.model.eval()
        scores = self.model.score_all(
            torch.tensor(users, device=self.model.keys.device)
        )
        return scores.float().cpu().numpy()


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one model on one stage of a split.

    Attributes
    ----------
    summary : dict[str, float]
        Means over users, with keys such as ``sampled_hr@10`` and ``full_ndcg@10``.
    per_user : pd.DataFrame
        One row per evaluated user index: the held-out item, its 0-based rank
        among the sampled candidates and in the full ranking, so that two runs
        can be compared user by user.
    """

    summary: dict[str, float]
    per_user: pd.DataFrame


def sample_candidates(
    split: Split,
    stage: str,
    num_negatives: int = SAMPLED_NEGATIVES,
    seed: int = CANDIDATE_SEED,
) -> np.ndarray:
    """Draw the sampled-evaluation candidates of every evaluated user.

    The negatives are distinct items the user has never interacted with: not
    in training, validation or test.

    Returns
    -------
    np.ndarray of int64, shape (n_evaluated_users, 1 + num_negatives)
        Column 0 holds the held-out item, the others the negatives.
    """
    users, targets = split.held_out(stage)
    sampler = NegativeSampler(split.known_matrix("all"))
    stage_offset = 0 if stage == "validation" else 1
    rng = np.random.default_rng([seed, stage_offset])
    # fill_short only matters for tiny catalogues; MovieLens users all have
    # far more than 100 unseen movies.
    negatives = sampler.sample_distinct(users, num_negatives, rng, fill_short=True)
    return np.concatenate([targets[:, None], negatives], axis=1)


def ranking_metrics(ranks: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """Return HR@K and nDCG@K for 0-based ranks of the held-out items."""
    ranks = np.asarray(ranks)
    metrics = {}
    for k in ks:
        hit = ranks < k
        metrics[f"hr@{k}"] = float(hit.mean()) if len(ranks) else 0.0
        gains = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
        metrics[f"ndcg@{k}"] = float(gains.mean()) if len(ranks) else 0.0
    return metrics


def rank_of_first(scores: np.ndarray, excluded: np.ndarray | None = None) -> np.ndarray:
    """Return the 0-based rank of column 0 within each row of ``scores``.

    Ties count against the held-out item, so a model that scores everything
    alike ranks it last rather than first.
    """
    target = scores[:, :1]
    ahead = scores >= target
    ahead[:, 0] = False
    if excluded is not None:
        ahead &= ~excluded
    ranks = ahead.sum(axis=1)
    # A NaN score compares False with everything; rank such a target last.
    return np.where(np.isnan(target[:, 0]), scores.shape[1] - 1, ranks)


def evaluate_sampled(
    scorer: Scorer,
    split: Split,
    stage: str = "validation",
    candidates: np.ndarray | None = None,
    ks: tuple[int, ...] = DEFAULT_KS,
) -> tuple[dict[str, float], np.ndarray]:
    """Rank each held-out item among its sampled negatives.

    Returns
    -------
    metrics : dict[str, float]
        ``hr@K`` and ``ndcg@K`` for each K.
    ranks : np.ndarray of int64, shape (n_evaluated_users,)
    """
    users, _ = split.held_out(stage)
    if candidates is None:
        candidates = sample_candidates(split, stage)
    ranks = np.empty(len(users), dtype=np.int64)
    for start in range(0, len(users), USERS_PER_BATCH * 8):
        stop = start + USERS_PER_BATCH * 8
        scores = scorer.score_pairs(users[start:stop], candidates[start:stop])
        ranks[start:stop] = rank_of_first(scores)
    return ranking_metrics(ranks, ks), ranks


def evaluate_full(
    scorer: Scorer,
    split: Split,
    stage: str = "test",
    ks: tuple[int, ...] = DEFAULT_KS,
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Rank each held-out item among all items the user has not interacted with.

    Returns
    -------
    metrics : dict[str, float]
        ``hr@K``, ``ndcg@K`` and ``coverage@10``, the share of the catalogue
        that appears in at least one user's top 10.
    ranks : np.ndarray of int64, shape (n_evaluated_users,)
    top10 : np.ndarray of int64, shape (n_evaluated_users, 10)
    """
    users, targets = split.held_out(stage)
    known = split.known_matrix(stage)
    ranks = np.empty(len(users), dtype=np.int64)
    top_n = min(10, split.n_items)
    top10 = np.empty((len(users), top_n), dtype=np.int64)
    for start in range(0, len(users), USERS_PER_BATCH):
        batch = users[start : start + USERS_PER_BATCH]
        batch_targets = targets[start : start + USERS_PER_BATCH]
        scores = scorer.score_all(batch)  # (b, n_items)
        excluded = _dense_rows(known, batch)
        target_scores = scores[np.arange(len(batch)), batch_targets][:, None]
        ahead = (scores >= target_scores) & ~excluded
        ahead[np.arange(len(batch)), batch_targets] = False
        batch_ranks = ahead.sum(axis=1)
        candidates = (~excluded).sum(axis=1)
        batch_ranks = np.where(
            np.isnan(target_scores[:, 0]), candidates - 1, batch_ranks
        )
        ranks[start : start + len(batch)] = batch_ranks

        masked = np.where(excluded, -np.inf, scores)
        top = np.argpartition(-masked, top_n - 1, axis=1)[:, :top_n]
        top10[start : start + len(batch)] = top
    metrics = ranking_metrics(ranks, ks)
    metrics["coverage@10"] = float(len(np.unique(top10)) / split.n_items)
    return metrics, ranks, top10


def evaluate(
    scorer: Scorer,
    split: Split,
    stage: str = "test",
    ks: tuple[int, ...] = DEFAULT_KS,
    full: bool = True,
) -> Evaluation:
    """Compute sampled and (optionally) full-ranking metrics on ``stage``."""
    users, targets = split.held_out(stage)
    sampled, sampled_ranks = evaluate_sampled(scorer, split, stage, ks=ks)
    summary = {f"sampled_{name}": value for name, value in sampled.items()}
    per_user = pd.DataFrame(
        {"user": users, "item": targets, "sampled_rank": sampled_ranks}
    )
    if full:
        full_metrics, full_ranks, _ = evaluate_full(scorer, split, stage, ks=ks)
        summary.update({f"full_{name}": value for name, value in full_metrics.items()})
        per_user["full_rank"] = full_ranks
    summary["users"] = float(len(users))
    return Evaluation(summary=summary, per_user=per_user)


def _dense_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    return matrix[rows].toarray() > 0
