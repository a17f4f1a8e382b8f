"""A trained run loaded for use: top-K recommendations and user histories."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from lrml.config import TrainConfig
from lrml.data import Dataset, load_dataset
from lrml.model import LRML
from lrml.runs import Run, open_run
from lrml.split import Split, build_vocabularies, leave_one_out

logger = logging.getLogger(__name__)

MAX_K = 100


@dataclass(frozen=True)
class LoadedRun:
    """A run's model in eval mode, with the dataset and split it was trained on."""

    run: Run
    config: TrainConfig
    model: LRML
    dataset: Dataset
    split: Split

    @cached_property
    def known(self) -> sp.csr_matrix:
        """The user-by-item matrix of everything a user has interacted with."""
        matrix = self.split.known_matrix("test").tolil()
        matrix[self.split.test_users, self.split.test_items] = 1.0
        return matrix.tocsr()

    @cached_property
    def items(self) -> pd.DataFrame:
        """Movie metadata in index order: item_id, title, year, genres."""
        frame = self.dataset.items.set_index("item_id")
        ids = pd.Index(self.split.item_vocab.ids, name="item_id")
        return frame.reindex(ids).reset_index()

    def user_index(self, user_id) -> int:
        """Return the index of an external user id; KeyError names unknown ids."""
        return self.split.user_vocab.index(user_id)

    def item_index(self, item_id) -> int:
        return self.split.item_vocab.index(item_id)


def load_run(name_or_path, dataset: Dataset | None = None) -> LoadedRun:
    """Load a run's weights, dataset and split.

    Raises
    ------
    FileNotFoundError
        If the run or its weights do not exist.
    ValueError
        If the saved vocabularies do not match the dataset as it is now.
    """
    run = open_run(name_or_path)
    config = run.config
    model = run.load_model()
    dataset = dataset or load_dataset(config.dataset)
    user_vocab, item_vocab = run.vocabularies()
    data_users, data_items = build_vocabularies(dataset.interactions)
    if user_vocab != data_users or item_vocab != data_items:
        raise ValueError(
            f"run {run.name!r} was trained on a different copy of {config.dataset}: "
            "its user or item ids differ from the data on disk; train the run again"
        )
    if (model.n_users, model.n_items) != (len(user_vocab), len(item_vocab)):
        raise ValueError(
            f"run {run.name!r} has weights for {model.n_users} users and "
            f"{model.n_items} items but vocabularies of {len(user_vocab)} and "
            f"{len(item_vocab)}"
        )
    split = leave_one_out(dataset.interactions, user_vocab, item_vocab)
    return LoadedRun(run=run, config=config, model=model, dataset=dataset, split=split)


def check_k(k: int, n_items: int) -> int:
    """Return ``k`` if it is a valid list length, else raise ValueError."""
    if (
        isinstance(k, bool)
        or not isinstance(k, (int, np.integer))
        or not 1 <= k <= MAX_K
    ):
        raise ValueError(f"k must be an integer from 1 to {MAX_K}; got {k!r}")
    if k > n_items:
        raise ValueError(f"k={k} is larger than the catalogue of {n_items} movies")
    return int(k)


def recommend(
    loaded: LoadedRun, user_index: int, k: int = 10, exclude_seen: bool = True
) -> pd.DataFrame:
    """Return the top-``k`` movies for one user, best first.

    Returns
    -------
    pd.DataFrame
        Columns rank (1-based), item_index, item_id, title, year, genres, score
        (the negative distance ``-||p + r - q||``), distance_with_relation and
        distance_without_relation (``||p - q||``), seen. Both distances are
        squared when the run's config says ``distance="squared_l2"``.
    """
    k = check_k(k, loaded.split.n_items)
    model = loaded.model
    with torch.inference_mode():
        scores = model.score_all(torch.tensor([user_index]))[0].numpy()  # (n_items,)
    seen = loaded.known[user_index].toarray().ravel() > 0
    if exclude_seen:
        scores = np.where(seen, -np.inf, scores)
    available = int(np.isfinite(scores).sum())
    if available == 0:
        raise ValueError(
            f"user {loaded.split.user_vocab.external(user_index)} has seen every movie"
        )
    k = min(k, available)
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]

    with torch.inference_mode():
        p = model.users(torch.tensor([user_index]))  # (1, d)
        q = model.items(torch.tensor(top))  # (k, d)
        plain = model.distance(p, torch.zeros_like(q), q).numpy()  # (k,)
    frame = loaded.items.iloc[top][["item_id", "title", "year", "genres"]].reset_index(
        drop=True
    )
    frame.insert(0, "item_index", top)
    frame.insert(0, "rank", np.arange(1, len(top) + 1))
    frame["score"] = scores[top]
    frame["distance_with_relation"] = -scores[top]
    frame["distance_without_relation"] = plain
    frame["seen"] = seen[top]
    return frame


def history(loaded: LoadedRun, user_index: int) -> pd.DataFrame:
    """Return every movie the user rated, newest first, with the split it fell in."""
    user_id = loaded.split.user_vocab.external(user_index)
    interactions = loaded.dataset.interactions
    rows = interactions[interactions["user_id"] == user_id].copy()
    rows = rows.sort_values(["timestamp", "item_id"], ascending=False)
    rows["date"] = pd.to_datetime(rows["timestamp"], unit="s").dt.date
    test_item = _held_out_item(loaded, user_index, "test")
    validation_item = _held_out_item(loaded, user_index, "validation")
    rows["part"] = np.where(
        rows["item_id"] == test_item,
        "test",
        np.where(rows["item_id"] == validation_item, "validation", "train"),
    )
    meta = loaded.dataset.items[["item_id", "title", "year", "genres"]]
    rows = rows.merge(meta, on="item_id", how="left")
    return rows[["item_id", "title", "year", "genres", "rating", "date", "part"]]


def _held_out_item(loaded: LoadedRun, user_index: int, stage: str):
    users, items = loaded.split.held_out(stage)
    position = np.searchsorted(users, user_index)
    if position < len(users) and users[position] == user_index:
        return loaded.split.item_vocab.external(items[position])
    return None
