"""Readers and writers on files written in the exact native formats, and on every kind of bad input."""

import subprocess
import sys

import numpy as np
import pytest
from native import write_pcd

from ad3d.errors import ScanFormatError
from ad3d.io import read_scan, write_scan
from ad3d.types import Scan


@pytest.fixture
def cloud():
    rng = np.random.default_rng(1)
    return rng.normal(size=(257, 3)).astype(np.float32)


@pytest.mark.parametrize("data", ["ascii", "binary", "binary_compressed"])
def test_pcd_body_kinds_read_identically(tmp_path, cloud, data):
    intensity = np.arange(len(cloud), dtype=np.float32)
    write_pcd(tmp_path / "c.pcd", cloud, data=data, extra={"intensity": intensity})
    scan = read_scan(tmp_path / "c.pcd")
    np.testing.assert_array_equal(scan.points, cloud)
    np.testing.assert_array_equal(scan.fields["intensity"], intensity)
    assert scan.meta["pcd_data"] == data


@pytest.mark.parametrize("suffix", [".ply", ".pcd"])
def test_write_then_read_keeps_points_colours_normals_and_scalars(tmp_path, cloud, suffix):
    rng = np.random.default_rng(2)
    normals = rng.normal(size=cloud.shape).astype(np.float32)
    colors = rng.integers(0, 256, size=cloud.shape, dtype=np.uint8)
    score = rng.random(len(cloud)).astype(np.float32)
    write_scan(tmp_path / f"out{suffix}", Scan(points=cloud, normals=normals, colors=colors), scalars={"score": score})
    back = read_scan(tmp_path / f"out{suffix}")
    np.testing.assert_array_equal(back.points, cloud)
    np.testing.assert_array_equal(back.normals, normals)
    np.testing.assert_array_equal(back.colors, colors)
    np.testing.assert_array_equal(back.fields["score"], score)
    assert list(tmp_path.iterdir()) == [tmp_path / f"out{suffix}"]  # no temporary file left


def test_ply_file_is_binary_with_score_property(tmp_path, cloud):
    write_scan(tmp_path / "s.ply", Scan(points=cloud), scalars={"score": np.zeros(len(cloud))})
    head = (tmp_path / "s.ply").read_bytes()[:200]
    assert b"format binary_little_endian" in head and b"property float score" in head


def test_text_columns(tmp_path):
    pts = np.array([[0, 0, 0], [1, 2, 3], [4, 5, 6.5]])
    (tmp_path / "a.txt").write_text("\n".join(f"{x},{y},{z},{lab}" for (x, y, z), lab in zip(pts, [0, 1, 0])))
    scan = read_scan(tmp_path / "a.txt")
    np.testing.assert_array_equal(scan.points, pts)
    assert scan.labels.tolist() == [0, 1, 0]
    (tmp_path / "b.xyz").write_text("# x y z r g b\n" + "\n".join(f"{x} {y} {z} 10 20 255" for x, y, z in pts))
    assert read_scan(tmp_path / "b.xyz").colors.tolist() == [[10, 20, 255]] * 3


def test_tiff_zero_pixels_are_missing(tmp_path):
    import tifffile

    xyz = np.ones((4, 5, 3), np.float32)
    xyz[0, 0] = 0
    xyz[1, 2, 2] = 0  # one zero coordinate is enough to be missing
    tifffile.imwrite(tmp_path / "x.tiff", xyz)
    scan = read_scan(tmp_path / "x.tiff")
    assert len(scan) == 18 and scan.grid_shape == (4, 5)
    assert 0 not in scan.grid_index and 7 not in scan.grid_index


def _pcd_header(points, width, height, data="binary"):
    return (
        f"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {width}\nHEIGHT {height}\n"
        f"VIEWPOINT 0 0 0 1 0 0 0\nPOINTS {points}\nDATA {data}\n"
    ).encode()


def test_nan_points_dropped_by_default_and_refused_on_request(tmp_path, cloud):
    nan_cloud = cloud.copy()
    nan_cloud[3] = np.nan
    (tmp_path / "nan.pcd").write_bytes(_pcd_header(257, 257, 1) + nan_cloud.tobytes())
    assert len(read_scan(tmp_path / "nan.pcd")) == 256
    with pytest.raises(ScanFormatError, match=r"nan\.pcd.*1 points hold NaN"):
        read_scan(tmp_path / "nan.pcd", remove_invalid=False)


def test_scan_refuses_nan_and_wrong_shapes():
    with pytest.raises(ValueError, match="NaN/inf"):
        Scan(points=np.array([[0, 0, np.nan]]))
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        Scan(points=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="labels"):
        Scan(points=np.zeros((4, 3)), labels=np.zeros(3))


def test_write_refuses_unknown_suffix_and_keeps_existing_file(tmp_path, cloud):
    target = tmp_path / "keep.ply"
    target.write_bytes(b"precious")
    with pytest.raises(ValueError, match="scalar 'score' has shape"):
        write_scan(target, Scan(points=cloud), scalars={"score": np.zeros(3)})
    assert target.read_bytes() == b"precious"
    with pytest.raises(ScanFormatError, match="unknown output format"):
        write_scan(tmp_path / "x.obj", Scan(points=cloud))


def test_library_import_needs_no_cli_pyvista_torch_or_compiler(shared_data):
    code = (
        "import sys, ad3d; s = ad3d.io.read_scan(sys.argv[1]); assert len(s) == 397; "
        "bad = {'pyvista', 'torch', 'ad3d.cli', 'ad3d.ops'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code, str(shared_data / "pcd" / "bun0.pcd")], check=True)


def test_outputs_honour_the_umask_and_leftovers_of_a_killed_writer_are_cleared(tmp_path):
    import os
    import subprocess
    import sys

    from ad3d.io._common import atomic_output

    old = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "out.txt") as tmp:
            tmp.write_text("x")
        assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.txt.{dead.stdout.strip()}.abc.part"  # a writer that was killed mid-write
    stale.write_text("half")
    live = tmp_path / f".out.txt.{os.getpid()}.xyz.part"  # one still writing (this process)
    live.write_text("busy")
    with atomic_output(tmp_path / "out.txt") as tmp:
        tmp.write_text("y")
    assert not stale.exists() and live.exists() and (tmp_path / "out.txt").read_text() == "y"


@pytest.mark.parametrize(
    "fmt,kind,count",
    [("ply", "ascii", 10**9), ("ply", "binary_little_endian", 3 * 10**9), ("pcd", "binary_compressed", 150_000_000)],
)
def test_hostile_header_counts_are_refused_before_allocating(tmp_path, fmt, kind, count):
    """A header claiming billions of points in a tiny file (11 to 67 GiB if believed) is refused at once."""
    import resource
    import struct

    from ad3d.io import read_scan

    path = tmp_path / f"h.{fmt}"
    if fmt == "ply":
        props = "".join(f"property double {axis}\n" for axis in "xyz")
        head = f"ply\nformat {kind} 1.0\nelement vertex {count}\n{props}end_header\n"
        path.write_bytes(head.encode() + b"1 2 3\n" * 4)
    else:
        head = (
            f"VERSION .7\nFIELDS x y z\nSIZE 8 8 8\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {count}\nHEIGHT 1\n"
            f"POINTS {count}\nDATA {kind}\n"
        )
        path.write_bytes(head.encode() + struct.pack("<II", 16, count * 24) + b"x" * 16)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ScanFormatError, match="header|claims"):
        read_scan(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB: nothing big allocated
