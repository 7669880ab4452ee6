"""Plant one defect on a clean scan and label its points: the anomaly simulation of Anomaly-ShapeNet.

Each planter picks an anchor point on the surface and sizes the defect so that about `fraction` of
the points end up labelled (1-8 % by default). Lengths are relative to the defect's own footprint,
and so to the object's size. Kinds:
- bulge / dent: a smooth bump (quartic fall-off) along the mean normal of the patch, out or in;
  the moved points are labelled.
- hole: a disc of the surface removed; its rim (points within 1.3 x the disc radius) labelled.
- crack: a thin band along a chord of the surface removed; the band's rim labelled.
- cut: a piece sliced off by a plane; the points along the new edge labelled.
- contamination (coloured scans): a patch recoloured towards a foreign colour; the patch labelled.
"""

from __future__ import annotations

import numpy as np

from ad3d.types import Scan

GEOMETRIC = ("bulge", "dent", "crack", "hole", "cut")
DEFECTS = GEOMETRIC + ("contamination",)


def surface_normals(scan: Scan, k: int = 16) -> np.ndarray:
    """The scan's normals, or ones estimated from k neighbours and turned away from the centroid."""
    if scan.normals is not None:
        return scan.normals.astype(np.float64)
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(scan.points.astype(np.float64)))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(k))
    normals = np.asarray(cloud.normals)
    outward = np.sign(np.einsum("ij,ij->i", normals, scan.points - scan.points.mean(0)))
    return normals * np.where(outward == 0, 1, outward)[:, None]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _anchor(points: np.ndarray, rng: np.random.Generator, fraction: float):
    """A random anchor, every point's distance to it, and the radius holding `fraction` of the points."""
    centre = points[rng.integers(len(points))]
    dist = np.linalg.norm(points - centre, axis=1)
    return centre, dist, float(np.quantile(dist, fraction))


def _bump(scan, rng, fraction, sign):
    pts = scan.points.astype(np.float64)
    _, dist, radius = _anchor(pts, rng, fraction)
    weight = np.clip(1.0 - (dist / radius) ** 2, 0.0, 1.0) ** 2
    direction = _unit((surface_normals(scan)[weight > 0] * weight[weight > 0, None]).sum(0))
    height = sign * rng.uniform(0.2, 0.4) * radius
    moved = pts + (height * weight)[:, None] * direction
    return None, moved, (weight > 0.05).astype(np.uint8), scan.colors


def _hole(scan, rng, fraction):
    pts = scan.points.astype(np.float64)
    _, dist, radius = _anchor(pts, rng, fraction)
    keep = dist >= radius
    return keep, pts[keep], (dist[keep] < 1.3 * radius).astype(np.uint8), None


def _crack(scan, rng, fraction):
    pts = scan.points.astype(np.float64)
    centre, _, radius = _anchor(pts, rng, 4 * fraction)
    normal = _unit(surface_normals(scan)[np.linalg.norm(pts - centre, axis=1) <= radius].mean(0))
    tangent = _unit(np.cross(normal, rng.normal(size=3)))
    along = np.clip((pts - centre) @ tangent, -radius, radius)
    off_chord = np.linalg.norm(pts - (centre + along[:, None] * tangent), axis=1)
    width = 0.12 * radius
    keep = off_chord >= width
    return keep, pts[keep], (off_chord[keep] < 2 * width).astype(np.uint8), None


def _cut(scan, rng, fraction):
    pts = scan.points.astype(np.float64)
    side = (pts - pts.mean(0)) @ _unit(rng.normal(size=3))
    removed_share = rng.uniform(0.05, 0.15)
    plane = np.quantile(side, 1.0 - removed_share)
    edge = np.quantile(side, max(0.0, 1.0 - removed_share - fraction))
    keep = side <= plane
    return keep, pts[keep], (side[keep] > edge).astype(np.uint8), None


def _contamination(scan, rng, fraction):
    if scan.colors is None:
        raise ValueError("contamination needs a scan with colours")
    pts = scan.points.astype(np.float64)
    _, dist, radius = _anchor(pts, rng, fraction)
    patch = dist <= radius
    stain = rng.integers(0, 256, 3)
    alpha = rng.uniform(0.6, 0.9)
    colors = scan.colors.astype(np.float64)
    colors[patch] = (1 - alpha) * colors[patch] + alpha * stain
    return None, pts, patch.astype(np.uint8), np.clip(np.round(colors), 0, 255).astype(np.uint8)


_PLANTERS = {
    "bulge": lambda s, r, f: _bump(s, r, f, +1.0),
    "dent": lambda s, r, f: _bump(s, r, f, -1.0),
    "hole": _hole,
    "crack": _crack,
    "cut": _cut,
    "contamination": _contamination,
}


def plant(scan: Scan, kind: str, seed=None, fraction: tuple[float, float] = (0.01, 0.08)) -> Scan:
    """A copy of `scan` with one defect of `kind` planted: label 1, per-point `labels`, `defect_type`.

    seed: an int or a numpy Generator; the same seed plants the same defect.
    """
    if kind not in _PLANTERS:
        raise ValueError(f"unknown defect {kind!r}; expected one of {', '.join(DEFECTS)}")
    if len(scan) < 50:
        raise ValueError(f"a scan of {len(scan)} points is too small to plant a defect on")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    keep, points, labels, colors = _PLANTERS[kind](scan, rng, float(rng.uniform(*fraction)))
    take = (lambda a: None if a is None else a[keep]) if keep is not None else (lambda a: a)
    return Scan(points=points, normals=take(scan.normals), colors=colors if colors is not None else take(scan.colors),
                labels=labels, label=1, defect_type=kind, category=scan.category, units=scan.units,
                meta={"synthetic": True})
