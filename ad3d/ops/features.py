"""Ops on top of fps/knn used by every memory-bank or sub-sampled detector."""

from __future__ import annotations

import torch

from ad3d.ops.neighbours import knn


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


def interpolate(points: torch.Tensor, ref_points: torch.Tensor, ref_values: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Values at `points` by inverse-distance weighting of their k nearest `ref_points` (M,) -> (N,).

    A point that coincides with a reference point takes its value exactly.
    """
    k = min(k, ref_points.shape[0])
    dist2, idx = knn(points, ref_points, k)
    dist = dist2.clamp_min(0).sqrt()
    weight = 1.0 / (dist + 1e-12)
    weight = torch.where(dist[:, :1] == 0, (dist == 0).to(weight.dtype), weight)
    weight = weight / weight.sum(1, keepdim=True)
    return (weight * ref_values[idx].to(weight.dtype)).sum(1)
