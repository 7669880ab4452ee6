"""A memory bank of normal features (PatchCore): a greedy coreset of the training features, and the
distance of each query feature to its nearest bank entry. One per modality in LSFA / M3DM."""

from __future__ import annotations

import numpy as np
import torch

_SHORTLIST_MARGIN = 4  # extra cdist candidates re-ranked exactly; ties within cdist's rounding stay inside


def coreset_bank(features: np.ndarray, ratio: float, seed: int = 0, device: str = "cpu") -> np.ndarray:
    """The `ratio` share of `features` (N, D) chosen by greedy k-centre selection, from a seeded start."""
    from ad3d import ops

    keep = max(1, int(round(ratio * len(features))))
    start = int(np.random.default_rng(seed).integers(len(features)))
    idx = ops.greedy_coreset(torch.from_numpy(features).to(device), keep, start=start).cpu().numpy()
    return features[idx]


def nearest_rows(query: torch.Tensor, bank: torch.Tensor, k: int = 1, chunk: int = 4096):
    """(distances, indices), (M, k) each: the k nearest bank rows of each query row, nearest first. 3-D rows
    (points) go through ad3d's exact kNN op; feature rows are shortlisted by cdist in chunks of `chunk` queries
    and their distances recomputed exactly: cdist's matrix product sums in an order that depends on how many
    threads BLAS happens to use, and a saved model must score bit-identically on every machine."""
    from ad3d import ops

    if query.shape[1] == 3:
        dist2, idx = ops.knn(query, bank, k)
        return dist2.clamp_min(0).sqrt(), idx
    shortlist = min(len(bank), k + _SHORTLIST_MARGIN)
    values, indices = [], []
    for part in query.split(chunk):
        cand = torch.cdist(part, bank).topk(shortlist, dim=1, largest=False).indices.sort(dim=1).values
        exact = (part[:, None, :] - bank[cand]).square().sum(-1).sqrt()
        best = exact.topk(k, dim=1, largest=False)
        values.append(best.values)
        indices.append(cand.gather(1, best.indices))
    return torch.cat(values), torch.cat(indices)


def nearest_distances(query: np.ndarray, bank: np.ndarray, device: str = "cpu", chunk: int = 4096) -> np.ndarray:
    """(M,) Euclidean distance of each query row to its nearest bank row, in chunks of `chunk` queries."""
    dist, _ = nearest_rows(torch.from_numpy(query).to(device), torch.from_numpy(bank).to(device), 1, chunk)
    return dist[:, 0].cpu().float().numpy()


def reweighted_max(query: np.ndarray, bank: np.ndarray, k: int = 3) -> float:
    """PatchCore's object score, as the R3D-AD, M3DM and LSFA releases compute it: the largest distance s*
    from a query row to its nearest bank row, times 1 - softmax weight of s* against the query row's
    distances to the k - 1 next bank neighbours of that bank row (all divided by sqrt(dim))."""
    q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
    b = torch.from_numpy(np.ascontiguousarray(bank, dtype=np.float32))
    dist, idx = nearest_rows(q, b, 1)
    worst = int(torch.argmax(dist[:, 0]))
    s_star = dist[worst, 0]
    around = nearest_rows(b[idx[worst]], b, min(k, len(b)))[1][0, 1:]
    others = torch.linalg.norm(q[worst] - b[around], dim=1)
    scale = float(np.sqrt(q.shape[1]))
    weight = 1 - torch.exp(s_star / scale) / torch.exp(others / scale).sum()
    return float(weight * s_star)
