"""Memory attention of one (user, item) pair, step by step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lrml.model import LRML


@dataclass(frozen=True)
class PairAttention:
    """Every intermediate of LRML's score for one pair, as numpy arrays.

    Attributes
    ----------
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

    def slots(self) -> pd.DataFrame:
        """Return one row per memory slot: slot, logit and weight."""
        return pd.DataFrame(
            {
                "slot": np.arange(len(self.weights)),
                "logit": self.logits,
                "weight": self.weights,
            }
        )


def pair_attention(model: LRML, user_index: int, item_index: int) -> PairAttention:
    """Compute the attention and relation of one (user, item) pair.

    Raises
    ------
    IndexError
        If either index is outside the model's tables; the message names it.
    """
    if not 0 <= user_index < model.n_users:
        raise IndexError(f"user index {user_index} is outside 0..{model.n_users - 1}")
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
    )


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
        q = model.items(
            torch.as_tensor(np.asarray(item_indices, dtype=np.int64))
        )  # (k, d)
        return model.attention(p, q).numpy()  # (k, memory_size)
