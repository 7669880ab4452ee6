"""Defect regions: connected groups of points scored above a threshold, measured in scan units."""

from __future__ import annotations

import numpy as np

from ad3d.types import DefectRegion


def point_spacing(points: np.ndarray, sample: int = 20000) -> float:
    """Median distance from a point to its nearest neighbour, over at most `sample` evenly strided
    points (a 5M-point scan in about a second, not half a minute; the same points every time)."""
    import torch

    from ad3d import ops

    if len(points) < 2:
        return 0.0
    pts = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    probe = pts[np.unique(np.linspace(0, len(points) - 1, min(sample, len(points))).astype(np.int64))]
    dist2 = ops.knn(probe, pts, 2)[0][:, 1]
    return float(np.median(dist2.clamp_min(0).sqrt().numpy()))


def extract_regions(
    points: np.ndarray, scores: np.ndarray, threshold: float, *, min_points: int = 3, link: float = 2.5
) -> list[DefectRegion]:
    """Regions of points with score >= threshold, joined when closer than `link` x the point spacing.

    Largest first. area is a surface estimate: points x spacing².
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    hot = np.flatnonzero(scores >= threshold)
    if len(hot) < min_points:
        return []
    spacing = point_spacing(points)
    pairs = cKDTree(points[hot]).query_pairs(max(link * spacing, 1e-12), output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(hot), len(hot)))
    _, comp = connected_components(graph, directed=False)
    regions = []
    for c in np.unique(comp):
        idx = hot[comp == c]
        if len(idx) < min_points:
            continue
        pts = points[idx]
        lo, hi = pts.min(0), pts.max(0)
        regions.append(
            DefectRegion(
                indices=idx,
                centroid=pts.mean(0),
                bbox_min=lo,
                bbox_max=hi,
                extent=hi - lo,
                area=float(len(idx) * spacing**2),
                max_score=float(scores[idx].max()),
            )
        )
    return sorted(regions, key=lambda r: -len(r.indices))
