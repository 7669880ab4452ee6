"""Pseudo-anomalies for training on normal scans only: R3D-AD's Patch-Gen, MC4AD's DA-Gen, a plain
normal-direction bulge (PO3AD's Norm-AS shape) for ablations, and ad3d's missing-material patch.

Each generator takes one cloud in a unit-sized frame and a numpy Generator, draws all its random
parameters from that generator (so every sample differs; MC4AD's release draws sigma and lambda once
per process), and returns (displaced points, per-point displacement, mask of moved points).
"""

from __future__ import annotations

import numpy as np

VIEWPOINTS = np.array(
    [(x, y, z) for x in (-2, 0, 2) for y in (-2, 0, 2) for z in (-2, 0, 2) if (x, y, z) != (0, 0, 0)], dtype=np.float64
)


def _unit_rows(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _displaced(points: np.ndarray, idx: np.ndarray, moves: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points with rows idx moved by moves, the per-point displacement, mask of the moved points), in the
    points' dtype; the sum is taken in float64."""
    offset = np.zeros((len(points), 3))
    offset[idx] = moves
    mask = np.zeros(len(points), dtype=bool)
    mask[idx] = True
    return (points.astype(np.float64) + offset).astype(points.dtype), offset.astype(points.dtype), mask


def patch_gen(
    points: np.ndarray, rng: np.random.Generator, patch_fraction: float = 1 / 16, scale: float = 0.05
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R3D-AD's Patch-Gen: the points nearest one of 26 viewpoints on {-2,0,2}^3 (the surface patch facing
    it) move along the viewpoint->point direction by +-scale x a magnitude in [0, 1) that is largest at
    the point closest to the viewpoint and falls off with proximity rank (sorted uniform draws).
    +scale pushes the patch away from the viewpoint (a dent), -scale towards it (a bulge)."""
    pts = points.astype(np.float64)
    view = VIEWPOINTS[rng.integers(len(VIEWPOINTS))]
    n = max(1, round(patch_fraction * len(pts)))
    order = np.argsort(np.linalg.norm(pts - view, axis=1), kind="stable")[:n]
    magnitude = np.sort(rng.uniform(0.0, 1.0, n))[::-1]
    sign = rng.choice([-1.0, 1.0])
    return _displaced(points, order, _unit_rows(pts[order] - view) * (sign * scale * magnitude)[:, None])


def sphere_crop(points: np.ndarray, rng: np.random.Generator, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """A patch grown around a random seed point: its `fraction` x N nearest points. Returns (indices, seed)."""
    seed = points[rng.integers(len(points))]
    n = max(1, round(fraction * len(points)))
    return np.argsort(np.linalg.norm(points - seed, axis=1), kind="stable")[:n], seed


def da_gen(
    points: np.ndarray,
    normals: np.ndarray,
    rng: np.random.Generator,
    region: tuple[float, float] = (1 / 64, 1 / 16),
    magnitude: tuple[float, float] = (0.06, 0.12),
    sigma: tuple[float, float] = (0.0, 0.08),
    blend: tuple[float, float] = (0.95, 1.0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MC4AD's DA-Gen, as its code writes it, with every parameter drawn per sample.

    A sphere-crop patch around seed c; a random unit direction eta; t_i = (p_i - c).eta scaled to
    [-1, 1]; attenuation a_i = 1 - sigma |t_i|; direction u_i = unit(lambda n_i + (1 - lambda) eta);
    displacement = beta D t_i a_i u_i with beta = +-1, D ~ U(magnitude). The signed t makes the two
    halves of the patch move in opposite directions (a shear/twist), so |displacement| <= D.
    """
    pts = points.astype(np.float64)
    idx, seed = sphere_crop(pts, rng, rng.uniform(*region))
    eta = rng.normal(size=3)
    s, lam = rng.uniform(*sigma), rng.uniform(*blend)
    size = rng.choice([-1.0, 1.0]) * rng.uniform(*magnitude)
    return _displaced(points, idx, _da_moves(pts[idx] - seed, normals[idx], eta, size, s, lam))


def _da_moves(
    offsets: np.ndarray, normals: np.ndarray, eta: np.ndarray, size: float, sigma: float, blend: float
) -> np.ndarray:
    """DA-Gen's displacement of a patch, given each point's offset from the seed and every draw: the signed
    projection t on unit(eta) scaled to [-1, 1], attenuated by 1 - sigma |t|, along unit(blend n + (1 -
    blend) eta), times size (sign included)."""
    eta = eta / np.linalg.norm(eta)
    t = offsets @ eta
    t = t / max(float(np.abs(t).max()), 1e-12)
    direction = _unit_rows(blend * normals.astype(np.float64) + (1 - blend) * eta)
    return (size * t * (1 - sigma * np.abs(t)))[:, None] * direction


def sphere_parts(points: np.ndarray, rng: np.random.Generator, parts: int, last: int) -> tuple[np.ndarray, np.ndarray]:
    """MC4AD's crops (`datasets/AnomalyShapeNet/transform.py: SphereCropMask`): parts of N // parts points,
    each the unassigned points nearest a random unassigned seed, grown in turn; parts 0..last are grown
    (the later ones cannot change them). Returns (indices of part `last`, its seed)."""
    size = len(points) // parts
    free = np.ones(len(points), dtype=bool)
    for _ in range(last + 1):
        unassigned = np.flatnonzero(free)
        seed = points[unassigned[rng.integers(len(unassigned))]]
        part = unassigned[np.argsort(((points[unassigned] - seed) ** 2).sum(1), kind="stable")[:size]]
        free[part] = False
    return part, seed


def da_gen_release(
    points: np.ndarray,
    normals: np.ndarray,
    rng: np.random.Generator,
    sigma: float,
    blend: float,
    parts: int = 64,
    magnitude: tuple[float, float] = (0.06, 0.12),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MC4AD's DA-Gen as its release runs it (`dataset_preprocess.py: trainMerge, generate_pseudo_anomaly`):
    one of the first parts / 2 of the release's sphere crops (`sphere_parts`) moves, D ~ U(magnitude) per
    sample, while sigma and lambda (`blend`) are the caller's: the release draws them once per process, as
    default arguments. The displacement is `da_gen`'s, about the part's seed."""
    pts = points.astype(np.float64)
    idx, seed = sphere_parts(pts, rng, parts, int(rng.integers(parts // 2)))
    size = rng.uniform(*magnitude)
    eta = rng.normal(size=3)
    size *= rng.choice([-1.0, 1.0])
    return _displaced(points, idx, _da_moves(pts[idx] - seed, normals[idx], eta, size, sigma, blend))


def plain_bulge(
    points: np.ndarray,
    normals: np.ndarray,
    rng: np.random.Generator,
    region: tuple[float, float] = (1 / 64, 1 / 16),
    magnitude: tuple[float, float] = (0.06, 0.12),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bump along each point's normal, height falling linearly from the patch seed to its rim, random
    sign (PO3AD's Norm-AS shape with the signed normal): the ablation baseline for DA-Gen."""
    pts = points.astype(np.float64)
    idx, seed = sphere_crop(pts, rng, rng.uniform(*region))
    d = np.linalg.norm(pts[idx] - seed, axis=1)
    ratio = 1 - d / max(float(d.max()), 1e-12)
    size = rng.choice([-1.0, 1.0]) * rng.uniform(*magnitude)
    return _displaced(points, idx, (size * ratio)[:, None] * _unit_rows(normals[idx].astype(np.float64)))


def missing_material(
    points: np.ndarray,
    normals: np.ndarray,
    rng: np.random.Generator,
    region: tuple[float, float] = (1 / 64, 1 / 16),
    magnitude: tuple[float, float] = (0.06, 0.12),
    rim: tuple[float, float] = (1.2, 1.6),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ad3d's extension (not in MC4AD): a sphere-crop patch of material goes missing (a hole, crack or
    break), a defect no displacement can make. The patch's points are resampled elsewhere on the surface
    (midpoints towards a random one of 8 nearest kept points), so the cloud keeps its size. Rim points
    (within rim x the patch radius of its seed) get a correction pulling them across the gap: the
    tangential direction to the seed, size D falling linearly to 0 at the rim's edge.

    Returns (points, correction, rim mask, source): `source[i]` is the point whose normal point i now has.
    """
    from scipy.spatial import cKDTree

    pts = points.astype(np.float64)
    idx, seed = sphere_crop(pts, rng, rng.uniform(*region))
    gone = np.zeros(len(pts), dtype=bool)
    gone[idx] = True
    kept = np.flatnonzero(~gone)
    source = np.arange(len(pts))
    if len(kept) < 2:
        return points.copy(), np.zeros_like(points), np.zeros(len(pts), dtype=bool), source
    radius = max(float(np.linalg.norm(pts[idx] - seed, axis=1).max()), 1e-12)
    source[idx] = kept[rng.integers(len(kept), size=len(idx))]
    _, near = cKDTree(pts[kept]).query(pts[source[idx]], k=min(9, len(kept)))
    partner = kept[near[np.arange(len(idx)), rng.integers(1, near.shape[1], size=len(idx))]]
    share = rng.uniform(0.0, 0.5, size=(len(idx), 1))
    moved = pts.copy()
    moved[idx] = (1 - share) * pts[source[idx]] + share * pts[partner]
    dist = np.linalg.norm(pts - seed, axis=1)
    outer = rng.uniform(*rim) * radius
    ring = ~gone & (dist < outer)
    n = _unit_rows(normals[ring].astype(np.float64))
    towards = seed - pts[ring]
    tangential = _unit_rows(towards - (towards * n).sum(1, keepdims=True) * n)
    size = rng.uniform(*magnitude) * np.clip((outer - dist[ring]) / (outer - radius), 0.0, 1.0)
    correction = np.zeros_like(pts)
    correction[ring] = tangential * size[:, None]
    return moved.astype(points.dtype), correction.astype(points.dtype), ring, source


GENERATORS = {"da-gen": da_gen, "da-gen-release": da_gen_release, "bulge": plain_bulge}
