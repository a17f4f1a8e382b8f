"""Uniform negative sampling that never returns an item from the user's history."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

# Rejection sampling redraws only the rejected cells. After this many rounds the
# few cells left belong to users who have seen most of the catalogue, and are
# drawn exactly from the items those users have not seen.
REJECTION_ROUNDS = 8


class NegativeSampler:
    """Draw items a user has not interacted with, uniformly at random.

    Parameters
    ----------
    known : scipy.sparse.csr_matrix, shape (n_users, n_items)
        Nonzero where the user has interacted with the item.

    Raises
    ------
    ValueError
        If a user has interacted with every item, so no negative exists.
    """

    def __init__(self, known: sp.csr_matrix) -> None:
        known = sp.csr_matrix(known)
        known.sum_duplicates()
        known.sort_indices()
        self.n_users, self.n_items = known.shape
        self._indptr = known.indptr.astype(np.int64)
        self._indices = known.indices.astype(np.int64)

        counts = np.diff(self._indptr)
        full = np.flatnonzero(counts >= self.n_items)
        if len(full):
            raise ValueError(
                f"user index {full[0]} has interacted with all {self.n_items} items, "
                "so no negative item exists for them; drop such users before training"
            )
        # Sorted keys user * n_items + item allow a vectorised membership test.
        rows = np.repeat(np.arange(self.n_users, dtype=np.int64), counts)
        self._keys = rows * self.n_items + self._indices

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Return a boolean array, True where (user, item) is a known pair."""
        keys = users.astype(np.int64) * self.n_items + items.astype(np.int64)
        positions = np.searchsorted(self._keys, keys)
        positions = np.minimum(positions, len(self._keys) - 1)
        if len(self._keys) == 0:
            return np.zeros(keys.shape, dtype=bool)
        return self._keys[positions] == keys

    def sample(
        self, users: np.ndarray, num_negatives: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Draw ``num_negatives`` unseen items for each user.

        Returns
        -------
        np.ndarray of int64, shape (len(users), num_negatives)
            Items drawn with replacement from each user's unseen items.
        """
        users = np.asarray(users, dtype=np.int64)
        grid_users = np.repeat(users[:, None], num_negatives, axis=1)  # (b, k)
        items = rng.integers(0, self.n_items, size=grid_users.shape, dtype=np.int64)

        rejected = self.contains(grid_users, items)
        for _ in range(REJECTION_ROUNDS):
            if not rejected.any():
                return items
            items[rejected] = rng.integers(0, self.n_items, size=int(rejected.sum()))
            rejected[rejected] = self.contains(grid_users[rejected], items[rejected])

        for row, col in zip(*np.nonzero(rejected)):
            items[row, col] = self._draw_exact(int(grid_users[row, col]), rng)
        return items

    def sample_distinct(
        self,
        users: np.ndarray,
        num_negatives: int,
        rng: np.random.Generator,
        fill_short: bool = False,
    ) -> np.ndarray:
        """Draw ``num_negatives`` distinct unseen items for each user.

        Each row is a uniformly random subset of the user's unseen items, in
        random order. With ``fill_short``, a user with fewer unseen items than
        ``num_negatives`` gets all of them, then repeats drawn at random.

        Raises
        ------
        ValueError
            If a user has fewer than ``num_negatives`` unseen items and
            ``fill_short`` is False.

        Returns
        -------
        np.ndarray of int64, shape (len(users), num_negatives)
        """
        users = np.asarray(users, dtype=np.int64)
        unseen = self.n_items - np.diff(self._indptr)[users]
        short = np.flatnonzero(unseen < num_negatives)
        if len(short) and not fill_short:
            raise ValueError(
                f"user index {users[short[0]]} has only {unseen[short[0]]} unseen "
                f"items, fewer than the {num_negatives} distinct negatives requested"
            )
        # The first k distinct valid values of i.i.d. uniform draws form a
        # uniform k-subset, so over-draw, drop seen and repeated items, and keep
        # the first k valid ones of each row.
        width = 2 * num_negatives + 16
        grid_users = np.repeat(users[:, None], width, axis=1)  # (b, width)
        draws = rng.integers(0, self.n_items, size=grid_users.shape, dtype=np.int64)
        valid = ~self.contains(grid_users, draws)

        order = np.argsort(draws, axis=1, kind="stable")  # (b, width)
        sorted_draws = np.take_along_axis(draws, order, axis=1)
        repeated_sorted = np.zeros_like(valid)
        repeated_sorted[:, 1:] = sorted_draws[:, 1:] == sorted_draws[:, :-1]
        repeated = np.zeros_like(valid)
        np.put_along_axis(repeated, order, repeated_sorted, axis=1)
        valid &= ~repeated

        result = np.empty((len(users), num_negatives), dtype=np.int64)
        enough = valid.sum(axis=1) >= num_negatives
        rows = np.flatnonzero(enough)
        if len(rows):
            keep = valid[rows] & (np.cumsum(valid[rows], axis=1) <= num_negatives)
            result[rows] = draws[rows][keep].reshape(len(rows), num_negatives)
        for row in np.flatnonzero(~enough):
            result[row] = self._choose_exact(int(users[row]), num_negatives, rng)
        return result

    def _choose_exact(
        self, user: int, count: int, rng: np.random.Generator
    ) -> np.ndarray:
        seen = self._indices[self._indptr[user] : self._indptr[user + 1]]
        unseen = np.setdiff1d(np.arange(self.n_items), seen, assume_unique=True)
        if len(unseen) >= count:
            return rng.choice(unseen, size=count, replace=False)
        repeats = rng.choice(unseen, size=count - len(unseen), replace=True)
        return np.concatenate([rng.permutation(unseen), repeats])

    def _draw_exact(self, user: int, rng: np.random.Generator) -> int:
        seen = self._indices[self._indptr[user] : self._indptr[user + 1]]
        unseen_count = self.n_items - len(seen)
        # The k-th unseen item is k plus the number of seen items at or below it.
        k = int(rng.integers(0, unseen_count))
        candidate = k
        for item in seen:
            if item <= candidate:
                candidate += 1
            else:
                break
        return candidate
