"""Scan clean-up shared by loaders and detectors: background-plane removal, and alignment of a scan to
its part's reference (the first step of every metrology workflow)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ad3d.errors import ConfigError
from ad3d.types import Scan, diagonal


def background_plane_keep(
    scan: Scan,
    *,
    border: int = 10,
    distance_threshold: float = 0.004,
    ransac_n: int = 50,
    iterations: int = 1000,
    keep_distance: float = 0.005,
    cluster_eps: float | None = 0.006,
    cluster_min_points: int = 30,
    seed: int = 0,
) -> np.ndarray:
    """Indices of the points that survive the community's MVTec 3D-AD background removal.

    A plane is fitted by RANSAC (Open3D) to the valid points of the `border`-pixel frame of the
    organised grid; points within `keep_distance` of it are dropped; then, unless cluster_eps is None,
    only the largest DBSCAN cluster is kept. Defaults are the published ones, in metres.
    """
    import open3d as o3d

    if not scan.is_organised:
        raise ConfigError(
            f"'{scan.path or 'the scan'}': background-plane removal needs an organised scan "
            "(a grid of pixels, as MVTec 3D-AD's xyz tiffs)"
        )
    h, w = scan.grid_shape
    rows, cols = np.divmod(scan.grid_index, w)
    frame = (rows < border) | (rows >= h - border) | (cols < border) | (cols >= w - border)
    if frame.sum() < max(3, ransac_n):
        return np.arange(len(scan))  # no background visible in the frame: nothing to remove
    o3d.utility.random.seed(seed)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(scan.points[frame].astype(np.float64)))
    plane, _ = cloud.segment_plane(distance_threshold=distance_threshold, ransac_n=ransac_n, num_iterations=iterations)
    a, b, c, d = plane
    dist = np.abs(scan.points.astype(np.float64) @ np.array([a, b, c]) + d) / np.linalg.norm([a, b, c])
    keep = np.flatnonzero(dist >= keep_distance)
    if cluster_eps is None or len(keep) == 0:
        return keep
    rest = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(scan.points[keep].astype(np.float64)))
    labels = np.asarray(rest.cluster_dbscan(eps=cluster_eps, min_points=cluster_min_points))
    if (labels >= 0).sum() == 0:
        return keep
    largest = np.bincount(labels[labels >= 0]).argmax()
    return keep[labels == largest]


def remove_background_plane(scan: Scan, **params) -> Scan:
    """The scan without its background plane (see background_plane_keep for the parameters)."""
    return scan.subset(background_plane_keep(scan, **params))


@dataclass(frozen=True)
class Alignment:
    """A scan registered to its part's reference: `transform` (4x4) maps scan coordinates onto the
    reference. residual: median distance of the moved scan points to the reference, in reference point
    spacings (about 0.5 for a scan of the same part, noise-free); fitness: share of the scan within two
    spacings of the reference; ok: both within the limits `align` was given."""

    transform: np.ndarray
    residual: float
    fitness: float
    ok: bool

    def apply(self, points: np.ndarray) -> np.ndarray:
        return points.astype(np.float64) @ self.transform[:3, :3].T + self.transform[:3, 3]

    def rotate(self, vectors: np.ndarray) -> np.ndarray:
        return vectors.astype(np.float64) @ self.transform[:3, :3].T

    def as_dict(self) -> dict:
        return {"transform": self.transform.tolist(), "residual": self.residual, "fitness": self.fitness, "ok": self.ok}


def reference_cloud(points: np.ndarray, size: int = 4096) -> np.ndarray:
    """A part's reference for alignment: an even (farthest-point) subset of one of its scans, of at
    most half its points (so the subset is evenly spaced however the scan was sampled), float32. A scan
    of more than 64 x size points is strided to about 32 x size first (a million-point scan: 0.1 s, not 2)."""
    from ad3d.ops import even_subset

    if len(points) > 64 * size:
        points = points[:: len(points) // (32 * size)]
    return np.ascontiguousarray(points[even_subset(points, max(1, min(size, len(points) // 2)))], dtype=np.float32)


def _spacing(points: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    return float(np.median(cKDTree(points).query(points, k=2)[0][:, 1]))


def settle(
    points: np.ndarray, reference: np.ndarray, tree, transform: np.ndarray, distance: float, max_steps: int = 50
) -> np.ndarray:
    """Point-to-point ICP run until its matched pairs stop changing. The pose it returns is a function of
    those pairs alone, so registrations that start a hair apart (Open3D sums over threads in no fixed
    order, so its poses vary in the last digits with the thread count) end bit-identical."""
    from scipy.spatial.transform import Rotation

    pairs = None
    for _ in range(max_steps):
        moved = points @ transform[:3, :3].T + transform[:3, 3]
        dist, idx = tree.query(moved, distance_upper_bound=distance)
        keep = np.flatnonzero(np.isfinite(dist))
        if len(keep) < 3 or (
            pairs is not None and np.array_equal(keep, pairs[0]) and np.array_equal(idx[keep], pairs[1])
        ):
            break
        pairs = keep, idx[keep]
        a, b = reference[pairs[1]], points[keep]
        rotation = Rotation.align_vectors(a - a.mean(0), b - b.mean(0))[0].as_matrix()
        transform = np.eye(4)
        transform[:3, :3], transform[:3, 3] = rotation, a.mean(0) - rotation @ b.mean(0)
    return transform


def align(
    points: np.ndarray,
    reference: np.ndarray,
    *,
    sample: int = 2048,
    max_residual: float = 0.8,
    min_fitness: float = 0.85,
    seed: int = 0,
) -> Alignment:
    """Register a scan to its part's reference: coarse global registration (FPFH features matched by
    RANSAC, Open3D) and ICP (point-to-plane) refinement, started from both the RANSAC pose and the
    scan's own pose, the better fit kept. A scan of another part, or one that did not register, comes
    back with ok=False (residual above `max_residual` spacings or fitness below `min_fitness`).
    """
    import open3d as o3d
    from scipy.spatial import cKDTree

    from ad3d.features import fpfh

    reg = o3d.pipelines.registration
    ref = np.asarray(reference, dtype=np.float64)
    spacing = _spacing(ref)
    src = reference_cloud(points, sample).astype(np.float64)
    tgt = reference_cloud(reference, sample).astype(np.float64)
    radius = 0.1 * diagonal(ref)

    def cloud(xyz):
        c = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
        c.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=radius / 2, max_nn=30))
        return c

    def features(xyz):
        f = o3d.pipelines.registration.Feature()
        f.data = fpfh(xyz, radius).T.astype(np.float64)
        return f

    source, target = cloud(src), cloud(tgt)
    o3d.utility.random.seed(seed)
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):  # "too few correspondences"
        coarse = reg.registration_ransac_based_on_feature_matching(
            source,
            target,
            features(src),
            features(tgt),
            True,
            3 * spacing,
            reg.TransformationEstimationPointToPoint(False),
            3,
            [reg.CorrespondenceCheckerBasedOnEdgeLength(0.9), reg.CorrespondenceCheckerBasedOnDistance(3 * spacing)],
            reg.RANSACConvergenceCriteria(100000, 0.999),
        )
    tree = cKDTree(ref)

    def refine(start: np.ndarray) -> tuple[np.ndarray, float]:
        transform = start
        for distance in (6 * spacing, 2 * spacing):
            transform = reg.registration_icp(
                source,
                target,
                distance,
                transform,
                reg.TransformationEstimationPointToPlane(),
                reg.ICPConvergenceCriteria(max_iteration=50),
            ).transformation
        moved = src @ transform[:3, :3].T + transform[:3, 3]
        return transform, float(np.median(tree.query(moved)[0]))

    transform, _ = min(
        (refine(start) for start in (np.eye(4), np.asarray(coarse.transformation))), key=lambda fit: fit[1]
    )
    transform = settle(src, ref, tree, transform, 2 * spacing)
    moved = np.asarray(points, dtype=np.float64) @ transform[:3, :3].T + transform[:3, 3]
    dist = tree.query(moved)[0] / spacing
    residual, fitness = float(np.median(dist)), float(np.mean(dist <= 2.0))
    return Alignment(np.asarray(transform), residual, fitness, residual <= max_residual and fitness >= min_fitness)
