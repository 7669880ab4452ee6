"""Farthest-point sampling: exact, batched, ragged; compiled kernel with a torch fallback."""

from __future__ import annotations

import numpy as np
import torch

from ad3d.ops import fallback
from ad3d.ops._checks import as_batch, as_lengths, check_finite, check_k
from ad3d.ops._ext import load_extension


def fps(
    points: torch.Tensor, k: int, lengths=None, start: str = "first", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices of k farthest-point samples per cloud, in the order the samples are taken.

    points (B, N, 3) or (N, 3), float; lengths (B,) true sizes of padded clouds.
    start: "first" begins at index 0, "random" at a uniform index drawn from `generator`.
    Exact: the same sequence as the naive O(N k) loop, ties broken by the lowest index.
    Returns int64 (B, k), or (k,) for a single cloud. Raises ValueError for an empty cloud,
    k larger than a cloud, or NaN/inf points.
    """
    batch, single = as_batch(points, "points")
    lens = as_lengths(lengths, batch, "lengths")
    k = check_k(k, lens, "fps")
    check_finite(batch, lens, "points")
    if start == "first":
        starts = torch.zeros_like(lens)
    elif start == "random":
        starts = (torch.rand(lens.shape, generator=generator, dtype=torch.float64) * lens).long().clamp_max(lens - 1)
    else:
        raise ValueError(f"start must be 'first' or 'random', got {start!r}")
    ext = load_extension()
    if ext is not None and (not batch.is_cuda or ext.with_cuda()):
        idx = ext.fps(batch, lens.to(batch.device), starts.to(batch.device), k)
    else:
        idx = fallback.fps(batch, lens, starts, k)
    return idx[0] if single else idx


def even_subset(points: np.ndarray, size: int) -> np.ndarray:
    """Indices of a farthest-point subset of at most `size` of `points` (numpy in, numpy out; every
    index, in order, when there are no more): an evenly spaced subset however the scan was sampled."""
    if len(points) <= size:
        return np.arange(len(points))
    return fps(torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)), size).numpy()


def group_points(
    points: np.ndarray, num_groups: int, group_size: int, centres: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Local groups, the unit of the group-based detectors (numpy in, numpy out): `num_groups` centres spread
    evenly over the cloud (`even_subset`; or the `centres` indices given) and each centre's `group_size`
    nearest points, itself first (fewer when the cloud is smaller). Returns (centres (G,), members (G, k))."""
    from ad3d.ops.neighbours import knn

    cloud = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    centres = even_subset(points, num_groups) if centres is None else np.asarray(centres)
    members = knn(cloud[torch.from_numpy(centres)], cloud, min(group_size, len(points)))[1]
    return centres, members.numpy()
