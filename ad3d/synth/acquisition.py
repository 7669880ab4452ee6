"""What a real line adds to a clean scan: a slightly different pose every time, sensor noise, a point
count that varies, and (for single-view sensors) only the side the camera sees.

Each step keeps the per-point labels exact: noise and pose move points but never relabel them, and a
partial view keeps a subset of the points with their labels. Sizes are relative to the part's bounding
box diagonal, so one setting fits parts in metres and in millimetres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ad3d.errors import ConfigError
from ad3d.types import Scan, diagonal


@dataclass(frozen=True)
class Acquisition:
    """How each synthesised scan is acquired. `Acquisition.ideal()` turns every effect off.

    pose_degrees / pose_shift: rigid perturbation per scan, a rotation about a random axis through the
    centroid by up to pose_degrees, and a shift of up to pose_shift x the diagonal.
    noise: Gaussian sensor noise, sigma = noise x the diagonal, on every coordinate.
    density: point counts drawn uniformly within +-density of the requested count.
    partial: single-view test scans (hidden-point removal from a random viewpoint) where the layout
    has them (Real3D-AD: complete training prototypes, partial test scans).
    """

    pose_degrees: float = 5.0
    pose_shift: float = 0.01
    noise: float = 0.001
    density: float = 0.2
    partial: bool = True

    def __post_init__(self) -> None:
        for name in ("pose_degrees", "pose_shift", "noise", "density"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ConfigError(f"acquisition {name} must be a finite number >= 0, got {value!r}")
        if self.density >= 1:
            raise ConfigError(f"acquisition density must be below 1, got {self.density}")

    @classmethod
    def ideal(cls) -> Acquisition:
        return cls(pose_degrees=0.0, pose_shift=0.0, noise=0.0, density=0.0, partial=False)

    def point_count(self, points: int, rng: np.random.Generator) -> int:
        return max(1, int(round(points * rng.uniform(1 - self.density, 1 + self.density))))

    def finish(self, scan: Scan, rng: np.random.Generator) -> Scan:
        """Sensor noise, then the scan's pose (the last thing that happens to a scan)."""
        return perturb_pose(add_noise(scan, self.noise, rng), self.pose_degrees, self.pose_shift, rng)


def rotation_about(axis: np.ndarray, degrees: float) -> np.ndarray:
    """The 3x3 rotation by `degrees` about `axis` (Rodrigues)."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    a = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)


def rigid(scan: Scan, transform: np.ndarray) -> Scan:
    """The scan moved by a 4x4 rigid transform (points and normals); the transform is kept in meta."""
    rot, shift = transform[:3, :3], transform[:3, 3]
    points = scan.points.astype(np.float64) @ rot.T + shift
    normals = None if scan.normals is None else scan.normals.astype(np.float64) @ rot.T
    return scan.replace(points=points, normals=normals, meta={**scan.meta, "pose": transform.tolist()})


def perturb_pose(scan: Scan, degrees: float, shift: float, rng: np.random.Generator) -> Scan:
    """A random rigid motion: up to `degrees` about a random axis through the centroid, and a shift of
    up to `shift` x the diagonal in a random direction."""
    if degrees == 0 and shift == 0:
        return scan
    rot = rotation_about(rng.normal(size=3), rng.uniform(-degrees, degrees))
    centre = scan.points.mean(0, dtype=np.float64)
    direction = rng.normal(size=3)
    move = direction / np.linalg.norm(direction) * rng.uniform(0, shift) * diagonal(scan.points)
    transform = np.eye(4)
    transform[:3, :3] = rot
    transform[:3, 3] = centre - rot @ centre + move
    return rigid(scan, transform)


def add_noise(scan: Scan, sigma: float, rng: np.random.Generator) -> Scan:
    """Gaussian noise of sigma x the diagonal on every coordinate (labels unchanged)."""
    if sigma == 0:
        return scan
    noise = rng.normal(scale=sigma * diagonal(scan.points), size=scan.points.shape)
    return scan.replace(points=scan.points.astype(np.float64) + noise)


def visible_from(points: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Indices of the points seen from far along `direction` (Open3D's hidden-point removal)."""
    import open3d as o3d

    diag = diagonal(points)
    camera = points.mean(0) + 2.0 * diag * direction / np.linalg.norm(direction)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    _, visible = cloud.hidden_point_removal(camera, 100.0 * diag)
    return np.sort(np.asarray(visible, dtype=np.int64))


def partial_view(scan: Scan, rng: np.random.Generator, min_share: float = 0.5, tries: int = 20) -> Scan:
    """The part of the scan one camera sees from a random direction. For a defective scan the camera
    looks from the defect's side, and the view is redrawn until at least `min_share` of the labelled
    points stay visible, so the label still holds."""
    centre = scan.points.mean(0, dtype=np.float64)
    defective = scan.labels is not None and scan.labels.any()
    towards = (scan.points[scan.labels == 1].mean(0) - centre) if defective else None
    best = None
    for _ in range(tries):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        if towards is not None and np.linalg.norm(towards) > 0:
            direction = towards / np.linalg.norm(towards) + 0.7 * direction
        seen = visible_from(scan.points, direction)
        share = scan.labels[seen].sum() / scan.labels.sum() if defective else 1.0
        if best is None or share > best[0]:
            best = (share, seen)
        if share >= min_share:
            break
    return scan.subset(best[1])
