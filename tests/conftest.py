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
