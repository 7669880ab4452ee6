"""k-nearest neighbours and what is built on them: ball query, Chamfer distance, interpolation."""

from __future__ import annotations

import torch

from ad3d.ops import fallback
from ad3d.ops._checks import as_batch, as_lengths, check_finite, check_k
from ad3d.ops._ext import load_extension


def knn(
    query: torch.Tensor, ref: torch.Tensor, k: int, q_lengths=None, r_lengths=None, return_sorted: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest neighbours of each query point among the reference points.

    query (B, M, 3) or (M, 3), ref (B, N, 3) or (N, 3): float tensors on one device.
    Returns (dist2, idx), each (B, M, k) (or (M, k)): squared distances ascending and int64 indices into
    ref; rows past a query length hold inf and -1. Equal distances may come in either index order.
    Raises ValueError if k exceeds the smallest reference length or an input holds NaN/inf.
    """
    q, single = as_batch(query, "query")
    r, _ = as_batch(ref, "ref")
    if q.shape[0] != r.shape[0]:
        raise ValueError(f"query batch {q.shape[0]} and ref batch {r.shape[0]} differ")
    if q.device != r.device:
        raise ValueError(f"query is on {q.device} but ref on {r.device}")
    r = r.to(q.dtype)
    ql, rl = as_lengths(q_lengths, q, "q_lengths"), as_lengths(r_lengths, r, "r_lengths")
    k = check_k(k, rl, "knn")
    check_finite(q, ql, "query")
    check_finite(r, rl, "ref")
    ext = load_extension()
    if ext is not None and (not q.is_cuda or (ext.with_cuda() and k <= 64)):
        dist2, idx = ext.knn(q, r, ql.to(q.device), rl.to(q.device), k, return_sorted)
    else:
        dist2, idx = fallback.knn(q, r, ql, rl, k)
    return (dist2[0], idx[0]) if single else (dist2, idx)


def ball_query(
    query: torch.Tensor, ref: torch.Tensor, radius: float, k: int, q_lengths=None, r_lengths=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to k nearest reference points within `radius` of each query (nearest first).

    Same shapes as knn; slots with no neighbour inside the radius hold dist2 inf and index -1.
    """
    if radius <= 0:
        raise ValueError(f"radius must be positive, got {radius}")
    dist2, idx = knn(query, ref, k, q_lengths, r_lengths)
    outside = dist2 > radius * radius
    return dist2.masked_fill(outside, float("inf")), idx.masked_fill(outside, -1)


def chamfer(a: torch.Tensor, b: torch.Tensor, a_lengths=None, b_lengths=None) -> torch.Tensor:
    """Symmetric Chamfer distance per cloud pair: mean squared NN distance a->b plus b->a. Shape (B,) or ().

    Differentiable in both clouds (the neighbours come from knn, the distances are recomputed with
    autograd, as pytorch3d's chamfer_distance does): a training loss for point reconstructions.
    """
    pa, single = as_batch(a, "a")
    pb, _ = as_batch(b, "b")
    la, lb = as_lengths(a_lengths, pa, "a_lengths"), as_lengths(b_lengths, pb, "b_lengths")

    def mean_nearest(src, dst, ls, ld):
        idx = knn(src.detach(), dst.detach(), 1, ls, ld)[1][..., 0].clamp_min(0)
        d = ((src - torch.gather(dst, 1, idx[..., None].expand(-1, -1, 3))) ** 2).sum(-1)
        mask = torch.arange(d.shape[1], device=d.device)[None] < ls.to(d.device)[:, None]
        return torch.where(mask, d, torch.zeros_like(d)).sum(1) / ls.to(d.device, d.dtype)

    out = mean_nearest(pa, pb.to(pa.dtype), la, lb) + mean_nearest(pb.to(pa.dtype), pa, lb, la)
    return out[0] if single else out


def interpolate(
    points: torch.Tensor, ref_points: torch.Tensor, ref_values: torch.Tensor, k: int = 3, power: int = 1
) -> torch.Tensor:
    """Values at `points` by inverse-distance weighting of their k nearest `ref_points`: (M,) -> (N,), or
    (M, C) -> (N, C) for feature vectors.

    power 1: weights 1/d, and a point that coincides with a reference point takes its value exactly;
    power 2: weights 1/(d^2 + 1e-8), as PointNet++'s feature propagation (M3DM, LSFA, MuSc-V2) computes them.
    """
    k = min(k, ref_points.shape[0])
    dist2, idx = knn(points, ref_points, k)
    if power == 2:
        weight = 1.0 / (dist2.clamp_min(0) + 1e-8)
    elif power == 1:
        dist = dist2.clamp_min(0).sqrt()
        weight = torch.where(dist[:, :1] == 0, (dist == 0).to(dist.dtype), 1.0 / (dist + 1e-12))
    else:
        raise ValueError(f"interpolate: power must be 1 or 2, got {power}")
    weight = weight / weight.sum(1, keepdim=True)
    weight = weight.reshape(weight.shape + (1,) * (ref_values.dim() - 1))
    return (weight * ref_values[idx].to(weight.dtype)).sum(1)
