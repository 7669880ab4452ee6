"""PatchCore's coreset: greedy k-centre selection in feature space."""

from __future__ import annotations

import torch


def greedy_coreset(features: torch.Tensor, k: int, start: int = 0) -> torch.Tensor:
    """Greedy k-centre selection in feature space (PatchCore's coreset): farthest-point sampling on
    (N, D) features with Euclidean distance. Returns int64 (k,) indices in selection order."""
    if features.dim() != 2:
        raise ValueError(f"features must be (N, D), got {tuple(features.shape)}")
    n = features.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must lie in [1, {n}], got {k}")
    f = features.float()
    dist = torch.full((n,), float("inf"), device=f.device)
    out = torch.empty(k, dtype=torch.int64, device=f.device)
    current = start
    for step in range(k):
        out[step] = current
        dist = torch.minimum(dist, ((f - f[current]) ** 2).sum(1))
        current = int(torch.argmax(dist))
    return out
