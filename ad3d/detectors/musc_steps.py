"""The numerical steps of MuSc-V2 as its release computes them (HUST-SLOW/MuSc-V2 @ b5e911d): Iterative Point
Grouping, SNAMD on groups and on patches, Mutual Scoring, Cross-modal Anomaly Enhancement, RsCon and the 3D
map's blur. numpy in, numpy out; `tests/oracle` checks each against fixtures the release's code produced.
"""

from __future__ import annotations

import numpy as np
import torch

from ad3d.errors import ConfigError


def nearest(query: np.ndarray, ref: np.ndarray, k: int) -> np.ndarray:
    """(M, k) indices of the k nearest `ref` points of each `query` point, nearest first."""
    from ad3d import ops

    q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
    r = torch.from_numpy(np.ascontiguousarray(ref, dtype=np.float32))
    return ops.knn(q, r, min(k, len(ref)))[1].numpy()


def curvature(points: np.ndarray, centres: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """(G,) surface variation lambda_min / sum(lambda) of each centre's neighbours (G, k), the first of
    which is the centre itself and is left out (`_IPG.py:iter_group`)."""
    rest = points[neighbours[:, 1:]].astype(np.float64) - points[centres][:, None]
    centred = rest - rest.mean(1, keepdims=True)
    eig = np.linalg.eigvalsh(np.einsum("gki,gkj->gij", centred, centred))
    return eig[:, 0] / np.maximum(eig.sum(1), 1e-30)


def grow(points: np.ndarray, member: np.ndarray, candidates: np.ndarray, count: int) -> np.ndarray:
    """`count` new members (`_IPG.py:closed_k`): the candidates not yet in the group, taken at the `count`
    smallest (member, candidate) distances; a candidate close to several members comes back as often."""
    support = np.unique(candidates[~np.isin(candidates, member)])
    gap = np.linalg.norm(points[member][:, None] - points[support][None], axis=2).reshape(-1)
    take = np.argsort(gap, kind="stable")[:count]
    return support[take % len(support)]


def iterative_groups(
    points: np.ndarray, centres: np.ndarray, size: int, search: int, step: int, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """IPG: (G, size) member indices and (G,) curvatures. A centre of curvature below `threshold` takes its
    `size` nearest points; a curved one starts from its `step` nearest and adds `step` at a time (the last
    round what is left) from its `search` nearest, newest first, until the group holds `size`."""
    search = min(search, len(points))
    size, step = min(size, search), min(step, size)
    candidates = nearest(points[centres], points, search)
    curv = curvature(points, centres, candidates[:, :size])
    groups = candidates[:, :size].copy()
    for g in np.flatnonzero(curv >= threshold):
        member = candidates[g, :step]
        while len(member) < size:
            member = np.concatenate([grow(points, member, candidates[g], min(step, size - len(member))), member])
        groups[g] = member
    return groups, curv


def similarity_means(neighbours: np.ndarray, centre: np.ndarray, windows: list[np.ndarray]) -> list[np.ndarray]:
    """SNAMD's similarity-weighted pooling: `neighbours` (M, K, C) around each `centre` (M, C), weights
    exp(-|f - centre|); one (M, C) mean per window of neighbour positions."""
    weight = np.exp(-np.linalg.norm(neighbours - centre[:, None], axis=2))
    return [(weight[:, w, None] * neighbours[:, w]).sum(1) / weight[:, w].sum(1, keepdims=True) for w in windows]


def snamd_groups(features: np.ndarray, centres: np.ndarray, flat: np.ndarray, degrees: tuple[int, ...]) -> np.ndarray:
    """SNAMD on groups (`_SNAMD.py:_embed_3d`): a flat group's feature becomes the similarity-weighted means
    over its 1, 3, 5 (`degrees`) nearest group centres, stacked and averaged channel by channel in runs of
    len(degrees) (the release's adaptive pooling back to C channels); curved groups keep their own. (G, C)."""
    near = nearest(centres, centres, max(degrees))
    neighbours = features[near]
    means = similarity_means(neighbours, neighbours[:, 0], [np.arange(min(r, near.shape[1])) for r in degrees])
    pooled = np.concatenate(means, axis=1).reshape(len(features), features.shape[1], len(degrees)).mean(2)
    return np.where(flat[:, None], pooled, features).astype(np.float32)


def snamd_patches(grid: np.ndarray, degrees: tuple[int, ...]) -> np.ndarray:
    """SNAMD on a (C, h, w) patch grid (`_SNAMD.py:_embed_2d`): per degree r the similarity-weighted mean
    over the r x r window (zero padding at the border), averaged over degrees and L2-normalised. (h w, C)."""
    c, h, w = grid.shape
    big = max(degrees)
    f = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32))[None]
    window = torch.nn.functional.unfold(f, big, padding=big // 2).reshape(c, big, big, h * w)
    window = window.permute(3, 1, 2, 0).reshape(h * w, big * big, c).numpy()
    centre = window[:, (big * big) // 2]
    positions = np.arange(big * big).reshape(big, big)
    cut = [positions[(big - r) // 2 : (big + r) // 2, (big - r) // 2 : (big + r) // 2].reshape(-1) for r in degrees]
    mean = np.mean(similarity_means(window, centre, cut), axis=0)
    return unit(mean)


def mutual_distances(sets: list[np.ndarray], pool: list[np.ndarray] = (), device: str = "cpu") -> list[np.ndarray]:
    """For each set of (rows, D) features: (rows, R) nearest distances of each row into each of the R other
    sets and pool sets (in the order: other sets, then pool), computed on `device`."""
    from ad3d.detectors.neural import resolve_device

    device = resolve_device(device)
    out = []
    everything = list(sets) + list(pool)
    for i, query in enumerate(sets):
        q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)).to(device)
        nearest_rows = [
            torch.cdist(q, torch.from_numpy(np.ascontiguousarray(o, dtype=np.float32)).to(device)).min(1).values
            for j, o in enumerate(everything)
            if j != i
        ]
        if not nearest_rows:
            raise ConfigError(
                "musc scores a scan against other scans: give it a set of scans, or fit it with "
                "a reference pool of unlabelled scans first"
            )
        out.append(torch.stack(nearest_rows, 1).cpu().numpy())
    return out


def interval_mean(distances: np.ndarray, interval: float) -> np.ndarray:
    """MSM's score per row: the mean of the lowest `interval` share of its distances to the reference
    scans, at least one (the release's 3D-only path takes none below 4 references and returns NaN)."""
    keep = max(1, int(interval * distances.shape[1]))
    return np.sort(distances, axis=1)[:, :keep].mean(1)


def replace_sorted(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`target`'s values replaced by `source`'s value of the same rank (`_MSM.py:replace_sorted`): the
    target rank-mapped onto the source's distribution (1-D, one size). Ties are ordered as torch's sort
    orders them, as in the release (a tie-breaking rule of our own would move every rank after it)."""
    order = torch.sort(source)[1]
    return source[order[torch.argsort(torch.sort(target)[1])]]


def enhance(d2: np.ndarray, d3: np.ndarray, patch_of_group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CAE for one layer (`_MSM.py:compute_scores_multiple`): `d2` (P, R) patch and `d3` (G, R) group
    distances to the R reference scans; `patch_of_group` (G,) the patch holding each group's centre.
    Each modality sees the other's distances (a patch: the mean over its groups, zero without one; a
    group: its patch's), rank-mapped onto its own (patches without groups keep theirs), takes the larger,
    weighted by a confidence (1 - the other's spread across references rank-mapped onto its own
    spread), rank-mapped again and averaged with its own. float32, in torch, step for step as released.
    Returns the enhanced (P, R) and (G, R)."""
    own2, own3 = torch.from_numpy(np.asarray(d2, np.float32)), torch.from_numpy(np.asarray(d3, np.float32))
    patch = torch.from_numpy(np.asarray(patch_of_group, np.int64))
    cross2 = torch.zeros_like(own2).index_add_(0, patch, own3)
    cross2 /= torch.bincount(patch, minlength=len(own2)).clamp_min(1)[:, None]
    cross3 = own2[patch]
    confidence2 = 1 - replace_sorted(own2.std(-1), cross2.std(-1))
    confidence3 = 1 - replace_sorted(own3.std(-1), cross3.std(-1))
    cross3 = replace_sorted(own3.reshape(-1), cross3.reshape(-1)).reshape(own3.shape)
    held = cross2.sum(-1) != 0
    cross2[held] = replace_sorted(own2[held].reshape(-1), cross2[held].reshape(-1)).reshape(-1, own2.shape[1])
    out = []
    for own, cross, confidence in ((own2, cross2, confidence2), (own3, cross3, confidence3)):
        boosted = torch.maximum(own, cross) * confidence[:, None]
        out.append(((own + replace_sorted(own.reshape(-1), boosted.reshape(-1)).reshape(own.shape)) / 2).numpy())
    return out[0], out[1]


def rscon(scores: np.ndarray, salient: np.ndarray, ks: tuple[int, ...]) -> np.ndarray:
    """RsCon (`_RsCon.py`): min-max-normalised object scores propagated over each scan's k largest raw dot
    products of anomaly-salient features (itself among them, weights as they are, rows normalised),
    averaged over k (1 always among them); k is capped at the set size (the release fails above it)."""
    if len(scores) < 2:
        return scores
    s = (scores - scores.min()) / max(float(np.ptp(scores)), 1e-12)
    sim = salient.astype(np.float64) @ salient.T.astype(np.float64)
    out = []
    for k in sorted(set(ks) | {1}):
        keep = np.argsort(sim, axis=1, kind="stable")[:, len(sim) - min(k, len(sim)) :]
        w = np.zeros_like(sim)
        np.put_along_axis(w, keep, np.take_along_axis(sim, keep, 1), 1)
        out.append((w / w.sum(1, keepdims=True)) @ s)
    return np.mean(out, 0)


# --- ad3d's variants (steps="ad3d", the default: measured better with the weight-free features; docs/detectors/musc.md)


def curvature_with_centre(points: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """(G,) surface variation lambda_min / sum(lambda) of each group of points (G, k), the centre included."""
    groups = points[neighbours].astype(np.float64)
    centred = groups - groups.mean(1, keepdims=True)
    eig = np.linalg.eigvalsh(np.einsum("gki,gkj->gij", centred, centred))
    return eig[:, 0] / np.maximum(eig.sum(1), 1e-30)


def iterative_groups_unique(
    points: np.ndarray, centres: np.ndarray, size: int, search: int, step: int, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """IPG with distinct members: a curved centre's group grows by the `step` candidates nearest to the
    group so far (each candidate once), until it holds `size`."""
    search = min(search, len(points))
    size, step = min(size, search), min(step, size)
    candidates = nearest(points[centres], points, search)
    curv = curvature_with_centre(points, candidates[:, :size])
    groups = candidates[:, :size].copy()
    for g in np.flatnonzero(curv >= threshold):
        member = list(candidates[g, :step])
        rest = candidates[g, step:]
        while len(member) < size and len(rest):
            gap = np.linalg.norm(points[rest][:, None] - points[member][None], axis=2).min(1)
            take = np.argsort(gap, kind="stable")[: min(step, size - len(member))]
            member += list(rest[take])
            rest = np.delete(rest, take)
        groups[g] = member
    return groups, curv


def snamd_group_views(
    features: np.ndarray, centres: np.ndarray, flat: np.ndarray, degrees: tuple[int, ...]
) -> list[np.ndarray]:
    """SNAMD on groups, one (G, C) view per degree: a flat group's similarity-weighted mean over its r nearest
    group centres, L2-normalised; curved groups keep theirs."""
    near = nearest(centres, centres, max(degrees))
    neighbours = features[near]
    means = similarity_means(neighbours, neighbours[:, 0], [np.arange(min(r, near.shape[1])) for r in degrees])
    return [unit(np.where(flat[:, None], m, features)) for m in means]


def snamd_patch_views(grid: np.ndarray, degrees: tuple[int, ...]) -> list[np.ndarray]:
    """SNAMD on a (C, h, w) patch grid, one (h w, C) view per degree: the similarity-weighted mean over the
    r x r window (the border repeated), L2-normalised."""
    f = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32))[None]
    c, h, w = grid.shape
    out = []
    for r in degrees:
        window = torch.nn.functional.unfold(torch.nn.functional.pad(f, [r // 2] * 4, mode="replicate"), r)
        window = window.reshape(c, r * r, h * w).permute(2, 1, 0).numpy()
        out.append(unit(similarity_means(window, window[:, (r * r) // 2], [np.arange(r * r)])[0]))
    return out


def rank_map(values: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Each value replaced by the target's value at the same quantile (ties share their mean rank)."""
    from scipy.stats import rankdata

    flat = values.reshape(-1)
    ranks = (rankdata(flat) - 1) / (len(flat) - 1) if len(flat) > 1 else np.full(1, 0.5)
    return np.quantile(target.reshape(-1), ranks).reshape(values.shape)


def enhance_by_quantile(own: np.ndarray, other: np.ndarray) -> np.ndarray:
    """CAE for one modality: `own` (rows, R) distances, `other` the other modality's distances pooled onto
    the same rows (NaN where it has none), rank-mapped onto the own distribution, the larger kept,
    weighted by a confidence (1 - the quantile of their spread across references), rank-mapped again
    and averaged with the own distances."""
    have = ~np.isnan(other).any(1)
    if not have.any():
        return own
    mapped = rank_map(other[have], own)
    confidence = 1 - rank_map(mapped.std(1), np.linspace(0, 1, 101))
    out = own.copy()
    out[have] = (rank_map(np.maximum(own[have], mapped) * confidence[:, None], own) + own[have]) / 2
    return out


def rscon_cosine(scores: np.ndarray, salient: np.ndarray, ks: tuple[int, ...]) -> np.ndarray:
    """RsCon over cosine similarities, negative weights clipped to 0 (k capped at the set size)."""
    if len(scores) < 2:
        return scores
    s = (scores - scores.min()) / max(float(np.ptp(scores)), 1e-12)
    f = unit(salient)
    sim = f @ f.T
    out = []
    for k in ks:
        keep = np.argsort(-sim, axis=1, kind="stable")[:, : min(k, len(scores))]
        w = np.zeros_like(sim)
        np.put_along_axis(w, keep, np.take_along_axis(sim, keep, 1).clip(min=0), 1)
        out.append((w / np.maximum(w.sum(1, keepdims=True), 1e-12)) @ s)
    return np.mean(out, 0)


def unit(features: np.ndarray) -> np.ndarray:
    return (features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-12)).astype(np.float32)
