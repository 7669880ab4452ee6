import hashlib
from pathlib import Path

import pytest
from native import SHARED


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared test data not found at {SHARED} (set AD3D_SHARED_DATA)")
    return SHARED


def tree_digest(root: Path) -> dict[str, str]:
    """Path -> sha256 of every file under root: to prove a reader modified nothing."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def fixture():
    """fixture(name) -> the arrays of tests/oracle/fixtures/NAME.npz, written by tests/oracle/make_fixtures.py
    from an official release's code (one conftest for the whole suite: a second one in tests/oracle would
    shadow this module's name for the tests that import from it)."""
    import numpy as np

    def load(name: str) -> dict:
        with np.load(Path(__file__).parent / "oracle" / "fixtures" / f"{name}.npz") as data:
            return {k: data[k] for k in data.files}

    return load
