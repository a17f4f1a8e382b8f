"""Training loop: hinge loss against sampled negatives, early stopping on validation."""

from __future__ import annotations

import copy
import dataclasses
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
# Optimizers whose step leaves a parameter row with a zero gradient unchanged.
SPARSE_OPTIMIZERS = ("adagrad", "sgd")
# Rows whose negatives are drawn in one sampler call; bounds the negatives held
# at once to this many rows times num_negatives on large datasets.
EPOCH_BLOCK_ROWS = 1 << 20


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
    """Result of `fit`.

    ``model`` has the best epoch's weights, or with ``refit="on"`` is the model
    retrained on training plus validation pairs for ``refit_epochs`` epochs. Its
    validation metrics are then no longer a fair estimate, since it trained on
    the validation pairs; ``best_validation`` stays the selection run's.
    """

    model: LRML
    best_epoch: int
    best_validation: dict[str, float]
    history: list[EpochResult] = field(default_factory=list)
    stopped_early: bool = False
    refit_epochs: int = 0


ModelFactory = Callable[[TrainConfig, Split, torch.Generator], LRML]


def build_lrml(config: TrainConfig, split: Split, generator: torch.Generator) -> LRML:
    """Build the LRML model that ``config`` describes, initialised from ``generator``."""
    return LRML(
        split.n_users,
        split.n_items,
        embedding_dim=config.embedding_dim,
        memory_size=config.memory_size,
        clip_radius=config.clip_radius,
        squared=config.distance == "squared_l2",
        init_scale=config.init_scale,
        generator=generator,
    )


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

    ``model_factory`` builds the model (default `build_lrml`); a baseline such
    as CML passes its own so that it shares this loop, refit included.
    """

    def __init__(
        self,
        config: TrainConfig,
        split: Split,
        device: torch.device | None = None,
        model_factory: ModelFactory | None = None,
    ) -> None:
        self.config = config
        self.split = split
        self.device = device or torch.device("cpu")
        self.model_factory = model_factory or build_lrml
        self.rng = np.random.default_rng(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        self.model = self.model_factory(config, split, generator).to(self.device)
        # Adagrad and SGD update only the rows a batch looked up, so sparse
        # gradients give the same steps without touching the rest of each table.
        self.model.sparse_gradients = config.optimizer in SPARSE_OPTIMIZERS
        if self.model.sparse_gradients:
            # Sets torch's default (no invariant checks) explicitly, which
            # silences the warning torch otherwise gives at each sparse step.
            torch.sparse.check_sparse_tensor_invariants.disable()
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
        """Run one pass over the training pairs and return the mean batch loss.

        The negatives of a whole block of rows (the whole epoch on MovieLens-100K)
        are drawn in one sampler call before its batches run, which saves a
        sampler call and three tensor conversions per batch.
        """
        self.model.train()
        config = self.config
        order = self.rng.permutation(len(self.split.train_users))
        total, batches = 0.0, 0
        for block_start in range(0, len(order), EPOCH_BLOCK_ROWS):
            rows = order[block_start : block_start + EPOCH_BLOCK_ROWS]
            users, positives, negatives = self._block_tensors(rows)
            for start in range(0, len(rows), config.batch_size):
                if should_stop is not None and should_stop():
                    raise TrainingStopped
                stop = start + config.batch_size
                loss = self._batch_loss(
                    users[start:stop], positives[start:stop], negatives[start:stop]
                )

                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise TrainingDiverged(
                        f"loss became {value} in epoch {self.epoch + 1}; lower the "
                        f"learning rate (now {config.learning_rate:g}) and start "
                        "again"
                    )
                total += value
                batches += 1
        self.epoch += 1
        return total / max(1, batches)

    def _block_tensors(
        self, rows: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        users_np = self.split.train_users[rows]  # (n,)
        negatives_np = self.sampler.sample(
            users_np, self.config.num_negatives, self.rng
        )  # (n, k)
        users = torch.from_numpy(users_np).to(self.device)
        positives = torch.from_numpy(self.split.train_items[rows]).to(self.device)
        negatives = torch.from_numpy(negatives_np).to(self.device)
        return users, positives, negatives

    def _batch_loss(
        self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor
    ) -> torch.Tensor:
        model, config = self.model, self.config
        # One lookup, clip and relation for the positive and its negatives
        # together, instead of one for each: fewer small tensor operations.
        items = torch.cat([positives.unsqueeze(1), negatives], dim=1)  # (b, 1 + k)
        p = model.users(users)  # (b, d)
        q = model.items(items)  # (b, 1 + k, d)
        p_grid = p.unsqueeze(1)  # (b, 1, d)
        if config.negative_relation == "own":
            r = model.relation(p_grid, q)  # (b, 1 + k, d)
        else:
            r = model.relation(p, q[:, 0]).unsqueeze(1)  # (b, 1, d)
        distances = model.distance(p_grid, r, q)  # (b, 1 + k)

        loss = hinge_loss(
            distances[:, 0],
            distances[:, 1:],
            config.margin,
            config.negative_reduction,
        )
        if config.l2_weight > 0:
            squares = p.pow(2).sum(-1) + q.pow(2).sum((1, 2))  # (b,)
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
    params = list(model.parameters())
    if config.optimizer == "adam":
        # The fused kernel updates each parameter in one pass instead of
        # several elementwise operations; torch supports it on CPU and CUDA.
        return torch.optim.Adam(params, lr=config.learning_rate, fused=True)
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
    With ``config.refit == "on"``, `refit` then trains a fresh model on
    training plus validation pairs for the best epoch's count of epochs, and
    the result contains that model; ``on_epoch`` is not called during the refit.

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
    model, refit_epochs = trainer.model, 0
    if config.refit == "on" and trainer.best_epoch > 0:
        refit_epochs = trainer.best_epoch
        model = refit(
            config,
            split,
            refit_epochs,
            device=trainer.device,
            model_factory=trainer.model_factory,
            should_stop=should_stop,
        )
    return FitResult(
        model=model,
        best_epoch=trainer.best_epoch,
        best_validation=trainer.best_validation,
        history=history,
        stopped_early=stopped_early,
        refit_epochs=refit_epochs,
    )


def refit(
    config: TrainConfig,
    split: Split,
    epochs: int,
    *,
    device: torch.device | None = None,
    model_factory: ModelFactory | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> LRML:
    """Train a fresh model on training plus validation pairs for ``epochs`` epochs.

    Leave-one-out holds out each user's two latest interactions, and the
    validation one is the closest in time to the test one. Once early stopping
    has fixed the epoch count, training on it too costs one more run and no
    test data. The model starts from ``config.seed`` as the first run did, and
    its negatives also exclude the validation items.

    Raises
    ------
    TrainingDiverged, TrainingStopped
        As `fit` does.
    """
    trainer = Trainer(config, with_validation_in_train(split), device, model_factory)
    for _ in range(epochs):
        loss = trainer.train_epoch(should_stop)
        logger.info("refit epoch %d of %d: loss %.4f", trainer.epoch, epochs, loss)
    return trainer.model


def with_validation_in_train(split: Split) -> Split:
    """Return ``split`` with each user's validation pair added to the training pairs.

    `Split` does not store the validation pairs' ratings and timestamps, so the
    added rows get rating NaN and timestamp -1; training reads neither.
    """
    added = len(split.validation_users)
    return dataclasses.replace(
        split,
        train_users=np.concatenate([split.train_users, split.validation_users]),
        train_items=np.concatenate([split.train_items, split.validation_items]),
        train_ratings=np.concatenate(
            [split.train_ratings, np.full(added, np.nan, dtype=np.float32)]
        ),
        train_timestamps=np.concatenate(
            [split.train_timestamps, np.full(added, -1, dtype=np.int64)]
        ),
    )


def _patience_exhausted(trainer: Trainer, config: TrainConfig) -> bool:
    if not config.patience or trainer.best_epoch == 0:
        return False
    since = max(trainer.best_epoch, trainer.resumed_at)
    return trainer.epoch - since >= config.patience
