"""MuSc-V2 (zero-shot mutual scoring; Li et al., TPAMI 2026): every scan of a set is scored by the other,
unlabelled scans of the same part. Normal regions find close matches in other scans; a defect finds few.

3D: FPS centres; Iterative Point Grouping (IPG: a flat centre takes its k nearest points, a curved one
grows its group from the nearest points out of a larger search space, so groups do not bridge separate
surfaces); group features = FPFH at two radii averaged over the group (the weight-free default), or
the blocks of a Point-MAE encoder run on the IPG groups (`point_features="point-mae"`, local weights, as
released); SNAMD (flat groups take similarity-weighted means over their 1, 3 and 5
nearest group centres, curved groups keep their own feature). 2D (organised scans with colour): image
backbone layers on the stride-8 patch grid, the same aggregation over 1, 3 and 5 patch windows. Mutual
Scoring (MSM): a row's nearest distance into each other scan, averaged over layers and degrees; with
both modalities, the cross-modal anomaly enhancement (CAE) between patches and groups; then the mean of
the lowest 30 % per row. Scores reach points by inverse-distance weights (3D) and through the image map
(2D, fused 2D + 3D, blurred). Object score = the max at the scan's points, re-scored by RsCon over the
scans' anomaly-salient features (k in 1 and 7).

`fit(scans)` keeps an optional reference pool: then one scan can be scored alone against it. Time grows
with the square of the set size (each scan's rows against every other scan); memory with its size (all
features held, one scan's distance block at a time); `subset_size` splits large sets.
"""

from __future__ import annotations

import numpy as np
import torch

from ad3d.detectors.base import Detector
from ad3d.detectors.registry import register
from ad3d.errors import ConfigError
from ad3d.types import Scan


def curvature(points: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """(G,) surface variation lambda_min / sum(lambda) of each group of points (G, k) indices."""
    groups = points[neighbours]
    centred = groups - groups.mean(1, keepdims=True)
    eig = np.linalg.eigvalsh(np.einsum("gki,gkj->gij", centred, centred))
    return eig[:, 0] / np.maximum(eig.sum(1), 1e-30)


def iterative_groups(
    points: np.ndarray, centres: np.ndarray, size: int, search: int, step: int, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """IPG: (G, size) member indices and (G,) curvatures. A centre of curvature below `threshold` takes
    its `size` nearest points; a curved one starts from its `step` nearest and repeatedly adds the `step`
    candidates (of its `search` nearest) closest to the group so far, until it holds `size`."""
    from ad3d import ops

    pts = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    search = min(search, len(points))
    size, step = min(size, search), min(step, size)
    candidates = ops.knn(pts[centres], pts, search)[1].numpy()
    curv = curvature(points, candidates[:, :size])
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


def snamd(features: np.ndarray, centres: np.ndarray, flat: np.ndarray, degrees: tuple[int, ...]) -> list[np.ndarray]:
    """SNAMD on groups: per degree r, each flat group's feature becomes the similarity-weighted mean
    (w = exp(-|f_q - f_p|)) over its r nearest group centres (itself first); curved groups keep theirs."""
    from ad3d import ops

    c = torch.from_numpy(np.ascontiguousarray(centres, dtype=np.float32))
    near = ops.knn(c, c, min(max(degrees), len(centres)))[1].numpy()
    out = []
    for r in degrees:
        idx = near[:, :r]
        weight = np.exp(-np.linalg.norm(features[idx] - features[:, None], axis=2))
        mixed = (weight[..., None] * features[idx]).sum(1) / weight.sum(1, keepdims=True)
        out.append(np.where(flat[:, None], mixed, features).astype(np.float32))
    return out


def mutual_distances(sets: list[np.ndarray], pool: list[np.ndarray] = ()) -> list[np.ndarray]:
    """For each set of (G, D) features: (G, R) nearest distances of each row into each of the R other
    sets and pool sets (in the order: other sets, then pool)."""
    out = []
    for i, query in enumerate(sets):
        q = torch.from_numpy(query)
        nearest = [
            torch.cdist(q, torch.from_numpy(other)).min(1).values
            for j, other in enumerate(list(sets) + list(pool))
            if j != i
        ]
        if not nearest:
            raise ConfigError(
                "musc scores a scan against other scans: give it a set of scans, or fit it with "
                "a reference pool of unlabelled scans first"
            )
        out.append(torch.stack(nearest, 1).numpy())
    return out


def interval_mean(distances: np.ndarray, interval: float) -> np.ndarray:
    """MSM's score per row: the mean of the lowest `interval` share of its distances (at least one)."""
    keep = max(1, int(interval * distances.shape[1]))
    return np.sort(distances, axis=1)[:, :keep].mean(1)


def mutual_scores(sets: list[np.ndarray], interval: float, pool: list[np.ndarray] = ()) -> list[np.ndarray]:
    """MSM: each row's nearest distance into every other set (and pool set), lowest share averaged."""
    return [interval_mean(d, interval) for d in mutual_distances(sets, pool)]


def rank_map(values: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Each value replaced by the target's value at the same quantile (its rank among `values`, ties
    sharing their mean rank)."""
    from scipy.stats import rankdata

    flat = values.reshape(-1)
    ranks = (rankdata(flat) - 1) / (len(flat) - 1) if len(flat) > 1 else np.full(1, 0.5)
    return np.quantile(target.reshape(-1), ranks).reshape(values.shape)


def enhance(own: np.ndarray, other: np.ndarray) -> np.ndarray:
    """CAE for one modality: `own` (rows, R) distances to the R reference scans, `other` the other
    modality's distances pooled onto the same rows (NaN where it has none). The other's distances are
    rank-mapped onto the own distribution, the larger of the two kept, weighted by a confidence (1 - the
    rank of their spread across references), rank-mapped again and averaged with the own distances."""
    have = ~np.isnan(other).any(1)
    if not have.any():
        return own
    mapped = rank_map(other[have], own)
    spread = mapped.std(1)
    confidence = 1 - rank_map(spread, np.linspace(0, 1, 101))
    enhanced = rank_map(np.maximum(own[have], mapped) * confidence[:, None], own)
    out = own.copy()
    out[have] = (enhanced + own[have]) / 2
    return out


def lnamd(features: np.ndarray, degrees: tuple[int, ...]) -> list[np.ndarray]:
    """SNAMD on a (C, h, w) patch grid: per degree r, each patch becomes the similarity-weighted mean
    (w = exp(-|f_q - f_p|)) over the r x r window around it; (h w, C) per degree."""
    f = torch.from_numpy(np.ascontiguousarray(features))[None]
    c, h, w = features.shape
    out = []
    for r in degrees:
        window = torch.nn.functional.unfold(torch.nn.functional.pad(f, [r // 2] * 4, mode="replicate"), r)
        window = window.reshape(c, r * r, h * w)
        centre = f.reshape(c, 1, h * w)
        weight = torch.exp(-(window - centre).norm(dim=0, keepdim=True))
        out.append(((weight * window).sum(1) / weight.sum(1)).T.numpy())
    return out


def rscon(scores: np.ndarray, salient: np.ndarray, ks: tuple[int, ...]) -> np.ndarray:
    """RsCon: min-max-normalised object scores propagated over each scan's k most similar scans (cosine
    of the anomaly-salient features, itself included, rows normalised), averaged over k."""
    if len(scores) < 2:
        return scores
    s = (scores - scores.min()) / max(float(np.ptp(scores)), 1e-12)
    f = salient / np.maximum(np.linalg.norm(salient, axis=1, keepdims=True), 1e-12)
    sim = f @ f.T
    out = []
    for k in ks:
        k = min(k, len(scores))
        keep = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        w = np.zeros_like(sim)
        np.put_along_axis(w, keep, np.take_along_axis(sim, keep, 1).clip(min=0), 1)
        w /= np.maximum(w.sum(1, keepdims=True), 1e-12)
        out.append(w @ s)
    return np.mean(out, 0)


def _as_tuple(value) -> tuple:
    """One number or several (`--param radii=0.1` or `radii=0.05,0.1`) as a tuple."""
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


@register
class MuSc(Detector):
    name = "musc"
    learning_type = "zero-shot"
    _state_arrays = ("pool_", "pool_rgb_")

    def __init__(
        self,
        modalities: tuple[str, ...] = ("xyz",),
        num_groups: int = 1024,
        group_size: int = 128,
        ipg: bool = True,
        curvature_threshold: float = 0.01,
        search_size: int = 256,
        grow_step: int = 80,
        radii: tuple[float, ...] = (0.05, 0.1),
        point_features: str = "fpfh",
        point_weights: str | None = None,
        degrees: tuple[int, ...] = (1, 3, 5),
        interval: float = 0.3,
        cae: bool = True,
        rscon: bool = True,
        rscon_k: tuple[int, ...] = (1, 7),
        image_backbone: str = "efficientnet-lite0",
        image_weights: str | None = None,
        image_size: int = 224,
        blur: float = 4.0,
        subset_size: int | None = None,
        seed: int = 0,
    ):
        self.modalities = _as_tuple(modalities)
        self.num_groups, self.group_size, self.ipg = num_groups, group_size, ipg
        self.curvature_threshold, self.search_size, self.grow_step = curvature_threshold, search_size, grow_step
        self.radii, self.degrees, self.interval = _as_tuple(radii), _as_tuple(degrees), interval
        self.point_features, self.point_weights = point_features, point_weights
        self.cae, self.rscon, self.rscon_k = cae, rscon, _as_tuple(rscon_k)
        self.image_backbone, self.image_weights, self.image_size, self.blur = (
            image_backbone,
            image_weights,
            image_size,
            blur,
        )
        self.subset_size, self.seed = subset_size, seed
        self.pool_ = self.pool_rgb_ = None

    def check_params(self) -> None:
        checks = {
            "modalities": len(self.modalities) >= 1 and set(self.modalities) <= {"xyz", "rgb"},
            "num_groups": self.num_groups >= 1,
            "group_size": self.group_size >= 1,
            "radii": len(self.radii) >= 1 and all(r > 0 for r in self.radii),
            "point_features": self.point_features in ("fpfh", "point-mae"),
            "degrees": len(self.degrees) >= 1 and all(d >= 1 and d % 2 == 1 for d in self.degrees),
            "interval": 0 < self.interval <= 1,
            "image_size": self.image_size >= 32,
            "blur": self.blur >= 0,
            "subset_size": self.subset_size is None or self.subset_size >= 2,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"musc {name}={getattr(self, name)!r} is out of range")

    def fingerprints(self) -> list[dict]:
        nets = [self._image_net()] if "rgb" in self.modalities else []
        if "xyz" in self.modalities and self.point_features == "point-mae":
            nets.append(self._point_net())
        return [net.fingerprint() for net in nets]

    # --- features -----------------------------------------------------------------------------
    def describe(self, scan: Scan) -> dict:
        """3D: FPS centres (indices and points) and per radius and degree the (G, D) group features;
        2D (organised scans with colour): per layer and degree the (P, C) patch features and the grid.
        Every feature L2-normalised."""
        out = {}
        if "xyz" in self.modalities:
            out.update(self._describe_points(scan))
        if "rgb" in self.modalities:
            out.update(self._describe_image(scan))
        return out

    def _describe_points(self, scan: Scan) -> dict:
        from ad3d import ops
        from ad3d.features import fpfh

        points = np.ascontiguousarray(scan.points, dtype=np.float32)
        centres = ops.even_subset(points, self.num_groups)
        if self.ipg:
            groups, curv = iterative_groups(
                points, centres, self.group_size, self.search_size, self.grow_step, self.curvature_threshold
            )
        else:
            groups = ops.knn(
                torch.from_numpy(points[centres]), torch.from_numpy(points), min(self.group_size, len(points))
            )[1].numpy()
            curv = np.zeros(len(centres))
        if self.point_features == "point-mae":  # one layer per kept block, computed on the IPG groups
            layers = self._point_net().blocks_of(points, centres, groups)
        else:
            diag = float(np.linalg.norm(np.ptp(points, axis=0)))
            layers = [fpfh(points, radius * diag)[groups].mean(1) for radius in self.radii]
        flat = curv < self.curvature_threshold
        views = [v for layer in layers for v in snamd(layer, points[centres], flat, self.degrees)]
        return {"centre_idx": centres, "views": _unit(np.stack(views))}  # (V, G, D)

    def _point_net(self):
        if getattr(self, "_point", None) is None:
            from ad3d.features import point_backbone

            self._point = point_backbone("point-mae", weights=self.point_weights, seed=self.seed)
        return self._point

    def _image_net(self):
        if getattr(self, "_image", None) is None:
            from ad3d.features import image_backbone

            self._image = image_backbone(self.image_backbone, weights=self.image_weights)
        return self._image

    def _describe_image(self, scan: Scan) -> dict:
        if scan.image is None or not scan.is_organised:
            raise ConfigError(f"musc with rgb needs an organised scan with its colour image: '{scan.path or 'scan'}'")
        maps, size = self._image_net().on_grid(scan.image, self.image_size)
        views = [v for m in maps for v in lnamd(m.numpy(), self.degrees)]
        width = max(v.shape[1] for v in views)  # layers differ in channels: zeros added keep every distance
        padded = np.stack([np.pad(v, ((0, 0), (0, width - v.shape[1]))) for v in views])
        return {"grid": tuple(size), "views_rgb": _unit(padded)}  # (V, P, C)

    def _fit(self, scans: list[Scan], progress: bool) -> None:
        from tqdm import tqdm

        described = [self.describe(s) for s in tqdm(scans, desc="musc pool", disable=not progress, leave=False)]
        for key, attr in (("views", "pool_"), ("views_rgb", "pool_rgb_")):
            arrays = [d[key] for d in described if key in d]
            if arrays and len({a.shape for a in arrays}) > 1:
                raise ConfigError("musc pool scans must each hold at least num_groups points and images of one size")
            setattr(self, attr, np.stack(arrays) if arrays else np.zeros((0, 1, 1, 1), np.float32))

    def update_pool(self, scans) -> MuSc:
        """Add scans (e.g. the ones a line has accepted) to the reference pool; returns self."""
        self._check_fitted()
        described = [self.describe(s) for s in scans]
        for key, attr in (("views", "pool_"), ("views_rgb", "pool_rgb_")):
            arrays = [d[key] for d in described if key in d]
            if arrays:
                old = getattr(self, attr)
                setattr(self, attr, np.concatenate([old, np.stack(arrays)]) if len(old) else np.stack(arrays))
        return self

    # --- scoring ------------------------------------------------------------------------------
    def _score_batch(self, scans: list[Scan]) -> list[tuple[np.ndarray, float]]:
        size = self.subset_size or len(scans)
        results = []
        for start in range(0, len(scans), size):
            results += self._score_set(scans[start : start + size])
        return results

    def _distances(self, described: list[dict], key: str, pool: np.ndarray | None) -> list[np.ndarray]:
        """Per scan, (rows, R) distances to the R other scans and pool scans, averaged over the views."""
        pool = list(pool) if pool is not None and len(pool) else []
        views = described[0][key].shape[0]
        per_view = [mutual_distances([d[key][v] for d in described], [p[v] for p in pool]) for v in range(views)]
        return [np.mean([per_view[v][i] for v in range(views)], axis=0) for i in range(len(described))]

    def _score_set(self, scans: list[Scan]) -> list[tuple[np.ndarray, float]]:
        from ad3d import fusion, ops
        from ad3d.detectors.scoring import blur_map

        described = [self.describe(s) for s in scans]
        use3d, use2d = "xyz" in self.modalities, "rgb" in self.modalities
        d3 = self._distances(described, "views", self.pool_) if use3d else None
        d2 = self._distances(described, "views_rgb", self.pool_rgb_) if use2d else None
        results, salient = [], []
        for i, (scan, d) in enumerate(zip(scans, described)):
            s3 = s2 = None
            if use3d and use2d and self.cae:
                patch = fusion.patch_of_points(scan.subset(d["centre_idx"]), d["grid"][0])
                pooled = np.full_like(d2[i], np.nan)
                for p in np.unique(patch):
                    pooled[p] = d3[i][patch == p].mean(0)
                d2_i, d3_i = enhance(d2[i], pooled), enhance(d3[i], d2[i][patch])
            else:
                d2_i, d3_i = (d2[i] if use2d else None), (d3[i] if use3d else None)
            if use3d:
                s3 = interval_mean(d3_i, self.interval)
                centres = torch.from_numpy(scan.points[d["centre_idx"]])
                points3 = ops.interpolate(torch.from_numpy(scan.points), centres, torch.from_numpy(s3)).numpy()
            if use2d:
                s2 = interval_mean(d2_i, self.interval)
                full, _ = fusion.map_to_points(scan, s2.reshape(d["grid"]))
                if use3d:
                    full = full + scan.to_image(points3)
                image = blur_map(full, self.blur * scan.grid_shape[0] / self.image_size) if self.blur else full
                scores = image.astype(np.float32)
                at_points = image.reshape(-1)[scan.grid_index]
            else:
                scores = at_points = points3.astype(np.float32)
            parts = ([d["views"][:, int(np.argmax(s3))].reshape(-1)] if use3d else []) + (
                [d["views_rgb"][:, int(np.argmax(s2))].reshape(-1)] if use2d else []
            )
            salient.append(np.concatenate(parts))
            results.append((scores, float(at_points.max())))
        if self.rscon and len(scans) > 1:
            objects = rscon(np.array([o for _, o in results]), np.stack(salient), tuple(self.rscon_k))
            results = [(sc, float(o)) for (sc, _), o in zip(results, objects)]
        return results


def _unit(features: np.ndarray) -> np.ndarray:
    return (features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-12)).astype(np.float32)
