"""The LRML model: users and items in one metric space, moved by a relation vector.

Reference: Yi Tay, Luu Anh Tuan and Siu Cheung Hui, "Latent Relational Metric
Learning via Memory-based Attention for Collaborative Ranking", WWW 2018.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# Added under square roots so that a zero distance has a finite gradient.
DISTANCE_EPS = 1e-10

# Cap on (users x items) pairs scored at once by `LRML.score_all`, which bounds
# its memory to a few hundred MB whatever the catalogue size.
SCORE_CHUNK_PAIRS = 2_000_000


class LRML(nn.Module):
    """Latent Relational Metric Learning.

    For a user vector p and an item vector q, the attention over the
    ``memory_size`` slots is ``a = softmax((p * q) @ keys.T)``, the relation is
    ``r = a @ memories`` and the distance is ``||p + r - q||``. A smaller
    distance means a better match; the ranking score is the negative distance.

    Parameters
    ----------
    n_users, n_items : int
        Rows of the two embedding tables.
    embedding_dim : int
        Size d of user, item, key and memory vectors.
    memory_size : int
        Number of memory slots N.
    clip_radius : float
        Looked-up user and item vectors are scaled into the ball of this radius.
        The tables themselves are left as they are.
    squared : bool
        Use the squared Euclidean distance instead of the Euclidean one.
    init_scale : float
        Standard deviation of the normal initialisation of every parameter.
    generator : torch.Generator, optional
        Source of randomness for the initialisation.

    Attributes
    ----------
    sparse_gradients : bool
        Give the two embedding tables sparse gradients, which hold only the
        rows a batch looked up. Optimizers that update only those rows
        (Adagrad, SGD) then skip the rest of each table. False by default,
        because Adam decays the moments of every row and needs dense gradients.
    """

    sparse_gradients: bool = False

    def __init__(
        self,
        n_users: int,
        n_items: int,
        embedding_dim: int,
        memory_size: int,
        clip_radius: float = 1.0,
        squared: bool = False,
        init_scale: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.clip_radius = clip_radius
        self.squared = squared
        self.user_embeddings = nn.Parameter(torch.empty(n_users, embedding_dim))
        self.item_embeddings = nn.Parameter(torch.empty(n_items, embedding_dim))
        self.keys = nn.Parameter(torch.empty(memory_size, embedding_dim))
        self.memories = nn.Parameter(torch.empty(memory_size, embedding_dim))
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.normal_(0.0, init_scale, generator=generator)

    @property
    def n_users(self) -> int:
        return self.user_embeddings.shape[0]

    @property
    def n_items(self) -> int:
        return self.item_embeddings.shape[0]

    @property
    def memory_size(self) -> int:
        return self.keys.shape[0]

    def clip(self, vectors: torch.Tensor) -> torch.Tensor:
        """Scale rows longer than ``clip_radius`` back onto the ball's surface."""
        # rsqrt of the clamped squared norm: fewer and cheaper operations, and
        # their backward pass, than norm() then a division. Rows inside the
        # ball get scale 1 and a zero row a finite gradient.
        radius = self.clip_radius
        squared = vectors.pow(2).sum(dim=-1, keepdim=True)  # (..., 1)
        return vectors * (radius * squared.clamp_min(radius * radius).rsqrt())

    def users(self, users: torch.Tensor) -> torch.Tensor:
        table = self.user_embeddings
        return self.clip(F.embedding(users, table, sparse=self.sparse_gradients))

    def items(self, items: torch.Tensor) -> torch.Tensor:
        table = self.item_embeddings
        return self.clip(F.embedding(items, table, sparse=self.sparse_gradients))

    def attention(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Return the attention over memory slots, shape (..., memory_size)."""
        logits = (p * q) @ self.keys.T  # (..., memory_size)
        return torch.softmax(logits, dim=-1)

    def relation(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Return the relation vector ``r = a @ memories``, shape (..., d)."""
        return self.attention(p, q) @ self.memories

    def distance(
        self, p: torch.Tensor, r: torch.Tensor, q: torch.Tensor
    ) -> torch.Tensor:
        squared = (p + r - q).pow(2).sum(dim=-1)  # (...,)
        if self.squared:
            return squared
        return torch.sqrt(squared + DISTANCE_EPS)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Return distances for pairs; ``users`` broadcasts against ``items``.

        ``users`` of shape (b,) and ``items`` of shape (b, k) give (b, k).
        """
        q = self.items(items)  # (b, [k,] d)
        p = self.users(users)  # (b, d)
        if q.dim() == p.dim() + 1:
            p = p.unsqueeze(-2)  # (b, 1, d)
        return self.distance(p, self.relation(p, q), q)

    @torch.inference_mode()
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Return the ranking scores (negative distances) of every item.

        Expands ``||p + r - q||^2`` so that no (users, items, d) tensor is built:
        with ``a`` the attention and ``G = M M^T``, it equals
        ``||p - q||^2 + 2 a.(M p - M q) + a G a``.

        Returns
        -------
        torch.Tensor, shape (len(users), n_items)
        """
        # float64 because the expansion subtracts nearly equal terms when an
        # item lies close to p + r; float32 loses the small distances.
        p = self.users(users).double()  # (b, d)
        keys, memories = self.keys.double(), self.memories.double()
        chunk = max(1, SCORE_CHUNK_PAIRS // max(1, len(users)))
        gram = memories @ memories.T  # (N, N)
        p_keys = p.unsqueeze(1) * keys  # (b, N, d)
        p_memory = p @ memories.T  # (b, N)
        p_sq = p.pow(2).sum(-1, keepdim=True)  # (b, 1)

        parts = []
        for start in range(0, self.n_items, chunk):
            q = self.clip(
                self.item_embeddings[start : start + chunk]
            ).double()  # (n, d)
            logits = torch.einsum("bjd,nd->bnj", p_keys, q)  # (b, n, N)
            a = torch.softmax(logits, dim=-1)  # (b, n, N)
            q_memory = q @ memories.T  # (n, N)
            diff_memory = p_memory.unsqueeze(1) - q_memory.unsqueeze(0)  # (b, n, N)
            base = p_sq - 2.0 * (p @ q.T) + q.pow(2).sum(-1)  # (b, n)
            cross = 2.0 * (a * diff_memory).sum(-1)  # (b, n)
            relation_sq = ((a @ gram) * a).sum(-1)  # (b, n)
            squared = (base + cross + relation_sq).clamp_min(0.0)
            distance = squared if self.squared else torch.sqrt(squared + DISTANCE_EPS)
            parts.append(-distance.float())
        return torch.cat(parts, dim=1)

    @torch.inference_mode()
    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Return ranking scores for ``users`` (b,) against ``items`` (b, k)."""
        return -self.forward(users, items)
