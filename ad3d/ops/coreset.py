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
    f = features.float().contiguous()
    dist = torch.full((n,), float("inf"), device=f.device)
    out = torch.empty(k, dtype=torch.int64, device=f.device)
    diff, step_dist = torch.empty_like(f), torch.empty_like(dist)  # reused: each step writes in place
    current = start
    for step in range(k):
        out[step] = current
        torch.sub(f, f[current], out=diff)
        torch.sum(diff.square_(), 1, out=step_dist)
        torch.minimum(dist, step_dist, out=dist)
        current = int(torch.argmax(dist))
    return out
