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


def peak_deviation(points: np.ndarray, deviations: np.ndarray, k: int = 16) -> float:
    """A region's largest departure from the nominal surface, signed: the extreme of its points' deviations
    averaged over each point's k nearest region points (sensor noise averaged, the peak barely flattened
    when the region holds many more than k points)."""
    from scipy.spatial import cKDTree

    near = cKDTree(points).query(points, k=min(k, len(points)))[1].reshape(len(points), -1)
    local = deviations[near].mean(1)
    return float(local[np.abs(local).argmax()])


def extract_regions(
    points: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    *,
    min_points: int = 3,
    link: float = 2.5,
    merge: float = 0.03,
    min_share: float = 0.0025,
    deviations: np.ndarray | None = None,
) -> list[DefectRegion]:
    """Regions of points with score >= threshold, largest first. Points join when closer than `link` x the
    point spacing, or than `merge` x the part's diagonal (one defect scored in patches is one region);
    regions under `min_share` of the scan's surface (and under `min_points` points) are dropped as specks.
    area is a surface estimate: points x spacing²; the defaults make 4,096-point scans keep regions of 10
    points or more, and join hot points less than 3 % of the part's size apart. With `deviations` (signed, per
    point, scan units) each region carries its peak_deviation as max_deviation.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    hot = np.flatnonzero(scores >= threshold)
    if len(hot) < min_points:
        return []
    spacing = point_spacing(points)
    diagonal = float(np.linalg.norm(np.ptp(points, axis=0)))
    reach = max(link * spacing, merge * diagonal, 1e-12)
    pairs = cKDTree(points[hot]).query_pairs(reach, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(hot), len(hot)))
    _, comp = connected_components(graph, directed=False)
    smallest = max(min_points, int(np.ceil(min_share * len(points))))
    regions = []
    for c in np.unique(comp):
        idx = hot[comp == c]
        if len(idx) < smallest:
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
                max_deviation=None if deviations is None else peak_deviation(pts, deviations[idx]),
            )
        )
    return sorted(regions, key=lambda r: -len(r.indices))
