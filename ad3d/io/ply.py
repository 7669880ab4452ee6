"""PLY reader and writer (plyfile): point clouds or meshes, with every per-vertex property kept."""

from __future__ import annotations

import numpy as np

from ad3d.io._common import atomic_output, check_readable, fail, split_invalid
from ad3d.types import Scan

_COLOUR_NAMES = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))
_SIZES = {
    "char": 1,
    "uchar": 1,
    "int8": 1,
    "uint8": 1,
    "short": 2,
    "ushort": 2,
    "int16": 2,
    "uint16": 2,
    "int": 4,
    "uint": 4,
    "int32": 4,
    "uint32": 4,
    "float": 4,
    "float32": 4,
    "double": 8,
    "float64": 8,
}


def check_counts(path, max_header: int = 65536) -> None:
    """Refuse a header whose element counts the file cannot hold, before anything is allocated: each
    binary row needs its scalar properties' bytes, each ascii row at least two characters a property."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(max_header)
    end = head.find(b"end_header")
    if end < 0:
        return  # plyfile says what is wrong with the header
    body = size - (head.find(b"\n", end) + 1)
    fmt, elements = "", []
    for line in head[:end].decode("ascii", "replace").splitlines():
        words = line.split()
        if words[:1] == ["format"] and len(words) > 1:
            fmt = words[1]
        elif words[:1] == ["element"] and len(words) == 3 and words[2].isdigit():
            elements.append([words[1], int(words[2]), 0, 0])
        elif words[:1] == ["property"] and elements:
            row = elements[-1]
            row[3] += 1
            row[2] += _SIZES.get(words[2], 1) if words[1:2] == ["list"] else _SIZES.get(words[1], 1)
    need = sum(
        count * (min_bytes if fmt.startswith("binary") else 2 * props) for _, count, min_bytes, props in elements
    )
    if need > body:
        name, count = max(elements, key=lambda e: e[1])[:2]
        raise fail(
            path,
            f"malformed or truncated PLY: header claims {count} {name} rows, more than the {body} "
            "bytes after the header can hold",
        )


def read_ply(path, *, remove_invalid: bool = True, sample: int | None = None, seed: int = 0) -> Scan:
    """Read the vertices of a PLY file (points, normals, colours, scalar properties).

    With `sample=N` and a face element, N area-weighted surface points are drawn instead (see mesh.py).
    """
    from plyfile import PlyData, PlyParseError

    path = check_readable(path)
    if sample is not None:
        from ad3d.io.mesh import read_mesh

        return read_mesh(path, sample=sample, seed=seed)
    check_counts(path)
    try:
        ply = PlyData.read(str(path))
    except (PlyParseError, ValueError, EOFError, IndexError, KeyError, UnicodeDecodeError) as e:
        raise fail(path, f"malformed or truncated PLY ({e})") from None
    if "vertex" not in ply:
        raise fail(path, "PLY has no vertex element")
    v = ply["vertex"].data
    names = v.dtype.names or ()
    if not {"x", "y", "z"} <= set(names):
        raise fail(path, f"PLY vertices have no x y z properties (properties: {' '.join(names)})")
    with np.errstate(invalid="ignore"):  # widening a signalling NaN warns; NaNs are dealt with below
        points = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64)
    valid = split_invalid(path, points, remove_invalid)
    used = {"x", "y", "z"}
    normals = None
    if {"nx", "ny", "nz"} <= set(names):
        normals = np.stack([v["nx"], v["ny"], v["nz"]], axis=1)[valid]
        used |= {"nx", "ny", "nz"}
    colors = None
    for trio in _COLOUR_NAMES:
        if set(trio) <= set(names):
            colors = np.stack([v[c] for c in trio], axis=1)
            if colors.dtype.kind == "f":  # float colours are in [0, 1]
                colors = np.clip(colors * 255.0 + 0.5, 0, 255)
            colors = colors.astype(np.uint8)[valid]
            used |= set(trio)
            break
    fields = {n: np.asarray(v[n])[valid] for n in names if n not in used and v[n].dtype != object}
    return Scan(
        points=points[valid],
        normals=normals,
        colors=colors,
        fields=fields,
        path=str(path),
        meta={
            "format": "ply",
            "invalid_points": int((~valid).sum()),
            "faces": int(ply["face"].count) if "face" in ply else 0,
        },
    )


def write_ply(path, scan: Scan, scalars: dict[str, np.ndarray] | None = None) -> None:
    """Write a binary little-endian PLY point cloud with normals, colours and one float per scalar."""
    from plyfile import PlyData, PlyElement

    cols = [("x", "<f4", scan.points[:, 0]), ("y", "<f4", scan.points[:, 1]), ("z", "<f4", scan.points[:, 2])]
    if scan.normals is not None:
        cols += [(n, "<f4", scan.normals[:, i]) for i, n in enumerate(("nx", "ny", "nz"))]
    if scan.colors is not None:
        cols += [(n, "u1", scan.colors[:, i]) for i, n in enumerate(("red", "green", "blue"))]
    if scan.labels is not None:
        cols.append(("label", "u1", scan.labels))
    for name, values in (scalars or {}).items():
        values = np.asarray(values, dtype=np.float32)
        if values.shape != (len(scan),):
            raise ValueError(f"scalar {name!r} has shape {values.shape}, expected ({len(scan)},)")
        cols.append((name, "<f4", values))
    rec = np.empty(len(scan), dtype=[(n, t) for n, t, _ in cols])
    for n, _, vals in cols:
        rec[n] = vals
    with atomic_output(path) as tmp:
        PlyData([PlyElement.describe(rec, "vertex")], text=False, byte_order="<").write(str(tmp))
