"""Mesh files (.obj .stl .off, and PLY meshes when sampling) via trimesh: vertices or surface samples."""

from __future__ import annotations

import numpy as np

from ad3d.io._common import check_readable, fail
from ad3d.types import Scan


def load_trimesh(path):
    """Load a file as one trimesh.Trimesh with duplicate vertices merged (STL stores 3 per face)."""
    import trimesh

    path = check_readable(path)
    try:
        mesh = trimesh.load(str(path), force="mesh", process=True)
    except Exception as e:  # trimesh raises many unrelated types on bad files
        raise fail(path, f"not a readable mesh ({type(e).__name__}: {e})") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.vertices) == 0:
        raise fail(path, "mesh holds no vertices")
    if not np.isfinite(mesh.vertices).all():
        raise fail(path, "mesh vertices hold NaN/inf coordinates")
    return mesh


def sample_surface(mesh, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` area-weighted random points on the mesh surface and the normals of their faces."""
    import trimesh

    if count < 1:
        raise ValueError(f"sample must be a positive number of points, got {count}")
    if len(mesh.faces) == 0 or mesh.area <= 0:
        raise ValueError("mesh has no faces with area to sample from")
    points, face_index = trimesh.sample.sample_surface(mesh, count, seed=seed)
    return np.asarray(points), np.asarray(mesh.face_normals[face_index])


def read_mesh(path, *, sample: int | None = None, seed: int = 0) -> Scan:
    """Mesh vertices (with vertex normals) as a Scan, or `sample` area-weighted surface points."""
    mesh = load_trimesh(path)
    meta = {"format": "mesh", "vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces))}
    if sample is None:
        normals = mesh.vertex_normals if len(mesh.faces) else None
        return Scan(points=mesh.vertices, normals=normals, path=str(path), meta=meta)
    try:
        points, normals = sample_surface(mesh, sample, seed)
    except ValueError as e:
        raise fail(path, str(e)) from None
    return Scan(points=points, normals=normals, path=str(path), meta={**meta, "sampled": int(sample)})
