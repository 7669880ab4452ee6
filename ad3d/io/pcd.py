"""PCD (PCL's Point Cloud Data) reader and writer: ascii, binary and binary_compressed bodies.

The header is checked against the body size before any array is allocated, so a truncated or
inconsistent file fails with a message that names the field and the expected vs found size.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ad3d.io._common import atomic_output, check_readable, fail, pack_rgb, split_invalid, unpack_rgb
from ad3d.types import Scan

_TYPES = {
    ("F", 4): "<f4",
    ("F", 8): "<f8",
    ("U", 1): "<u1",
    ("U", 2): "<u2",
    ("U", 4): "<u4",
    ("U", 8): "<u8",
    ("I", 1): "<i1",
    ("I", 2): "<i2",
    ("I", 4): "<i4",
    ("I", 8): "<i8",
}
_KEYS = ("VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS", "DATA")
_MAX_HEADER_BYTES = 1 << 16


def _parse_header(path: Path, raw: bytes) -> tuple[dict, int]:
    """Parse the ASCII header; return its entries and the byte offset where the body starts."""
    header: dict[str, list[str]] = {}
    pos = 0
    while True:
        end = raw.find(b"\n", pos)
        if end < 0 or pos > _MAX_HEADER_BYTES:
            raise fail(path, "no DATA line in the PCD header (not a PCD file, or header truncated)")
        line_bytes = raw[pos:end]
        try:
            line = line_bytes.decode("ascii").strip()
        except UnicodeDecodeError as e:
            bad = line_bytes[e.start]
            raise fail(path, f"PCD header line at byte {pos} holds non-ASCII byte 0x{bad:02x}") from None
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        if key.upper() not in _KEYS:
            raise fail(path, f"unknown PCD header entry {key!r} (not a PCD file?)")
        header[key.upper()] = values
        if key.upper() == "DATA":
            return header, pos


def _layout(path: Path, header: dict) -> tuple[list[str], list[int], np.dtype, int, int, int]:
    names = header.get("FIELDS")
    if not names:
        raise fail(path, "PCD header has no FIELDS line")
    n = len(names)
    sizes, types = header.get("SIZE", []), header.get("TYPE", [])
    counts = header.get("COUNT", ["1"] * n)
    for key, vals in (("SIZE", sizes), ("TYPE", types), ("COUNT", counts)):
        if len(vals) != n:
            raise fail(path, f"PCD header lists {n} FIELDS but {len(vals)} {key} values")

    def integers(key: str, values: list[str], expected: int | None = None) -> list[int]:
        if expected is not None and len(values) != expected:
            raise fail(path, f"PCD header line {key} needs {expected} value(s), has {len(values)}")
        try:
            return [int(v) for v in values]
        except ValueError:
            raise fail(path, f"PCD header line {key} holds a non-integer ({' '.join(values)})") from None

    sizes_i, counts_i = integers("SIZE", sizes), integers("COUNT", counts)
    width = integers("WIDTH", header.get("WIDTH", ["0"]), 1)[0]
    height = integers("HEIGHT", header.get("HEIGHT", ["1"]), 1)[0]
    npoints = integers("POINTS", header.get("POINTS", [str(width * height)]), 1)[0]
    if npoints != width * height:
        raise fail(path, f"PCD header says POINTS {npoints} but WIDTH x HEIGHT = {width} x {height}")
    dtype_fields, unique = [], []
    for i, (name, t, s, c) in enumerate(zip(names, types, sizes_i, counts_i)):
        code = _TYPES.get((t.upper(), s))
        if code is None:
            raise fail(path, f"PCD field {name!r} has unsupported TYPE {t} with SIZE {s}")
        if c < 1:
            raise fail(path, f"PCD field {name!r} has COUNT {c}")
        key = f"_pad{i}" if name == "_" else name
        if key in unique:
            raise fail(path, f"PCD header lists field {name!r} twice")
        unique.append(key)
        dtype_fields.append((key, code, (c,)) if c > 1 else (key, code))
    return unique, counts_i, np.dtype(dtype_fields), width, height, npoints


def _read_body(path: Path, kind: str, body: bytes, dtype: np.dtype, names: list[str], npoints: int) -> np.ndarray:
    if kind == "binary":
        need = npoints * dtype.itemsize
        if len(body) < need:
            raise fail(
                path,
                f"header says POINTS {npoints} but the binary body holds "
                f"{len(body) // dtype.itemsize} (file truncated?)",
            )
        return np.frombuffer(body, dtype=dtype, count=npoints)
    if kind == "binary_compressed":
        return _read_compressed(path, body, dtype, names, npoints)
    if kind == "ascii":
        return _read_ascii(path, body, dtype, names, npoints)
    raise fail(path, f"unknown PCD DATA kind {kind!r} (expected ascii, binary or binary_compressed)")


def _read_compressed(path, body, dtype, names, npoints) -> np.ndarray:
    import lzf

    if len(body) < 8:
        raise fail(path, "binary_compressed body is shorter than its 8-byte size prefix (file truncated?)")
    packed, unpacked = struct.unpack("<II", body[:8])
    need = npoints * dtype.itemsize
    if unpacked != need:
        raise fail(
            path, f"header says POINTS {npoints} ({need} bytes) but the compressed body unpacks to {unpacked} bytes"
        )
    if len(body) - 8 < packed:
        raise fail(path, f"compressed body holds {len(body) - 8} of its {packed} bytes (file truncated?)")
    if unpacked > 100 * packed + 1024:  # LZF expands at most ~88x: refuse before allocating what it claims
        raise fail(path, f"compressed body of {packed} bytes claims to unpack to {unpacked} bytes (corrupt header)")
    try:
        raw = lzf.decompress(body[8 : 8 + packed], unpacked) if need else b""
    except ValueError:  # python-lzf's word for a back-reference before the start of the output
        raw = None
    if raw is None or len(raw) != need:
        raise fail(path, "compressed body does not decompress (corrupt LZF data)")
    out = np.empty(npoints, dtype=dtype)
    offset = 0
    for name in names:  # binary_compressed stores each field as one contiguous column
        sub = dtype.fields[name][0]
        nbytes = npoints * sub.itemsize
        out[name] = np.frombuffer(
            raw, dtype=sub.base, count=npoints * max(1, int(np.prod(sub.shape))), offset=offset
        ).reshape((npoints,) + sub.shape)
        offset += nbytes
    return out


def _read_ascii(path, body, dtype, names, npoints) -> np.ndarray:
    per_point = sum(max(1, int(np.prod(dtype.fields[n][0].shape))) for n in names)
    try:
        tokens = body.decode("ascii").split()
    except UnicodeDecodeError:
        raise fail(path, "ascii PCD body holds non-ASCII bytes") from None
    if len(tokens) < npoints * per_point:
        raise fail(
            path,
            f"header says POINTS {npoints} but the ascii body holds "
            f"{len(tokens) // per_point} complete points (file truncated?)",
        )
    try:
        values = np.array(tokens[: npoints * per_point], dtype=np.float64).reshape(npoints, per_point)
    except ValueError as e:
        raise fail(path, f"ascii PCD body holds a non-number ({e})") from None
    out = np.empty(npoints, dtype=dtype)
    col = 0
    for name in names:
        sub = dtype.fields[name][0]
        width = max(1, int(np.prod(sub.shape)))
        block = values[:, col : col + width]
        _check_fits(path, name, block, sub.base)
        out[name] = block.reshape((npoints,) + sub.shape).astype(sub.base)
        col += width
    return out


def _check_fits(path, name: str, values: np.ndarray, dtype: np.dtype) -> None:
    """Refuse an ascii value that its field's declared TYPE and SIZE cannot hold (numpy would wrap or overflow)."""
    finite = values[np.isfinite(values)]
    if dtype.kind == "f":
        limit = np.finfo(dtype).max
        if finite.size and np.abs(finite).max() > limit:
            raise fail(
                path,
                f"field {name} holds {finite[np.abs(finite).argmax()]:g}, beyond its "
                f"{dtype.itemsize}-byte float type (at most {limit:g})",
            )
        return
    info = np.iinfo(dtype)
    if finite.size != values.size or (finite.size and (finite.min() < info.min or finite.max() > info.max)):
        raise fail(
            path,
            f"field {name} holds a value outside its {dtype.itemsize}-byte integer type ({info.min} to {info.max})",
        )


def read_pcd(path, *, remove_invalid: bool = True) -> Scan:
    """Read a PCD file into a Scan; organised clouds (HEIGHT > 1) keep their (HEIGHT, WIDTH) grid.

    Kept: x y z as points, normal_* as normals, rgb/rgba unpacked to uint8 colours, every other named
    field (label, intensity, curvature, ...) in `Scan.fields`. NaN points are missing measurements:
    dropped when remove_invalid, else an error.
    """
    path = check_readable(path)
    raw = path.read_bytes()
    header, start = _parse_header(path, raw)
    names, _, dtype, width, height, npoints = _layout(path, header)
    kind = (header["DATA"] or [""])[0].lower()
    if not {"x", "y", "z"} <= set(names):
        raise fail(path, f"PCD has no x y z fields (fields: {' '.join(header['FIELDS'])}); it is not a point cloud")
    rec = _read_body(path, kind, raw[start:], dtype, names, npoints)
    with np.errstate(invalid="ignore"):  # widening a signalling NaN warns; NaNs are dealt with below
        points = np.stack([rec["x"], rec["y"], rec["z"]], axis=1).astype(np.float64)
    valid = split_invalid(path, points, remove_invalid)
    normals = None
    if {"normal_x", "normal_y", "normal_z"} <= set(names):
        normals = np.stack([rec["normal_x"], rec["normal_y"], rec["normal_z"]], axis=1)
    colour_key = next((k for k in ("rgb", "rgba") if k in names), None)
    if colour_key and dtype.fields[colour_key][0].itemsize != 4:
        raise fail(path, f"PCD colour field {colour_key!r} must be 4 bytes (packed 0xAARRGGBB)")
    colors = unpack_rgb(np.array(rec[colour_key])) if colour_key else None
    used = {"x", "y", "z", "normal_x", "normal_y", "normal_z", colour_key}
    extra = {k: np.array(rec[k]) for k in names if k not in used and not k.startswith("_pad")}
    organised = height > 1
    scan = Scan(
        points=points[valid],
        normals=None if normals is None else normals[valid],
        colors=None if colors is None else colors[valid],
        grid_index=np.flatnonzero(valid) if organised else None,
        grid_shape=(height, width) if organised else None,
        fields={k: v[valid] for k, v in extra.items()},
        path=str(path),
        meta={"format": "pcd", "pcd_data": kind, "invalid_points": int((~valid).sum())},
    )
    return scan


def write_pcd(path, scan: Scan, scalars: dict[str, np.ndarray] | None = None) -> None:
    """Write a binary PCD with x y z, normals and rgb when present, and one F field per scalar."""
    cols: list[tuple[str, np.ndarray]] = [("x", scan.points[:, 0]), ("y", scan.points[:, 1]), ("z", scan.points[:, 2])]
    if scan.normals is not None:
        cols += [(f"normal_{a}", scan.normals[:, i]) for i, a in enumerate("xyz")]
    if scan.colors is not None:
        cols.append(("rgb", pack_rgb(scan.colors)))
    for name, values in (scalars or {}).items():
        values = np.asarray(values, dtype=np.float32)
        if values.shape != (len(scan),):
            raise ValueError(f"scalar {name!r} has shape {values.shape}, expected ({len(scan)},)")
        cols.append((name, values))
    rec = np.empty(len(scan), dtype=[(n, "<f4") for n, _ in cols])
    for n, v in cols:
        rec[n] = v
    n = len(cols)
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\n"
        f"FIELDS {' '.join(c for c, _ in cols)}\nSIZE {' '.join(['4'] * n)}\nTYPE {' '.join(['F'] * n)}\n"
        f"COUNT {' '.join(['1'] * n)}\nWIDTH {len(scan)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\n"
        f"POINTS {len(scan)}\nDATA binary\n"
    )
    with atomic_output(path) as tmp:
        tmp.write_bytes(header.encode("ascii") + rec.tobytes())
