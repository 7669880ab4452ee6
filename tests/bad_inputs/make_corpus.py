"""Write the bad-input corpus in scans/: one small file per way a scan can be broken, hostile or odd.

    python tests/bad_inputs/make_corpus.py

The files are committed; cases.csv says what each one is, what ad3d did with it before, and the words
its one-line error must hold now. Rerunning this script rewrites the same bytes (no randomness left
to chance), so a change to a case is a reviewable diff.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CLOUD = np.random.default_rng(0).random((64, 3)).astype("<f4")


def pcd_header(fields="x y z", size="4 4 4", kind="F F F", width=64, points=64, data="binary", extra="") -> bytes:
    count = " ".join("1" for _ in fields.split())
    return (
        f"VERSION 0.7\nFIELDS {fields}\nSIZE {size}\nTYPE {kind}\nCOUNT {count}\n{extra}WIDTH {width}\n"
        f"HEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {points}\nDATA {data}\n"
    ).encode()


def lzf_body(cloud: np.ndarray) -> bytes:
    import lzf

    raw = b"".join(np.ascontiguousarray(cloud[:, i]).tobytes() for i in range(3))
    packed = lzf.compress(raw, len(raw) + 64)
    return struct.pack("<II", len(packed), len(raw)) + packed


def ply_header(kind: str, count: int, prop: str = "float") -> bytes:
    return (
        f"ply\nformat {kind} 1.0\nelement vertex {count}\nproperty {prop} x\nproperty {prop} y\n"
        f"property {prop} z\nend_header\n"
    ).encode()


def cases() -> dict[str, bytes]:
    body = CLOUD.tobytes()
    with_inf, all_nan, ascii_rows = CLOUD.copy(), np.full((1, 3), np.nan, "<f4"), "1 2 3\n" * 63
    with_inf[5, 1] = np.inf
    compressed = lzf_body(CLOUD)
    zeroed = compressed[:8] + b"\x00" * 12 + compressed[20:]  # an LZF block whose first bytes are zero
    return {
        "empty.pcd": b"",
        "truncated.pcd": pcd_header() + body[:500],
        "truncated_compressed.pcd": pcd_header(data="binary_compressed") + compressed[:-40],
        "lzf_zeroed_block.pcd": pcd_header(data="binary_compressed") + zeroed,
        "points_not_width_x_height.pcd": pcd_header(width=30) + body,
        "width_without_value.pcd": pcd_header().replace(b"WIDTH 64", b"WIDTH"),
        "field_listed_twice.pcd": pcd_header(
            fields="x y x",
        )
        + body,
        "non_ascii_header.pcd": b"VERSION 0.7\nFIELDS x y \xff\xfe z\n" + body,
        "unknown_header_entry.pcd": b"COLOUR red\n" + pcd_header() + body,
        "ascii_value_beyond_float32.pcd": pcd_header(data="ascii") + ("1e40 0 0\n" + ascii_rows).encode(),
        "inf_coordinate.pcd": pcd_header() + with_inf.tobytes(),
        "all_nan.pcd": pcd_header(width=1, points=1) + all_nan.tobytes(),
        "float64_beyond_float32.pcd": pcd_header(size="8 8 8", width=2, points=2)
        + np.array([[1e39, 0, 0], [0, 1, 0]], "<f8").tobytes(),
        "claims_150M_points.pcd": pcd_header(
            size="8 8 8", width=150_000_000, points=150_000_000, data="binary_compressed"
        )
        + struct.pack("<II", 16, 150_000_000 * 24)
        + b"x" * 16,
        "claims_1e9_vertices_ascii.ply": ply_header("ascii", 10**9, "double") + b"1 2 3\n" * 4,
        "claims_3e9_vertices_double.ply": ply_header("binary_little_endian", 3 * 10**9, "double") + b"\x00" * 96,
        "truncated.ply": ply_header("binary_little_endian", 64) + body[:100],
        "no_xyz.ply": b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float a\nend_header\n1\n2\n",
        "not_an_stl.stl": b"solid nothing\nthis is not an stl\n",
        "ragged_rows.xyz": b"1 2 3\n4 5\n",
        "two_columns.xyz": b"1 2\n3 4\n5 6\n",
        "header_line.xyz": b"x y z\n1 2 3\n",
        "non_utf8.xyz": b"1 2 3\n4 \xff 6\n",
        "only_comments.xyz": b"# nothing here\n",
        "cloud.las": b"LASF" + b"\x00" * 60,
    }


def main() -> None:
    out = HERE / "scans"
    out.mkdir(exist_ok=True)
    for name, content in cases().items():
        (out / name).write_bytes(content)
    print(f"wrote {len(cases())} files to {out}")


if __name__ == "__main__":
    main()
