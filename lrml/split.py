"""Leave-one-out split of implicit feedback, by timestamp."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lrml.vocab import Vocabulary, _plain

logger = logging.getLogger(__name__)

MIN_INTERACTIONS_FOR_EVALUATION = 3


@dataclass(frozen=True)
class Split:
    """Interactions in index space, split leave-one-out.

    Each user with at least three interactions gives their latest interaction
    to ``test`` and their second latest to ``validation``; everything else is
    training data. Users with fewer interactions stay in training only.

    Attributes
    ----------
    train_users, train_items : np.ndarray of int64, shape (n_train,)
        Positive training pairs.
    train_ratings : np.ndarray of float32, shape (n_train,)
        The explicit rating behind each training pair (LRML trains on the
        implicit signal only; the rating is kept for analysis).
    validation_users, validation_items, test_users, test_items : np.ndarray
        One held-out pair per evaluated user, sorted by user index.
    """

    user_vocab: Vocabulary
    item_vocab: Vocabulary
    train_users: np.ndarray
    train_items: np.ndarray
    train_ratings: np.ndarray
    train_timestamps: np.ndarray
    validation_users: np.ndarray
    validation_items: np.ndarray
    test_users: np.ndarray
    test_items: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.user_vocab)

    @property
    def n_items(self) -> int:
        return len(self.item_vocab)

    def train_matrix(self) -> sp.csr_matrix:
        """Return the binary user-by-item matrix of training pairs."""
        return self._binary_matrix([(self.train_users, self.train_items)])

    def known_matrix(self, stage: str) -> sp.csr_matrix:
        """Return the pairs a user is known to have before ``stage`` is scored.

        For "validation" that is the training set; for "test" it also holds the
        validation pair, since the model may assume the user saw it; "all" adds
        the test pair too, which is every interaction in the dataset.
        """
        parts = [(self.train_users, self.train_items)]
        if stage in ("test", "all"):
            parts.append((self.validation_users, self.validation_items))
        if stage == "all":
            parts.append((self.test_users, self.test_items))
        elif stage not in ("validation", "test"):
            raise ValueError(
                f"stage must be 'validation', 'test' or 'all'; got {stage!r}"
            )
        return self._binary_matrix(parts)

    def _binary_matrix(
        self, parts: list[tuple[np.ndarray, np.ndarray]]
    ) -> sp.csr_matrix:
        rows = np.concatenate([users for users, _ in parts])
        cols = np.concatenate([items for _, items in parts])
        matrix = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)),
            shape=(self.n_users, self.n_items),
        )
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix

    def held_out(self, stage: str) -> tuple[np.ndarray, np.ndarray]:
        if stage == "validation":
            return self.validation_users, self.validation_items
        if stage == "test":
            return self.test_users, self.test_items
        raise ValueError(f"stage must be 'validation' or 'test'; got {stage!r}")


def build_vocabularies(interactions: pd.DataFrame) -> tuple[Vocabulary, Vocabulary]:
    """Map the users and items that occur in ``interactions`` to sorted indices.

    A movie with no interaction gets no index, so it never gets an embedding row.
    """
    users = Vocabulary(np.sort(interactions["user_id"].unique()), kind="user")
    items = Vocabulary(np.sort(interactions["item_id"].unique()), kind="item")
    return users, items


def leave_one_out(
    interactions: pd.DataFrame,
    user_vocab: Vocabulary | None = None,
    item_vocab: Vocabulary | None = None,
) -> Split:
    """Split ``interactions`` leave-one-out by timestamp.

    Interactions are ordered by timestamp; ties are broken by item id, so the
    item with the larger id counts as later. The order never depends on the
    row order of the file, so the split is the same for every copy of a dataset.

    Parameters
    ----------
    interactions : pd.DataFrame
        Columns ``user_id``, ``item_id``, ``rating`` and ``timestamp``. Repeated
        (user, item) pairs keep their latest row.
    user_vocab, item_vocab : Vocabulary, optional
        Fixed vocabularies, for example the ones saved with a run. By default
        they are built from ``interactions``.

    Raises
    ------
    ValueError
        If ``interactions`` is empty or holds an id missing from a given vocabulary.
    """
    if interactions.empty:
        raise ValueError("cannot split an empty interaction table")
    if user_vocab is None or item_vocab is None:
        built_users, built_items = build_vocabularies(interactions)
        user_vocab = user_vocab or built_users
        item_vocab = item_vocab or built_items

    frame = pd.DataFrame(
        {
            "user": _to_indices(interactions["user_id"], user_vocab),
            "item": _to_indices(interactions["item_id"], item_vocab),
            "item_id": interactions["item_id"].to_numpy(),
            "rating": interactions["rating"].to_numpy(np.float32),
            "timestamp": interactions["timestamp"].to_numpy(np.int64),
        }
    )
    frame = frame.sort_values(["user", "timestamp", "item_id"], kind="stable")
    frame = frame.drop_duplicates(["user", "item"], keep="last")

    counts = frame.groupby("user")["item"].transform("size").to_numpy()
    position_from_end = frame.groupby("user").cumcount(ascending=False).to_numpy()
    evaluated = counts >= MIN_INTERACTIONS_FOR_EVALUATION
    is_test = evaluated & (position_from_end == 0)
    is_validation = evaluated & (position_from_end == 1)
    is_train = ~(is_test | is_validation)

    train = frame[is_train]
    validation = frame[is_validation]
    test = frame[is_test]
    logger.info(
        "leave-one-out split: %d training pairs, %d evaluated users, %d users "
        "in training only",
        len(train),
        len(test),
        frame["user"].nunique() - len(test),
    )
    return Split(
        user_vocab=user_vocab,
        item_vocab=item_vocab,
        train_users=train["user"].to_numpy(np.int64),
        train_items=train["item"].to_numpy(np.int64),
        train_ratings=train["rating"].to_numpy(np.float32),
        train_timestamps=train["timestamp"].to_numpy(np.int64),
        validation_users=validation["user"].to_numpy(np.int64),
        validation_items=validation["item"].to_numpy(np.int64),
        test_users=test["user"].to_numpy(np.int64),
        test_items=test["item"].to_numpy(np.int64),
    )


def _to_indices(ids: pd.Series, vocab: Vocabulary) -> np.ndarray:
    lookup = pd.Series(np.arange(len(vocab)), index=pd.Index(vocab.ids))
    indices = lookup.reindex(ids.to_numpy())
    if indices.isna().any():
        missing = _plain(ids[indices.isna().to_numpy()].iloc[0])
        raise ValueError(
            f"{vocab.kind} {missing!r} is not in the {vocab.kind} vocabulary; "
            "the interactions do not match the vocabulary they were paired with"
        )
    return indices.to_numpy(np.int64)
