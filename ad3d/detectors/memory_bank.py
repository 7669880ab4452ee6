"""A memory bank of normal features (PatchCore): a greedy coreset of the training features, and the
distance of each query feature to its nearest bank entry. One per modality in LSFA / M3DM."""

from __future__ import annotations

import numpy as np
import torch


def coreset_bank(features: np.ndarray, ratio: float, seed: int = 0, device: str = "cpu") -> np.ndarray:
    """The `ratio` share of `features` (N, D) chosen by greedy k-centre selection, from a seeded start."""
    from ad3d import ops

    keep = max(1, int(round(ratio * len(features))))
    start = int(np.random.default_rng(seed).integers(len(features)))
    idx = ops.greedy_coreset(torch.from_numpy(features).to(device), keep, start=start).cpu().numpy()
    return features[idx]


def nearest_distances(query: np.ndarray, bank: np.ndarray, device: str = "cpu", chunk: int = 4096) -> np.ndarray:
    """(M,) Euclidean distance of each query row to its nearest bank row, in chunks of `chunk` queries."""
    b = torch.from_numpy(bank).to(device)
    q = torch.from_numpy(query).to(device)
    return torch.cat([torch.cdist(part, b).min(1).values for part in q.split(chunk)]).cpu().float().numpy()
