"""Property-based fuzzing of the scan readers: any bytes give a Scan or an Ad3dError, never another
exception. Inputs are random bytes, and valid files (ascii / binary PCD, PLY, text) with bytes flipped,
cut or inserted, so the fuzzer reaches the body parsers and not only the header checks."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ad3d.errors import Ad3dError
from ad3d.io import read_scan, write_scan
from ad3d.types import Scan

FUZZ = settings(
    max_examples=int(__import__("os").environ.get("FUZZ_N", 150)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def seeds(tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("seeds")
    rng = np.random.default_rng(0)
    scan = Scan(points=rng.random((40, 3)), colors=rng.integers(0, 255, (40, 3)).astype(np.uint8))
    out = {}
    for name in ("a.ply", "a.pcd"):
        write_scan(root / name, scan)
        out[name] = (root / name).read_bytes()
    out["a.xyz"] = "\n".join(" ".join(f"{v:.4f}" for v in p) for p in scan.points).encode()
    header = "VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 40\nHEIGHT 1\nPOINTS 40\n"
    out["ascii.pcd"] = (header + "DATA ascii\n" + out["a.xyz"].decode()).encode()
    return out


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    return seeds(tmp_path_factory)


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Apply (kind, position, value) edits: 0 flip a byte, 1 cut the file there, 2 insert a byte."""
    buf = bytearray(data)
    for kind, pos, value in edits:
        if not buf:
            break
        i = pos % len(buf)
        if kind == 0:
            buf[i] = value
        elif kind == 1:
            del buf[i:]
        else:
            buf.insert(i, value)
    return bytes(buf)


EDITS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=4)


def read_or_refuse(path) -> None:
    try:
        scan = read_scan(path)
    except Ad3dError:
        return
    assert scan.points.ndim == 2 and scan.points.shape[1] == 3 and np.isfinite(scan.points).all()


@pytest.mark.parametrize("name", ["a.ply", "a.pcd", "ascii.pcd", "a.xyz"])
@FUZZ
@given(edits=EDITS)
def test_damaged_files_give_a_scan_or_a_clear_error(valid, tmp_path, name, edits):
    path = tmp_path / name
    path.write_bytes(mutate(valid[name], edits))
    read_or_refuse(path)


@pytest.mark.parametrize("suffix", [".ply", ".pcd", ".xyz", ".txt"])
@FUZZ
@given(data=st.binary(min_size=1, max_size=512))
def test_random_bytes_give_a_scan_or_a_clear_error(tmp_path, suffix, data):
    path = tmp_path / f"r{suffix}"
    path.write_bytes(data)
    read_or_refuse(path)
