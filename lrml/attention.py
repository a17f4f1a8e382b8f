"""Memory attention: one pair step by step, many pairs at once, and what-if rankings.

The what-if functions change the attention: `rerank_with_muted_slots` zeroes
some slots and renormalises the rest, and `single_slot_scores` uses one slot's
memory as the whole relation. Every function runs the model under
``torch.inference_mode`` and returns numpy arrays or DataFrames. Slot indices
run from 0 to ``memory_size - 1``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lrml.inference import (
    LoadedRun,
    candidate_mask,
    check_k,
    check_trained_user,
    item_rows,
    no_candidates_message,
    rank_positions,
    top_indices,
)
from lrml.model import LRML

# Pairs per batch in `pair_weights`. Its p and q take 2 * batch * d float32
# values: 4 MB at d = 32, and 128 MB at the largest d the config allows, 1024.
PAIR_BATCH = 16_384


@dataclass(frozen=True)
class PairAttention:
    """Every intermediate of LRML's score for one pair, as numpy arrays.

    Attributes
    ----------
    user_vector, item_vector : np.ndarray, shape (d,)
        ``p`` and ``q``, the clipped user and item vectors.
    joint : np.ndarray, shape (d,)
        ``p * q``, the element-wise product the attention is computed from.
    logits : np.ndarray, shape (memory_size,)
        ``(p * q) @ keys.T``, before the softmax.
    weights : np.ndarray, shape (memory_size,)
        The attention: softmax of the logits; non-negative, sums to 1.
    relation : np.ndarray, shape (d,)
        ``r = weights @ memories``.
    distance : float
        ``||p + r - q||`` (squared if the model uses squared distances).
    distance_without_relation : float
        ``||p - q||``, for comparison.
    """

    user_index: int
    item_index: int
    joint: np.ndarray
    logits: np.ndarray
    weights: np.ndarray
    relation: np.ndarray
    distance: float
    distance_without_relation: float
    user_vector: np.ndarray
    item_vector: np.ndarray

    def slots(self) -> pd.DataFrame:
        """Return one row per memory slot: slot, logit and weight."""
        return pd.DataFrame(
            {
                "slot": np.arange(len(self.weights)),
                "logit": self.logits,
                "weight": self.weights,
            }
        )

    def dimensions(self) -> pd.DataFrame:
        """Return one row per embedding dimension: p, q, p * q, r and p + r - q."""
        return pd.DataFrame(
            {
                "dimension": np.arange(len(self.joint)),
                "p": self.user_vector,
                "q": self.item_vector,
                "p * q": self.joint,
                "r": self.relation,
                "p + r - q": self.user_vector + self.relation - self.item_vector,
            }
        )


def pair_attention(model: LRML, user_index: int, item_index: int) -> PairAttention:
    """Compute the attention and relation of one (user, item) pair.

    Raises
    ------
    IndexError
        If either index is outside the model's tables; the message names it.
    """
    _check_user(model, user_index)
    if not 0 <= item_index < model.n_items:
        raise IndexError(f"item index {item_index} is outside 0..{model.n_items - 1}")
    with torch.inference_mode():
        p = model.users(torch.tensor([user_index]))[0]  # (d,)
        q = model.items(torch.tensor([item_index]))[0]  # (d,)
        joint = p * q  # (d,)
        logits = joint @ model.keys.T  # (memory_size,)
        weights = torch.softmax(logits, dim=-1)  # (memory_size,)
        relation = weights @ model.memories  # (d,)
        distance = model.distance(p, relation, q)
        plain = model.distance(p, torch.zeros_like(q), q)
    return PairAttention(
        user_index=user_index,
        item_index=item_index,
        joint=joint.numpy(),
        logits=logits.numpy(),
        weights=weights.numpy(),
        relation=relation.numpy(),
        distance=float(distance),
        distance_without_relation=float(plain),
        user_vector=p.numpy(),
        item_vector=q.numpy(),
    )


def memory_tables(model: LRML) -> tuple[np.ndarray, np.ndarray]:
    """Return copies of the slot keys and memories, each of shape (memory_size, d)."""
    with torch.inference_mode():
        return model.keys.numpy().copy(), model.memories.numpy().copy()


def attention_matrix(
    model: LRML, user_index: int, item_indices: np.ndarray
) -> np.ndarray:
    """Return the attention of one user over several items.

    Returns
    -------
    np.ndarray, shape (len(item_indices), memory_size)
        Each row sums to 1.
    """
    with torch.inference_mode():
        p = model.users(torch.tensor([user_index]))  # (1, d)
        q = model.items(_as_index_tensor(item_indices))  # (k, d)
        return model.attention(p, q).numpy()  # (k, memory_size)


def pair_weights(
    model: LRML, users: np.ndarray, items: np.ndarray, batch_size: int = PAIR_BATCH
) -> np.ndarray:
    """Return the attention of many (user, item) pairs.

    Parameters
    ----------
    users, items : np.ndarray of int, shape (n,)
        Row indices of the pairs.
    batch_size : int
        Pairs computed at once. It bounds memory and leaves results unchanged.

    Returns
    -------
    np.ndarray of float32, shape (n, memory_size)
        Each row sums to 1.
    """
    users = np.array(users, dtype=np.int64)
    items = np.array(items, dtype=np.int64)
    if users.shape != items.shape or users.ndim != 1:
        raise ValueError(
            f"users and items must be 1-D arrays of one length; got shapes "
            f"{users.shape} and {items.shape}"
        )
    out = np.empty((len(users), model.memory_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(users), batch_size):
            stop = start + batch_size
            p = model.users(torch.from_numpy(users[start:stop]))  # (b, d)
            q = model.items(torch.from_numpy(items[start:stop]))  # (b, d)
            out[start:stop] = model.attention(p, q).numpy()  # (b, memory_size)
    return out


def muted_weights(
    model: LRML, user_index: int, item_indices: np.ndarray, muted: Iterable[int]
) -> np.ndarray:
    """Return the attention with the ``muted`` slots set to zero and the rest renormalised.

    The result equals a softmax over the logits of the unmuted slots only, so
    the unmuted weights keep their ratios and sum to 1.

    Returns
    -------
    np.ndarray, shape (len(item_indices), memory_size)

    Raises
    ------
    ValueError
        If ``muted`` names a slot outside ``0 .. memory_size - 1`` or every slot.
    """
    _check_user(model, user_index)
    mask = _muted_mask(model, muted)
    with torch.inference_mode():
        p = model.users(torch.tensor([user_index])).unsqueeze(-2)  # (1, 1, d)
        q = model.items(_as_index_tensor(item_indices).unsqueeze(0))  # (1, k, d)
        return _masked_attention(model, p, q, mask)[0].numpy()  # (k, memory_size)


def rerank_with_muted_slots(
    model: LRML, user_index: int, item_indices: np.ndarray, muted: Iterable[int]
) -> np.ndarray:
    """Score items for one user with some memory slots muted.

    The relation becomes ``r = a' @ memories``, where ``a'`` is the attention
    of `muted_weights`. With nothing muted the scores equal
    ``model.score_pairs`` on the same items, because the same operations run
    on tensors of the same shapes.

    Parameters
    ----------
    model : LRML
    user_index : int
        Row of the user.
    item_indices : np.ndarray of int, shape (k,)
        Rows of the items to score.
    muted : iterable of int
        Slots whose attention is set to zero. May be empty.

    Returns
    -------
    np.ndarray of float32, shape (k,)
        Ranking scores ``-||p + r - q||``. Higher scores rank first.

    Raises
    ------
    ValueError
        If ``muted`` names a slot outside ``0 .. memory_size - 1`` or every slot.
    IndexError
        If ``user_index`` is outside the user table.
    """
    _check_user(model, user_index)
    mask = _muted_mask(model, muted)
    with torch.inference_mode():
        p = model.users(torch.tensor([user_index])).unsqueeze(-2)  # (1, 1, d)
        q = model.items(_as_index_tensor(item_indices).unsqueeze(0))  # (1, k, d)
        relation = _masked_attention(model, p, q, mask) @ model.memories  # (1, k, d)
        return -model.distance(p, relation, q)[0].numpy()  # (k,)


def single_slot_scores(
    model: LRML, user_index: int, slot: int, item_indices: np.ndarray | None = None
) -> np.ndarray:
    """Score items with one memory slot as the whole relation: ``r = memories[slot]``.

    This equals muting every other slot, since the softmax over one slot is 1.

    Parameters
    ----------
    item_indices : np.ndarray of int, shape (k,), optional
        Items to score. Every item by default.

    Returns
    -------
    np.ndarray of float32, shape (k,) or (n_items,)

    Raises
    ------
    ValueError
        If ``slot`` is outside ``0 .. memory_size - 1``.
    """
    _check_user(model, user_index)
    _check_slot(model, slot)
    if item_indices is None:
        item_indices = np.arange(model.n_items)
    with torch.inference_mode():
        p = model.users(torch.tensor([user_index]))  # (1, d)
        q = model.items(_as_index_tensor(item_indices))  # (k, d)
        relation = model.memories[slot].expand_as(q)  # (k, d)
        return -model.distance(p, relation, q).numpy()  # (k,)


def muted_ranking(
    loaded: LoadedRun,
    user_index: int,
    muted: Iterable[int],
    k: int = 10,
    exclude_seen: bool = True,
) -> pd.DataFrame:
    """Rank the user's candidates with and without some memory slots muted.

    Both rankings score the candidates with `rerank_with_muted_slots`, so they
    differ only in the muted slots.

    Returns
    -------
    pd.DataFrame
        The movies in either top-``k`` list, ordered by rank_after: rank_after
        and rank_before (1-based, over every candidate), move (rank_before
        minus rank_after, positive when a movie rose), item_index, item_id,
        title, year, genres, score_after and score_before.

    Raises
    ------
    ValueError
        If ``muted`` names an unknown slot or every slot, or ``k`` is invalid.
    """
    k = check_k(k, loaded.split.n_items)
    check_trained_user(loaded, user_index)
    muted = set(muted)
    candidates = np.flatnonzero(candidate_mask(loaded, user_index, exclude_seen))
    if len(candidates) == 0:
        raise ValueError(no_candidates_message(loaded, user_index, None))
    model = loaded.model
    before = rerank_with_muted_slots(model, user_index, candidates, set())
    after = rerank_with_muted_slots(model, user_index, candidates, muted)
    rank_before = rank_positions(before)
    rank_after = rank_positions(after)

    shown = np.flatnonzero((rank_before <= k) | (rank_after <= k))
    shown = shown[np.argsort(rank_after[shown], kind="stable")]
    frame = item_rows(loaded, candidates[shown])
    frame.insert(0, "rank_before", rank_before[shown])
    frame.insert(0, "rank_after", rank_after[shown])
    frame.insert(2, "move", rank_before[shown] - rank_after[shown])
    frame["score_after"] = after[shown]
    frame["score_before"] = before[shown]
    return frame


def single_slot_recommend(
    loaded: LoadedRun,
    user_index: int,
    slot: int,
    k: int = 10,
    exclude_seen: bool = True,
) -> pd.DataFrame:
    """Return the top-``k`` movies when one memory slot is the whole relation.

    The score is ``-||p + memories[slot] - q||``. Columns are those of
    `recommend` minus the distances: rank, item_index, item_id, title, year,
    genres, score, plus rank_full, the movie's rank under the full model.

    Raises
    ------
    ValueError
        If ``slot`` or ``k`` is invalid.
    """
    k = check_k(k, loaded.split.n_items)
    check_trained_user(loaded, user_index)
    candidates = candidate_mask(loaded, user_index, exclude_seen)
    scores = single_slot_scores(loaded.model, user_index, slot)
    top = top_indices(np.where(candidates, scores, -np.inf), k)
    if len(top) == 0:
        raise ValueError(no_candidates_message(loaded, user_index, None))

    with torch.inference_mode():
        full = loaded.model.score_all(torch.tensor([user_index]))[0].numpy()
    full_ranks = rank_positions(np.where(candidates, full, -np.inf))
    frame = item_rows(loaded, top)
    frame.insert(0, "rank", np.arange(1, len(top) + 1))
    frame["score"] = scores[top]
    frame["rank_full"] = full_ranks[top]
    return frame


def _masked_attention(
    model: LRML, p: torch.Tensor, q: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    logits = (p * q) @ model.keys.T  # (..., memory_size)
    if mask.any():
        # A logit of -inf gets weight exactly 0, and the softmax divides by the
        # sum over the remaining slots, which is the renormalisation.
        logits = logits.masked_fill(mask, float("-inf"))
    return torch.softmax(logits, dim=-1)  # (..., memory_size)


def _muted_mask(model: LRML, muted: Iterable[int]) -> torch.Tensor:
    """Return a boolean (memory_size,) mask of the muted slots after checking them."""
    slots = list(muted)
    for slot in slots:
        _check_slot(model, slot)
    slots = sorted({int(slot) for slot in slots})
    if len(slots) == model.memory_size:
        raise ValueError(
            f"muted must leave at least one of the {model.memory_size} slots "
            "unmuted; got every slot. Unmute a slot."
        )
    mask = torch.zeros(model.memory_size, dtype=torch.bool)
    mask[slots] = True
    return mask


def _check_slot(model: LRML, slot: int) -> None:
    is_integer = isinstance(slot, (int, np.integer)) and not isinstance(slot, bool)
    if not is_integer or not 0 <= slot < model.memory_size:
        raise ValueError(
            f"slot must be from 0 to {model.memory_size - 1}; got {slot!r}"
        )


def _check_user(model: LRML, user_index: int) -> None:
    if not 0 <= user_index < model.n_users:
        raise IndexError(f"user index {user_index} is outside 0..{model.n_users - 1}")


def _as_index_tensor(indices: np.ndarray) -> torch.Tensor:
    # np.array copies, so read-only inputs (pandas columns) make writable tensors.
    return torch.from_numpy(np.array(indices, dtype=np.int64))
