"""Plant one defect on a clean scan and label its points: the anomaly simulation of Anomaly-ShapeNet.

Each planter picks an anchor point on the surface and sizes the defect so that about `fraction` of
the points end up labelled (1-8 % by default). Lengths are relative to the defect's own footprint,
and so to the object's size. Kinds:
- bulge / dent: a smooth bump (quartic fall-off) along the mean normal of the patch, out or in;
  the moved points are labelled.
- hole: a disc of the surface removed; its rim (points within 1.3 x the disc radius) labelled.
- crack: a thin band along a chord of the surface removed; the band's rim labelled.
- cut: a piece sliced off by a plane; the points along the new edge labelled.
- concavity: a wide, flat-bottomed sink (a pressed-in area) with a smooth wall; the moved points labelled.
- broken: a chunk broken off an edge or corner (a ball around an extreme point of the part in a random
  direction, set slightly inside it, removed through every face it meets); the fracture rim labelled.
- scratch: a narrow groove along a chord of the surface, pressed in along the normals; the groove labelled.
- combo: two different defects of the kinds above in one scan; every point either labels stays labelled.
- contamination (coloured scans): a patch recoloured towards a foreign colour; the patch labelled.
"""

from __future__ import annotations

import numpy as np

from ad3d.types import Scan, diagonal

GEOMETRIC = ("bulge", "dent", "crack", "hole", "cut", "concavity", "broken", "scratch", "combo")
DEFECTS = GEOMETRIC + ("contamination",)
SINGLE = GEOMETRIC[:-1]  # the kinds a combination draws from


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


def _bump(scan, rng, fraction, sign, height=None):
    pts = scan.points.astype(np.float64)
    _, dist, radius = _anchor(pts, rng, fraction)
    weight = np.clip(1.0 - (dist / radius) ** 2, 0.0, 1.0) ** 2
    direction = _unit((surface_normals(scan)[weight > 0] * weight[weight > 0, None]).sum(0))
    height = sign * (rng.uniform(0.2, 0.4) * radius if height is None else rng.uniform(*height) * diagonal(pts))
    moved = pts + (height * weight)[:, None] * direction
    return None, moved, (weight > 0).astype(np.uint8), scan.colors, height


def _hole(scan, rng, fraction, height=None):
    pts = scan.points.astype(np.float64)
    _, dist, radius = _anchor(pts, rng, fraction)
    keep = dist >= radius
    return keep, pts[keep], (dist[keep] < 1.3 * radius).astype(np.uint8), None


def _crack(scan, rng, fraction, height=None):
    pts = scan.points.astype(np.float64)
    centre, _, radius = _anchor(pts, rng, 4 * fraction)
    normal = _unit(surface_normals(scan)[np.linalg.norm(pts - centre, axis=1) <= radius].mean(0))
    tangent = _unit(np.cross(normal, rng.normal(size=3)))
    along = np.clip((pts - centre) @ tangent, -radius, radius)
    off_chord = np.linalg.norm(pts - (centre + along[:, None] * tangent), axis=1)
    width = 0.12 * radius
    keep = off_chord >= width
    return keep, pts[keep], (off_chord[keep] < 2 * width).astype(np.uint8), None


def _cut(scan, rng, fraction, height=None):
    pts = scan.points.astype(np.float64)
    side = (pts - pts.mean(0)) @ _unit(rng.normal(size=3))
    removed_share = rng.uniform(0.05, 0.15)
    plane = np.quantile(side, 1.0 - removed_share)
    edge = np.quantile(side, max(0.0, 1.0 - removed_share - fraction))
    keep = side <= plane
    return keep, pts[keep], (side[keep] > edge).astype(np.uint8), None


def _concavity(scan, rng, fraction, height=None):
    pts = scan.points.astype(np.float64)
    _, dist, radius = _anchor(pts, rng, fraction)
    floor = rng.uniform(0.4, 0.7)  # the flat bottom's share of the radius
    ramp = np.clip((dist / radius - floor) / (1 - floor), 0.0, 1.0)
    weight = np.where(dist < radius, 0.5 * (1 + np.cos(np.pi * ramp)), 0.0)
    direction = _unit((surface_normals(scan)[weight > 0] * weight[weight > 0, None]).sum(0))
    depth = rng.uniform(0.08, 0.16) * radius if height is None else rng.uniform(*height) * diagonal(pts)
    moved = pts - (depth * weight)[:, None] * direction
    return None, moved, (weight > 0).astype(np.uint8), scan.colors, -depth


def _broken(scan, rng, fraction, height=None):
    pts = scan.points.astype(np.float64)
    centred = pts - pts.mean(0)
    corner = pts[np.argmax(centred @ _unit(rng.normal(size=3)))]  # an extreme point: on an edge or corner
    dist = np.linalg.norm(pts - corner, axis=1)
    radius = float(np.quantile(dist, fraction * rng.uniform(0.5, 0.8)))
    centre = corner - rng.uniform(0.1, 0.3) * radius * _unit(centred[np.argmin(dist)])
    dist = np.linalg.norm(pts - centre, axis=1)
    keep = dist >= radius
    return keep, pts[keep], (dist[keep] < 1.3 * radius).astype(np.uint8), None


def _scratch(scan, rng, fraction, height=None):
    pts = scan.points.astype(np.float64)
    centre, near, radius = _anchor(pts, rng, 6 * fraction)
    normals = surface_normals(scan)
    normal = _unit(normals[near <= radius].mean(0))
    tangent = _unit(np.cross(normal, rng.normal(size=3)))
    along = np.clip((pts - centre) @ tangent, -radius, radius)
    off_chord = np.linalg.norm(pts - (centre + along[:, None] * tangent), axis=1)
    width = max(float(np.quantile(off_chord, fraction / 3)), 1e-9)  # a thin groove: about a third of fraction
    profile = np.clip(1.0 - (off_chord / width) ** 2, 0.0, 1.0) * (np.abs(along) < radius)
    depth = rng.uniform(0.6, 1.2) * width if height is None else rng.uniform(*height) * diagonal(pts)
    moved = pts - (depth * profile)[:, None] * normals
    return None, moved, (profile > 0).astype(np.uint8), scan.colors, -depth * float(profile.max())


def _combo(scan, rng, fraction, height=None):
    first, second = rng.choice(len(SINGLE), size=2, replace=False)
    keep1, pts, labels1, colors, *_ = _PLANTERS[SINGLE[first]](scan, rng, fraction / 2, height)
    kept = scan.subset(keep1) if keep1 is not None else scan
    middle = kept.replace(points=pts, colors=colors if colors is not None else kept.colors)
    keep2, pts, labels2, colors, *_ = _PLANTERS[SINGLE[second]](middle, rng, fraction / 2, height)
    labels1 = labels1 if keep2 is None else labels1[keep2]
    if keep1 is None:
        keep = keep2
    elif keep2 is None:
        keep = keep1
    else:  # the second defect's kept points, as indices into the original scan
        keep = np.flatnonzero(keep1)[keep2]
    return keep, pts, labels1 | labels2, colors


def _contamination(scan, rng, fraction, height=None):
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
    "bulge": lambda s, r, f, h: _bump(s, r, f, +1.0, h),
    "dent": lambda s, r, f, h: _bump(s, r, f, -1.0, h),
    "hole": _hole,
    "crack": _crack,
    "cut": _cut,
    "concavity": _concavity,
    "broken": _broken,
    "scratch": _scratch,
    "combo": _combo,
    "contamination": _contamination,
}


def plant(
    scan: Scan,
    kind: str,
    seed=None,
    fraction: tuple[float, float] = (0.01, 0.08),
    height: tuple[float, float] | None = None,
) -> Scan:
    """A copy of `scan` with one defect of `kind` planted: label 1, per-point `labels`, `defect_type`.

    seed: an int or a numpy Generator; the same seed plants the same defect. fraction: the share of the
    points the defect covers (drawn from this range). height: for the kinds that move the surface (bulge,
    dent, concavity, scratch), the height or depth as a share of the part's size (bounding-box diagonal),
    drawn from this range; None: proportional to the defect's own radius (bold defects). The kinds that move
    the surface record the largest displacement they made, signed (a dent negative), in the scan's units, as
    meta["defect_height"].
    """
    if kind not in _PLANTERS:
        raise ValueError(f"unknown defect {kind!r}; expected one of {', '.join(DEFECTS)}")
    if len(scan) < 50:
        raise ValueError(f"a scan of {len(scan)} points is too small to plant a defect on")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    keep, points, labels, colors, *planted = _PLANTERS[kind](scan, rng, float(rng.uniform(*fraction)), height)
    if keep is not None and keep.dtype == bool:
        keep = np.flatnonzero(keep)
    take = (lambda a: None if a is None else a[keep]) if keep is not None else (lambda a: a)
    return Scan(
        points=points,
        normals=take(scan.normals),
        colors=colors if colors is not None else take(scan.colors),
        labels=labels,
        label=1,
        defect_type=kind,
        category=scan.category,
        units=scan.units,
        meta={"synthetic": True, **({"defect_height": float(planted[0])} if planted else {})},
    )
