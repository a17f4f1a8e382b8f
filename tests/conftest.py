"""Shared fixtures: seeded synthetic interactions, MovieLens-100K and scorers.

Synthetic data comes from a seeded numpy generator, so every test run gets the
same tables. MovieLens-100K is loaded once per session through `lrml.data`, which
fetches it into ``data/`` on first use.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lrml.config import TrainConfig
from lrml.data import load_ml100k
from lrml.runs import MODELS_DIR_ENV
from lrml.split import Split, leave_one_out

# The models under test are small, so extra threads only add contention.
torch.set_num_threads(1)

SYNTHETIC_SEED = 20180423
SYNTHETIC_USERS = 40
SYNTHETIC_ITEMS = 60


def make_interactions(
    seed: int = SYNTHETIC_SEED,
    n_users: int = SYNTHETIC_USERS,
    n_items: int = SYNTHETIC_ITEMS,
    max_per_user: int = 20,
) -> pd.DataFrame:
    """Build a random interaction table with MovieLens columns.

    Ids are not contiguous (users 101, 108, ... and items 1, 3, 5, ...), so a test
    that confuses ids with indices fails. Each (user, item) pair occurs once.
    Timestamps come from a small range, so ties on timestamp are common. Every
    fifth user has only one or two interactions and stays in training only.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        if user % 5 == 0:
            count = int(rng.integers(1, 3))
        else:
            count = int(rng.integers(3, max_per_user + 1))
        items = rng.choice(n_items, size=count, replace=False)
        for item in items:
            rows.append(
                {
                    "user_id": 101 + 7 * user,
                    "item_id": 1 + 2 * int(item),
                    "rating": float(rng.integers(1, 6)),
                    "timestamp": 880_000_000 + int(rng.integers(0, 40)),
                }
            )
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=seed)
    frame = frame.reset_index(drop=True)
    return frame.astype(
        {
            "user_id": "int64",
            "item_id": "int64",
            "rating": "float32",
            "timestamp": "int64",
        }
    )


class PopularityScorer:
    """Score every item by its number of training interactions (most popular first)."""

    def __init__(self, split: Split) -> None:
        counts = np.bincount(split.train_items, minlength=split.n_items)
        self.counts = counts.astype(np.float32)

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.counts[np.asarray(items)]

    def score_all(self, users: np.ndarray) -> np.ndarray:
        return np.tile(self.counts, (len(users), 1))


@pytest.fixture(autouse=True)
def models_dir(tmp_path, monkeypatch):
    """Point $LRML_MODELS_DIR at a fresh folder, so no test writes into models/."""
    folder = tmp_path / "models"
    monkeypatch.setenv(MODELS_DIR_ENV, str(folder))
    return folder


@pytest.fixture
def interactions() -> pd.DataFrame:
    return make_interactions()


@pytest.fixture
def split(interactions) -> Split:
    return leave_one_out(interactions)


@pytest.fixture
def small_config() -> TrainConfig:
    """A config that trains on the synthetic split in well under a second."""
    return TrainConfig(
        epochs=3,
        embedding_dim=8,
        memory_size=4,
        batch_size=64,
        num_negatives=3,
        patience=0,
        seed=7,
    )


@pytest.fixture
def make_popularity_scorer():
    """Return the `PopularityScorer` class, to build from any split."""
    return PopularityScorer


@pytest.fixture(scope="session")
def ml100k():
    """MovieLens-100K, loaded once per session (fetched on first use)."""
    return load_ml100k()


@pytest.fixture(scope="session")
def ml100k_split(ml100k) -> Split:
    return leave_one_out(ml100k.interactions)
