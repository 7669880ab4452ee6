"""LSFA's feature adaptor: one transformer block on frozen tokens, and the projection head its losses use."""

from __future__ import annotations

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
