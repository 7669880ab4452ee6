"""Defect regions: connected groups of points scored above a threshold, measured in scan units."""

from __future__ import annotations

import numpy as np

from ad3d.types import DefectRegion, diagonal

MAX_PAIRS = 20_000_000  # hot-point pairs within reach linked exactly; beyond, voxels of the reach link them


def _voxel_links(points: np.ndarray, reach: float) -> np.ndarray:
    """Pairs that join points sharing a voxel of side reach / sqrt(3) (so within reach of each other) or lying
    in voxels up to two apart along each axis (which holds every pair within reach, and some up to 3 x reach):
    the linking of extract_regions in memory linear in the points."""

    def key(cells: np.ndarray) -> np.ndarray:
        return (cells[:, 0] * 2_097_152 + cells[:, 1]) * 2_097_152 + cells[:, 2]

    cells = np.floor((points - points.min(0)) / (reach / np.sqrt(3))).astype(np.int64)
    unique, first, voxel = np.unique(key(cells), return_index=True, return_inverse=True)
    pairs = [np.column_stack([np.arange(len(points)), first[voxel]])]  # every point to its voxel's first point
    for offset in np.stack(np.meshgrid(*[[-2, -1, 0, 1, 2]] * 3), -1).reshape(-1, 3):
        wanted = key(cells[first] + offset)
        found = np.minimum(np.searchsorted(unique, wanted), len(unique) - 1)
        hit = unique[found] == wanted
        pairs.append(np.column_stack([first[hit], first[found[hit]]]))
    return np.concatenate(pairs)


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
    join: float = 0.5,
    deviations: np.ndarray | None = None,
) -> list[DefectRegion]:
    """Regions of points with score >= threshold, largest first. Points join when closer than `link` x the
    point spacing, or than `merge` x the part's diagonal (one defect scored in patches is one region);
    then two groups closer than `join` x the larger one's size are one region (the hot patches of one defect
    lie closer together than the defect is large; the gap between two defects is usually larger than they are);
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
    reach = max(link * spacing, merge * diagonal(points), 1e-12)
    tree = cKDTree(points[hot])
    if len(hot) <= MAX_PAIRS // 100 and tree.count_neighbors(tree, reach) <= MAX_PAIRS:
        pairs = tree.query_pairs(reach, output_type="ndarray")
    else:  # most of a large scan is hot (a wrong part?): all pairs within reach would not fit in memory
        pairs = _voxel_links(points[hot], reach)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(hot), len(hot)))
    _, comp = connected_components(graph, directed=False)
    comp = _join_parts_of_one_defect(points[hot], comp, join)
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


MAX_JOIN_GROUPS = 50  # more groups than this (a mostly hot scan): joining by size is skipped


def _join_parts_of_one_defect(hot_points: np.ndarray, comp: np.ndarray, join: float) -> np.ndarray:
    """Component labels with groups joined while the gap between two is under `join` x the larger one's bounding
    box diagonal (repeated: a joined group is larger and may reach the next)."""
    from itertools import combinations

    from scipy.spatial import cKDTree

    labels = np.unique(comp)
    if join <= 0 or not 1 < len(labels) <= MAX_JOIN_GROUPS:
        return comp
    members = {c: np.flatnonzero(comp == c) for c in labels}
    sizes = {c: diagonal(hot_points[m]) for c, m in members.items()}
    trees = {c: cKDTree(hot_points[m]) for c, m in members.items()}

    def close_pair() -> tuple | None:  # the first pair, largest groups first, close enough to be one defect
        for a, b in combinations(sorted(members, key=lambda c: -len(members[c])), 2):
            if trees[a].query(hot_points[members[b]], k=1)[0].min() < join * max(sizes[a], sizes[b]):
                return a, b
        return None

    while (pair := close_pair()) is not None:
        a, b = pair
        members[a] = np.concatenate([members[a], members.pop(b)])
        sizes[a], trees[a] = diagonal(hot_points[members[a]]), cKDTree(hot_points[members[a]])
        del sizes[b], trees[b]
    out = np.empty_like(comp)
    for label, m in enumerate(members.values()):
        out[m] = label
    return out
