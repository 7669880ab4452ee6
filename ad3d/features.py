"""Hand-crafted point features: FPFH (Open3D) with normals oriented away from the centroid."""

from __future__ import annotations

import numpy as np


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
        cloud, o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=max_nn))
    return np.asarray(feature.data, dtype=np.float32).T
