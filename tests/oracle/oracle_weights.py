"""Seeded network weights for the oracle fixtures: a release's network and ad3d's load the same numbers,
regenerated from the fixture's key list, so no weight file is stored."""

from __future__ import annotations

import numpy as np


def seeded_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """float32 tensors for a state dict's keys: weights ~ N(0, 1/fan_in), norms' scales near 1, biases and
    BatchNorm means small, BatchNorm variances in [0.5, 1.5], counters 0; drawn in key order."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = np.zeros(shape, np.int64)
        elif key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            state[key] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
        elif key.endswith("weight"):  # LayerNorm / BatchNorm scales
            state[key] = (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            state[key] = (0.05 * rng.standard_normal(shape)).astype(np.float32)
    return state
