"""The nominal surface of a part, as metrology compares scans against it: oriented points sampled from the
part's CAD mesh, or fused from registered scans of good parts; signed point-to-surface distances (outward
positive) and a neighbourhood graph over the surface for averaging and for finding missing material."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ad3d.errors import ConfigError


@dataclass(frozen=True, eq=False)
class Nominal:
    """points (M, 3) on the surface; normals (M, 3), unit and outward; neighbours (M, k): each point's k
    nearest surface points, itself first."""

    points: np.ndarray
    normals: np.ndarray
    neighbours: np.ndarray

    @classmethod
    def from_points(cls, points: np.ndarray, normals: np.ndarray, k: int) -> Nominal:
        from scipy.spatial import cKDTree

        points = np.ascontiguousarray(points, dtype=np.float64)
        normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        neighbours = cKDTree(points).query(points, k=min(k, len(points)), workers=-1)[1]
        return cls(points, normals, neighbours.reshape(len(points), -1).astype(np.int64))

    @cached_property
    def tree(self):
        from scipy.spatial import cKDTree

        return cKDTree(self.points)

    @cached_property
    def spacing(self) -> float:
        """Median distance between neighbouring surface points."""
        return float(np.median(np.linalg.norm(self.points[self.neighbours[:, 1]] - self.points, axis=1)))

    @cached_property
    def area(self) -> float:
        """The surface's area, estimated from each point's share: pi r_k² / k, r_k its distance to its k-th
        nearest surface point (median over the surface)."""
        k = self.neighbours.shape[1] - 1
        far = np.linalg.norm(self.points[self.neighbours[:, -1]] - self.points, axis=1)
        return float(len(self.points) * np.pi * np.median(far) ** 2 / max(k, 1))

    def signed_distance(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(nearest surface point of each point, its signed distance to that point's tangent plane): outward
        positive, in the points' units; exact on flat faces, within spacing² / 8R on a curve of radius R."""
        points = np.asarray(points, dtype=np.float64)
        nearest = self.tree.query(points, workers=-1)[1]
        offset = points - self.points[nearest]
        return nearest, np.einsum("ij,ij->i", offset, self.normals[nearest])

    def average(self, values: np.ndarray) -> np.ndarray:
        """Each surface point's mean of `values` (one per surface point) over its neighbourhood."""
        return values[self.neighbours].mean(1)

    def local_means(self, nearest: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean of the values of the scan points falling in each surface point's neighbourhood, their
        count): the noise-averaged deviation field of one scan; NaN where no scan point falls."""
        m = len(self.points)
        sums = self.average(np.bincount(nearest, weights=values, minlength=m))
        counts = self.average(np.bincount(nearest, minlength=m).astype(np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / counts, np.nan), counts

    def gaps(self, covered: np.ndarray) -> np.ndarray:
        """Distance along the surface from each point to the nearest covered one (0 where covered): how far
        missing material reaches. No covered point at all: every gap is infinite."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import dijkstra

        if not covered.any():
            return np.full(len(self.points), np.inf)
        rows = np.repeat(np.arange(len(self.points)), self.neighbours.shape[1] - 1)
        cols = self.neighbours[:, 1:].reshape(-1)
        length = np.linalg.norm(self.points[rows] - self.points[cols], axis=1) + 1e-12
        graph = coo_matrix((length, (rows, cols)), shape=(len(self.points),) * 2).tocsr()
        return dijkstra(graph, directed=False, indices=np.flatnonzero(covered), min_only=True)

    def components(self, mask: np.ndarray) -> np.ndarray:
        """Connected-component label of each point in `mask` over the neighbourhood graph (-1 outside it)."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        rows = np.repeat(np.arange(len(self.points)), self.neighbours.shape[1])
        cols = self.neighbours.reshape(-1)
        inside = mask[rows] & mask[cols]
        graph = coo_matrix((np.ones(inside.sum()), (rows[inside], cols[inside])), shape=(len(self.points),) * 2)
        labels = connected_components(graph, directed=False)[1]
        return np.where(mask, labels, -1)


def check_reference(mesh, path: str):
    """The reference mesh made fit to measure against, or a clear error: a mesh without faces is refused; a
    closed mesh whose faces point inward is turned outward; an open one is kept with a warning (its face
    normals sign the deviations, and surface it lacks cannot be checked)."""
    if len(mesh.faces) == 0 or mesh.area <= 0:
        raise ConfigError(f"reference '{path}' has no faces with area: a nominal surface needs a mesh, not points")
    if mesh.is_watertight and mesh.volume < 0:
        mesh.invert()
    if not mesh.is_watertight:
        open_edges = int((np.bincount(mesh.edges_unique_inverse, minlength=len(mesh.edges_unique)) == 1).sum())
        warnings.warn(
            f"reference '{path}' is not watertight ({open_edges} open edges): deviations take their sign from its "
            f"face normals{'' if mesh.is_winding_consistent else ', which are not consistently wound'}, and "
            f"material missing where the mesh has no surface is not found",
            stacklevel=3,
        )
    return mesh


def check_units(reference_size: float, scan_size: float, path: str, tolerance: float = 3.0) -> None:
    """Refuse a reference whose size is far from the scans' (another part, or other units), naming the
    likely unit mix-up."""
    ratio = reference_size / max(scan_size, 1e-30)
    if 1 / tolerance <= ratio <= tolerance:
        return
    hints = {1000.0: "millimetres against metres", 25.4: "millimetres against inches", 10.0: "mm against cm"}
    near = [what for factor, what in hints.items() if abs(np.log(max(ratio, 1 / ratio) / factor)) < 0.25]
    raise ConfigError(
        f"reference '{path}' is {ratio:.3g}x the size of the scans ({reference_size:.4g} against {scan_size:.4g} "
        f"across): {'other units, ' + near[0] + '? ' if near else ''}rescale one of them, or give this part's mesh"
    )


def from_mesh(mesh, count: int, k: int, seed: int = 0) -> Nominal:
    """A nominal surface of `count` area-weighted samples of the mesh, with their faces' normals."""
    from ad3d.io import sample_surface

    points, normals = sample_surface(mesh, count, seed)
    return Nominal.from_points(points, normals, k)


def fuse(clouds: list[np.ndarray], normals: list[np.ndarray] | None, count: int, k: int, seed: int = 0) -> Nominal:
    """A nominal surface fused from registered scans of good parts: `count` evenly spread seeds, each moved
    to the mean of the scan points nearest it (noise averaged over every scan). Normals: the scans' own,
    averaged, when every scan has them; else estimated (PCA of k neighbours), made consistent across the
    surface (Open3D) and turned outward."""
    from scipy.spatial import cKDTree

    from ad3d.ops import even_subset

    union = np.concatenate(clouds).astype(np.float64)
    rng = np.random.default_rng(seed)
    pool = union[rng.choice(len(union), size=min(len(union), 8 * count), replace=False)]
    seeds = pool[even_subset(pool, count)]
    nearest = cKDTree(seeds).query(union, workers=-1)[1]
    counts = np.bincount(nearest, minlength=len(seeds))[:, None]
    keep = counts[:, 0] > 0

    def summed(values: np.ndarray) -> np.ndarray:
        return np.stack([np.bincount(nearest, values[:, j], len(seeds)) for j in range(3)], 1)[keep]

    points = summed(union) / counts[keep]
    if normals is not None:
        return Nominal.from_points(points, summed(np.concatenate(normals).astype(np.float64)), k)
    return Nominal.from_points(points, _outward_normals(points, k), k)


def _outward_normals(points: np.ndarray, k: int) -> np.ndarray:
    """PCA normals of k neighbours, oriented consistently over the surface (Open3D's tangent-plane
    propagation) and flipped as a whole to point away from the centroid on balance."""
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(k))
    cloud.orient_normals_consistent_tangent_plane(k)
    normals = np.asarray(cloud.normals)
    outward = np.einsum("ij,ij->i", normals, points - points.mean(0)).sum()
    return normals if outward >= 0 else -normals


def refine_pose(points: np.ndarray, nominal: Nominal, transform: np.ndarray, steps: int = 15) -> np.ndarray:
    """Point-to-plane ICP of the points onto the nominal surface from `transform` (4x4), each step's pairs
    trimmed to |distance| < 3 robust sigmas, so a defect does not pull the pose: the fine registration that
    a measurement in scan units needs after the coarse one."""
    from scipy.spatial.transform import Rotation

    transform = np.asarray(transform, dtype=np.float64)
    for _ in range(steps):
        moved = points @ transform[:3, :3].T + transform[:3, 3]
        nearest, dist = nominal.signed_distance(moved)
        limit = 3 * 1.4826 * float(np.median(np.abs(dist - np.median(dist)))) + 1e-12
        keep = np.abs(dist - np.median(dist)) <= max(limit, 0.1 * nominal.spacing)
        if keep.sum() < 6:
            break
        q, n, d = moved[keep], nominal.normals[nearest[keep]], dist[keep]
        centre = q.mean(0)  # rotate about the points' centre: a well-conditioned step
        step = np.linalg.lstsq(np.hstack([np.cross(q - centre, n), n]), -d, rcond=None)[0]
        rotation = Rotation.from_rotvec(step[:3]).as_matrix()
        update = np.eye(4)
        update[:3, :3], update[:3, 3] = rotation, centre - rotation @ centre + step[3:]
        transform = update @ transform
        if np.linalg.norm(step) < 1e-9 * max(1.0, nominal.spacing):
            break
    return transform
