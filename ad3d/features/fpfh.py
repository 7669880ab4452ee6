"""FPFH (Open3D) with normals oriented away from the centroid: the training-free point features."""

from __future__ import annotations

import numpy as np

from ad3d.types import diagonal


def fpfh(points: np.ndarray, radius: float, max_nn: int = 100) -> np.ndarray:
    """(N, 33) FPFH descriptors; normals from neighbours within radius/2, oriented outwards so that
    the same surface gives the same features in every scan."""
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64)))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=radius / 2, max_nn=30))
    normals = np.asarray(cloud.normals)
    outward = np.einsum("ij,ij->i", normals, points - points.mean(0)) < 0
    normals[outward] *= -1
    cloud.normals = o3d.utility.Vector3dVector(normals)
    feature = o3d.pipelines.registration.compute_fpfh_feature(
        cloud, o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=max_nn)
    )
    return np.asarray(feature.data, dtype=np.float32).T


class FPFHBackbone:
    """FPFH as a point backbone (training-free, no weights): the descriptors of `num_groups` evenly
    spread points, each centre's group being its `group_size` nearest points."""

    name = "fpfh"
    dim = 33

    def __init__(self, radius_fraction: float = 0.1, num_groups: int = 2048, group_size: int = 32):
        self.radius_fraction, self.num_groups, self.group_size = radius_fraction, num_groups, group_size

    def __call__(self, points: np.ndarray):
        from ad3d import ops
        from ad3d.features.base import PointFeatures

        points = np.asarray(points, dtype=np.float32)
        centres, groups = ops.group_points(points, self.num_groups, self.group_size)
        radius = self.radius_fraction * diagonal(points)
        return PointFeatures(points[centres], fpfh(points, radius)[centres], groups)

    def fingerprint(self) -> dict:
        return {"backbone": self.name, "sha256": None}
