from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixture():
    """fixture(name) -> the arrays of fixtures/NAME.npz, written by make_fixtures.py from a release's code."""

    def load(name: str) -> dict:
        with np.load(FIXTURES / f"{name}.npz") as data:
            return {k: data[k] for k in data.files}

    return load
