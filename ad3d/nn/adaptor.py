"""LSFA's feature adaptor (one transformer block on frozen tokens, and the projection head its losses use) and
the self-supervised losses that train it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def heads_for(dim: int) -> int:
    """The most attention heads (of 12, 8, 6, 4, 3, 2, 1) that divide the token width."""
    return next(h for h in (12, 8, 6, 4, 3, 2, 1) if dim % h == 0)


class Adaptor(nn.Module):
    """One transformer block on the frozen tokens (what scoring reads), and the projection head that only
    the adaptation losses use."""

    def __init__(self, dim: int, proj_dim: int):
        super().__init__()
        from ad3d.nn.vit import Block

        self.block = Block(dim, heads_for(dim), layer_scale=False)
        self.head = nn.Linear(dim, proj_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.block(tokens)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 1.0, release: bool = False) -> torch.Tensor:
    """Symmetric InfoNCE: row i of `a` and row i of `b` are a positive pair, every other row a negative.
    release=True: the LSFA release's value (`fusion_pretrain.py`: `contrastive_loss` scales each direction
    by 2 * temperature), 2 * temperature times ours."""
    a = nn.functional.normalize(a, dim=1)
    b = nn.functional.normalize(b, dim=1)
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    mean = (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)) / 2
    return mean * (2 * temperature) if release else mean


def compactness(features: torch.Tensor, queue: torch.Tensor, clamp: float | None = None) -> torch.Tensor:
    """Mean distance of each feature to its nearest queued feature (IFC): small when normal features gather.
    clamp: squared distances held in [1e-12, clamp] first, as the release's `euclidean_dist` does (50: no
    gradient beyond a distance of 7.07)."""
    if clamp is None:
        return torch.cdist(features, queue).min(1).values.mean()
    return (torch.cdist(features, queue) ** 2).clamp(1e-12, clamp).sqrt().min(1).values.mean()


def rotate_blocks(image: np.ndarray, rng: np.random.Generator, block: int = 4) -> np.ndarray:
    """The image with every block x block square rotated by a random multiple of 90 degrees."""
    h, w = (image.shape[0] // block) * block, (image.shape[1] // block) * block
    out = image.copy()
    tiles = out[:h, :w].reshape(h // block, block, w // block, block, -1).transpose(0, 2, 1, 3, 4)
    turns = rng.integers(0, 4, size=tiles.shape[:2])
    for k in (1, 2, 3):
        tiles[turns == k] = np.rot90(tiles[turns == k], k, axes=(1, 2))
    out[:h, :w] = tiles.transpose(0, 2, 1, 3, 4).reshape(h, w, -1)
    return out
