"""Vocabulary: maps external ids (MovieLens user or movie ids) to contiguous indices."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


class Vocabulary:
    """A bijection between external ids and the indices ``0 .. len - 1``.

    Ids keep their order of first appearance in ``ids``. Lookups accept the id
    itself or its string form, so ``"1"`` from a command line finds the integer
    MovieLens id ``1``.
    """

    def __init__(self, ids: Iterable[Any], kind: str = "id") -> None:
        self.kind = kind
        self._ids: list[Any] = [_plain(i) for i in ids]
        self._index = {value: i for i, value in enumerate(self._ids)}
        if len(self._index) != len(self._ids):
            raise ValueError(f"{kind} vocabulary contains duplicate ids")
        self._by_text = {str(value): i for i, value in enumerate(self._ids)}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, external_id: Any) -> bool:
        return self.find(external_id) is not None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._ids == other._ids

    @property
    def ids(self) -> list[Any]:
        return list(self._ids)

    def find(self, external_id: Any) -> int | None:
        """Return the index of ``external_id``, or None when it is unknown."""
        index = self._index.get(_plain(external_id))
        if index is None:
            index = self._by_text.get(str(external_id).strip())
        return index

    def index(self, external_id: Any) -> int:
        """Return the index of ``external_id``.

        Raises
        ------
        KeyError
            If the id is unknown; the message names the id and the valid range.
        """
        index = self.find(external_id)
        if index is None:
            raise KeyError(
                f"unknown {self.kind} {external_id!r}: this dataset has "
                f"{len(self)} {self.kind}s, with ids such as {self._example()}"
            )
        return index

    def indices(self, external_ids: Sequence[Any]) -> np.ndarray:
        return np.fromiter((self.index(i) for i in external_ids), dtype=np.int64)

    def external(self, index: int) -> Any:
        return self._ids[int(index)]

    def externals(self, indices: Iterable[int]) -> list[Any]:
        return [self._ids[int(i)] for i in indices]

    def to_list(self) -> list[Any]:
        return list(self._ids)

    def _example(self) -> str:
        shown = self._ids[:3]
        return ", ".join(str(i) for i in shown) + (" ..." if len(self) > 3 else "")


def _plain(value: Any) -> Any:
    """Turn numpy scalars into Python ones, so ids hash and serialise alike."""
    if isinstance(value, np.generic):
        return value.item()
    return value
