"""Every sweep shipped in benchmarks/sweeps is one `ad3d bench run --spec` accepts: its values, detector names,
presets and parameter names are checked before any job (a typo would otherwise surface only when a long
benchmark starts, or on a GPU machine with minutes to spend)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ad3d.bench.spec import load_spec

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "sweeps").glob("*.toml"))


def test_the_sweeps_folder_is_found():
    assert len(SWEEPS) >= 10


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_a_shipped_sweep_is_valid(path):
    sweep = load_spec(path)
    assert len(sweep.variants()) == len(sweep.detectors)  # a ConfigError for a bad value, name, preset or parameter
