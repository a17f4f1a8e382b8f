"""Baselines scored by the same evaluation code as LRML.

Popularity, BPR matrix factorisation and CML are trained here on the same split;
ALS from the ``implicit`` package is an outside reference.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lrml.config import TrainConfig
from lrml.evaluation import ModelScorer, evaluate_sampled, sample_candidates
from lrml.model import LRML
from lrml.sampling import NegativeSampler
from lrml.split import Split
from lrml.training import with_validation_in_train

logger = logging.getLogger(__name__)


class PopularityScorer:
    """Rank every item by its number of training interactions."""

    def __init__(self, split: Split) -> None:
        counts = np.bincount(split.train_items, minlength=split.n_items)
        self.counts = counts.astype(np.float32)

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.counts[items]

    def score_all(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(users), len(self.counts))).copy()


class CML(LRML):
    """Collaborative Metric Learning: LRML with the relation vector fixed at zero.

    Reference: Hsieh et al., "Collaborative Metric Learning", WWW 2017. Keys and
    memories exist only so that the class shares LRML's training code; they get
    no gradient.
    """

    def relation(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return torch.zeros(torch.broadcast_shapes(p.shape, q.shape), device=p.device)

    @torch.inference_mode()
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        p = self.users(users)  # (b, d)
        q = self.clip(self.item_embeddings)  # (n, d)
        squared = torch.cdist(p, q).pow(2)  # (b, n)
        if self.squared:
            return -squared
        return -torch.sqrt(squared + 1e-10)


class BPRMF(nn.Module):
    """Matrix factorisation with item biases, trained with the BPR loss.

    Reference: Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit
    Feedback", UAI 2009.
    """

    def __init__(
        self, n_users: int, n_items: int, dim: int, generator: torch.Generator
    ) -> None:
        super().__init__()
        self.user_factors = nn.Parameter(torch.empty(n_users, dim))
        self.item_factors = nn.Parameter(torch.empty(n_items, dim))
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        with torch.no_grad():
            self.user_factors.normal_(0.0, 0.1, generator=generator)
            self.item_factors.normal_(0.0, 0.1, generator=generator)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Return scores; ``users`` (b,) broadcasts against ``items`` (b,) or (b, k)."""
        p = self.user_factors[users]  # (b, d)
        q = self.item_factors[items]  # (b, [k,] d)
        if q.dim() == 3:
            p = p.unsqueeze(1)  # (b, 1, d)
        return (p * q).sum(-1) + self.item_bias[items]

    @torch.inference_mode()
    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.forward(users, items)

    @torch.inference_mode()
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_factors[users] @ self.item_factors.T + self.item_bias


class TorchScorer(ModelScorer):
    """`ModelScorer` for any module with ``score_pairs`` and ``score_all``."""

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        self.model.eval()
        return self.model.score_pairs(torch.tensor(users), torch.tensor(items)).numpy()

    def score_all(self, users: np.ndarray) -> np.ndarray:
        self.model.eval()
        return self.model.score_all(torch.tensor(users)).numpy()


@dataclass
class BaselineResult:
    scorer: object
    epochs: int
    best_epoch: int
    seconds: float


def fit_bpr(
    split: Split,
    dim: int = 64,
    learning_rate: float = 5e-3,
    weight_decay: float = 1e-5,
    epochs: int = 50,
    batch_size: int = 1024,
    patience: int = 5,
    seed: int = 0,
    refit: bool = False,
) -> BaselineResult:
    """Train BPR-MF with Adam, keeping the epoch with the best validation HR@10.

    With ``refit``, a fresh model then trains on training plus validation pairs
    for the best epoch's count of epochs, as ``TrainConfig.refit`` does for LRML.
    """
    started = time.perf_counter()
    model, run_epoch = _bpr_trainer(split, dim, learning_rate, weight_decay, seed)
    candidates = sample_candidates(split, "validation")
    best, best_epoch, best_state = -1.0, 0, None

    for epoch in range(1, epochs + 1):
        run_epoch(epoch, batch_size)
        metrics, _ = evaluate_sampled(
            TorchScorer(model), split, "validation", candidates=candidates, ks=(10,)
        )
        if metrics["hr@10"] > best:
            best, best_epoch = metrics["hr@10"], epoch
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        elif patience and epoch - best_epoch >= patience:
            break
    epochs_run = epoch

    if best_state is not None:
        model.load_state_dict(best_state)
    if refit and best_epoch > 0:
        merged = with_validation_in_train(split)
        model, run_epoch = _bpr_trainer(merged, dim, learning_rate, weight_decay, seed)
        for refit_epoch in range(1, best_epoch + 1):
            run_epoch(refit_epoch, batch_size)
        epochs_run += best_epoch
    return BaselineResult(
        TorchScorer(model), epochs_run, best_epoch, time.perf_counter() - started
    )


def _bpr_trainer(
    split: Split, dim: int, learning_rate: float, weight_decay: float, seed: int
) -> tuple[BPRMF, Callable[[int, int], None]]:
    """Build a BPR model and a function that trains it for one epoch."""
    rng = np.random.default_rng(seed)
    model = BPRMF(
        split.n_users, split.n_items, dim, torch.Generator().manual_seed(seed)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    sampler = NegativeSampler(split.train_matrix())

    def run_epoch(epoch: int, batch_size: int) -> None:
        model.train()
        order = rng.permutation(len(split.train_users))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            users = torch.as_tensor(split.train_users[rows])
            positives = torch.as_tensor(split.train_items[rows])
            negatives = torch.as_tensor(
                sampler.sample(split.train_users[rows], 1, rng)[:, 0]
            )
            margin = model(users, positives) - model(users, negatives)  # (b,)
            loss = -torch.nn.functional.logsigmoid(margin).mean()
            squares = (
                model.user_factors[users].pow(2).sum()
                + model.item_factors[positives].pow(2).sum()
                + model.item_factors[negatives].pow(2).sum()
            )
            loss = loss + weight_decay * squares
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise RuntimeError(f"BPR loss became {value} in epoch {epoch}")

    return model, run_epoch


class ALSScorer:
    """Score with the user and item factors of a fitted ``implicit`` ALS model."""

    def __init__(self, user_factors: np.ndarray, item_factors: np.ndarray) -> None:
        self.user_factors = user_factors
        self.item_factors = item_factors

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        p = self.user_factors[users][:, None, :]  # (b, 1, d)
        return (p * self.item_factors[items]).sum(-1)  # (b, k)

    def score_all(self, users: np.ndarray) -> np.ndarray:
        return self.user_factors[users] @ self.item_factors.T  # (b, n_items)


def fit_als(
    split: Split,
    factors: int = 64,
    regularization: float = 0.05,
    alpha: float = 1.0,
    iterations: int = 15,
    seed: int = 0,
    refit: bool = False,
) -> BaselineResult:
    """Fit implicit's ALS on the binary training matrix (one thread, fixed seed).

    ALS runs a fixed number of iterations and never reads the validation pairs,
    so ``refit`` simply fits on training plus validation pairs.
    """
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    # implicit warns, and slows down, when BLAS runs its own thread pool.
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
            random_state=seed,
            num_threads=1,
        )
        data = with_validation_in_train(split) if refit else split
        model.fit(data.train_matrix(), show_progress=False)
    scorer = ALSScorer(
        np.asarray(model.user_factors, dtype=np.float32),
        np.asarray(model.item_factors, dtype=np.float32),
    )
    return BaselineResult(scorer, iterations, iterations, time.perf_counter() - started)


def make_cml(config: TrainConfig, split: Split, generator: torch.Generator) -> CML:
    """Build a CML model with the same vector settings as an LRML config."""
    return CML(
        split.n_users,
        split.n_items,
        embedding_dim=config.embedding_dim,
        memory_size=1,
        clip_radius=config.clip_radius,
        squared=config.distance == "squared_l2",
        init_scale=config.init_scale,
        generator=generator,
    )
