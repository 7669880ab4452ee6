"""Scan clean-up shared by loaders and detectors: background-plane removal, unit-sphere normalisation."""

from __future__ import annotations

import numpy as np

from ad3d.types import Scan


def background_plane_keep(scan: Scan, *, border: int = 10, distance_threshold: float = 0.004,
                          ransac_n: int = 50, iterations: int = 1000, keep_distance: float = 0.005,
                          cluster_eps: float | None = 0.006, cluster_min_points: int = 30,
                          seed: int = 0) -> np.ndarray:
    """Indices of the points that survive the community's MVTec 3D-AD background removal.

    A plane is fitted by RANSAC (Open3D) to the valid points of the `border`-pixel frame of the
    organised grid; points within `keep_distance` of it are dropped; then, unless cluster_eps is None,
    only the largest DBSCAN cluster is kept. Defaults are the published ones, in metres.
    """
    import open3d as o3d

    if not scan.is_organised:
        raise ValueError("background-plane removal needs an organised scan (a grid of pixels)")
    h, w = scan.grid_shape
    rows, cols = np.divmod(scan.grid_index, w)
    frame = (rows < border) | (rows >= h - border) | (cols < border) | (cols >= w - border)
    if frame.sum() < max(3, ransac_n):
        return np.arange(len(scan))  # no background visible in the frame: nothing to remove
    o3d.utility.random.seed(seed)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(scan.points[frame].astype(np.float64)))
    plane, _ = cloud.segment_plane(distance_threshold=distance_threshold, ransac_n=ransac_n,
                                   num_iterations=iterations)
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


def normalise(scan: Scan) -> tuple[Scan, np.ndarray, float]:
    """Centre on the centroid and scale into the unit sphere; returns (scan, centre, scale)."""
    centre = scan.points.mean(axis=0, dtype=np.float64)
    scale = float(np.linalg.norm(scan.points - centre, axis=1).max()) or 1.0
    return scan.replace(points=(scan.points - centre) / scale, units="unit"), centre, scale
