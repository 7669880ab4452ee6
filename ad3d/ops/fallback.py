"""Vectorised torch versions of the kernels: same results, used when the extension cannot be built."""

from __future__ import annotations

import torch


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distances in the kernels' operation order ((dx² + dy²) + dz²), broadcasting a against b."""
    d = a - b
    d = d * d
    return (d[..., 0] + d[..., 1]) + d[..., 2]


def fps(points: torch.Tensor, lengths: torch.Tensor, starts: torch.Tensor, k: int) -> torch.Tensor:
    out = torch.full((points.shape[0], k), -1, dtype=torch.int64, device=points.device)
    for b in range(points.shape[0]):
        p = points[b, : int(lengths[b])]
        dist = torch.full((p.shape[0],), float("inf"), dtype=p.dtype, device=p.device)
        current = int(starts[b])
        for step in range(k):
            out[b, step] = current
            dist = torch.minimum(dist, _sq_dist(p, p[current]))
            current = int(torch.argmax(dist))  # first maximum: ties go to the lowest index
    return out


def knn(query, ref, q_lengths, r_lengths, k: int, chunk_elems: int = 1 << 24):
    b, m = query.shape[:2]
    dist2 = torch.full((b, m, k), float("inf"), dtype=query.dtype, device=query.device)
    idx = torch.full((b, m, k), -1, dtype=torch.int64, device=query.device)
    for i in range(b):
        q, r = query[i, : int(q_lengths[i])], ref[i, : int(r_lengths[i])]
        step = max(1, chunk_elems // max(1, r.shape[0]))
        for s in range(0, q.shape[0], step):
            d = _sq_dist(q[s : s + step, None, :], r[None, :, :])
            vals, ind = torch.topk(d, k, dim=1, largest=False, sorted=True)
            dist2[i, s : s + len(vals)], idx[i, s : s + len(vals)] = vals, ind
    return dist2, idx
