"""Training loop: hinge loss against sampled negatives, early stopping on validation."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lrml.config import TrainConfig
from lrml.evaluation import ModelScorer, evaluate_sampled, sample_candidates
from lrml.model import LRML
from lrml.sampling import NegativeSampler
from lrml.split import Split

logger = logging.getLogger(__name__)

SELECTION_METRIC = "hr@10"


class TrainingStopped(Exception):
    """Raised inside the loop when a stop was requested between two batches."""


class TrainingDiverged(RuntimeError):
    """Raised when the loss becomes NaN or infinite."""


@dataclass
class EpochResult:
    """What one epoch produced; the run folder stores one per line."""

    epoch: int
    loss: float
    seconds: float
    validation: dict[str, float]
    improved: bool

    def to_record(self) -> dict[str, float | int | bool]:
        record: dict[str, float | int | bool] = {
            "epoch": self.epoch,
            "loss": self.loss,
            "seconds": self.seconds,
            "improved": self.improved,
        }
        record.update({f"val_{name}": value for name, value in self.validation.items()})
        return record


@dataclass
class FitResult:
    model: LRML
    best_epoch: int
    best_validation: dict[str, float]
    history: list[EpochResult] = field(default_factory=list)
    stopped_early: bool = False


def choose_device(requested: str | None = None) -> torch.device:
    """Return ``requested`` or, when it is None or "auto", CUDA if present, else CPU."""
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ValueError(
            f"invalid device {requested!r}: use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {requested!r} requested but CUDA is not available; use cpu"
        )
    return device


def hinge_loss(
    positive: torch.Tensor, negative: torch.Tensor, margin: float, reduction: str
) -> torch.Tensor:
    """Return the mean over positives of the margin hinge against their negatives.

    Parameters
    ----------
    positive : torch.Tensor, shape (b,)
        Distances of the positive pairs.
    negative : torch.Tensor, shape (b, k)
        Distances of the same users to k sampled negative items.
    reduction : {"sum", "mean", "hardest"}
        How the k hinge terms of one positive are combined.
    """
    terms = torch.relu(margin + positive.unsqueeze(1) - negative)  # (b, k)
    if reduction == "sum":
        per_positive = terms.sum(dim=1)
    elif reduction == "mean":
        per_positive = terms.mean(dim=1)
    elif reduction == "hardest":
        per_positive = terms.max(dim=1).values
    else:
        raise ValueError(f"reduction must be sum, mean or hardest; got {reduction!r}")
    return per_positive.mean()


class Trainer:
    """Owns the model, optimizer, sampler and random state of one run.

    All randomness comes from generators seeded by ``config.seed``, so two
    trainers with the same config and split produce the same weights, whatever
    else the process draws from numpy's or torch's global generators.
    """

    def __init__(
        self, config: TrainConfig, split: Split, device: torch.device | None = None
    ) -> None:
        self.config = config
        self.split = split
        self.device = device or torch.device("cpu")
        self.rng = np.random.default_rng(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        self.model = LRML(
            split.n_users,
            split.n_items,
            embedding_dim=config.embedding_dim,
            memory_size=config.memory_size,
            clip_radius=config.clip_radius,
            squared=config.distance == "squared_l2",
            init_scale=config.init_scale,
            generator=generator,
        ).to(self.device)
        self.optimizer = make_optimizer(self.model, config)
        self.sampler = NegativeSampler(split.train_matrix())
        self.validation_candidates = sample_candidates(split, "validation")
        self.epoch = 0
        # Model selection state; a checkpoint saves and restores it with the rest.
        self.best_score = -1.0
        self.best_epoch = 0
        self.best_validation: dict[str, float] = {}
        self.best_state: dict[str, torch.Tensor] | None = None
        # Epoch a resumed run restarted from; patience counts from here too, so
        # resuming an early-stopped run trains at least `patience` more epochs.
        self.resumed_at = 0
        # The metrics line of the last epoch restored from a checkpoint.
        self.last_record: dict[str, Any] | None = None

    def train_epoch(self, should_stop: Callable[[], bool] | None = None) -> float:
        """Run one pass over the training pairs and return the mean batch loss."""
        self.model.train()
        config = self.config
        order = self.rng.permutation(len(self.split.train_users))
        total, batches = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            if should_stop is not None and should_stop():
                raise TrainingStopped
            rows = order[start : start + config.batch_size]
            users_np = self.split.train_users[rows]
            negatives_np = self.sampler.sample(users_np, config.num_negatives, self.rng)

            users = torch.as_tensor(users_np, device=self.device)
            positives = torch.as_tensor(
                self.split.train_items[rows], device=self.device
            )
            negatives = torch.as_tensor(negatives_np, device=self.device)
            loss = self._batch_loss(users, positives, negatives)

            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"loss became {value} in epoch {self.epoch + 1}; lower the "
                    f"learning rate (now {config.learning_rate:g}) and start again"
                )
            total += value
            batches += 1
        self.epoch += 1
        return total / max(1, batches)

    def _batch_loss(
        self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor
    ) -> torch.Tensor:
        model, config = self.model, self.config
        p = model.users(users)  # (b, d)
        q_pos = model.items(positives)  # (b, d)
        q_neg = model.items(negatives)  # (b, k, d)

        r_pos = model.relation(p, q_pos)  # (b, d)
        d_pos = model.distance(p, r_pos, q_pos)  # (b,)
        p_grid = p.unsqueeze(1)  # (b, 1, d)
        if config.negative_relation == "own":
            r_neg = model.relation(p_grid, q_neg)  # (b, k, d)
        else:
            r_neg = r_pos.unsqueeze(1)  # (b, 1, d)
        d_neg = model.distance(p_grid, r_neg, q_neg)  # (b, k)

        loss = hinge_loss(d_pos, d_neg, config.margin, config.negative_reduction)
        if config.l2_weight > 0:
            squares = p.pow(2).sum(-1) + q_pos.pow(2).sum(-1) + q_neg.pow(2).sum((1, 2))
            loss = loss + config.l2_weight * squares.mean()
        return loss

    def validate(self) -> dict[str, float]:
        metrics, _ = evaluate_sampled(
            ModelScorer(self.model),
            self.split,
            "validation",
            candidates=self.validation_candidates,
            ks=(10,),
        )
        return metrics


def make_optimizer(
    model: torch.nn.Module, config: TrainConfig
) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.learning_rate)
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=config.learning_rate)
    return torch.optim.SGD(params, lr=config.learning_rate)


def fit(
    config: TrainConfig,
    split: Split,
    *,
    device: torch.device | None = None,
    on_epoch: Callable[[EpochResult, Trainer], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    trainer: Trainer | None = None,
) -> FitResult:
    """Train for ``config.epochs`` epochs, keeping the weights of the best epoch.

    The best epoch is the one with the highest validation HR@10. Training ends
    early after ``config.patience`` epochs without improvement (0 turns early
    stopping off), or when ``should_stop`` returns True between two batches.

    Raises
    ------
    TrainingDiverged
        If the loss becomes NaN or infinite; the message names the epoch.
    TrainingStopped
        If ``should_stop`` returned True. The best weights so far stay in
        ``trainer.model`` only if no epoch has finished; callers that need them
        should save them in ``on_epoch``.
    """
    trainer = trainer or Trainer(config, split, device)
    history: list[EpochResult] = []
    stopped_early = False

    while trainer.epoch < config.epochs:
        if _patience_exhausted(trainer, config):
            stopped_early = True
            break
        started = time.perf_counter()
        loss = trainer.train_epoch(should_stop)
        validation = trainer.validate()
        score = validation[SELECTION_METRIC]
        improved = score > trainer.best_score
        if improved:
            trainer.best_score, trainer.best_epoch = score, trainer.epoch
            trainer.best_validation = validation
            trainer.best_state = copy.deepcopy(trainer.model.state_dict())
        result = EpochResult(
            epoch=trainer.epoch,
            loss=loss,
            seconds=time.perf_counter() - started,
            validation=validation,
            improved=improved,
        )
        history.append(result)
        logger.info(
            "epoch %d: loss %.4f, validation HR@10 %.4f, %.2f s",
            result.epoch,
            loss,
            score,
            result.seconds,
        )
        if on_epoch is not None:
            on_epoch(result, trainer)
        if _patience_exhausted(trainer, config):
            stopped_early = True
            logger.info("no improvement for %d epochs; stopping", config.patience)
            break

    if trainer.best_state is not None:
        trainer.model.load_state_dict(trainer.best_state)
    return FitResult(
        model=trainer.model,
        best_epoch=trainer.best_epoch,
        best_validation=trainer.best_validation,
        history=history,
        stopped_early=stopped_early,
    )


def _patience_exhausted(trainer: Trainer, config: TrainConfig) -> bool:
    if not config.patience or trainer.best_epoch == 0:
        return False
    since = max(trainer.best_epoch, trainer.resumed_at)
    return trainer.epoch - since >= config.patience
