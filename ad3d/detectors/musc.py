"""MuSc-V2 (zero-shot mutual scoring; Li et al., TPAMI 2026; release HUST-SLOW/MuSc-V2 @ b5e911d): every scan
of a set is scored by the other, unlabelled scans of the same part. Normal regions find close matches in
other scans; a defect finds few. Score: the mean of a region's lowest 30 % nearest distances to the other
scans' features.

3D: FPS centres, Iterative Point Grouping, group features per layer (FPFH at each radius averaged over
the group, the weight-free default, or the blocks of a Point-MAE encoder from local weights), SNAMD over
the 1, 3, 5 nearest group centres for flat groups; 2D (organised scans with colour): image backbone
layers on the patch grid, SNAMD over 1, 3, 5 patch windows. Mutual Scoring (MSM), the cross-modal anomaly
enhancement (CAE) when both modalities are read, maps carried to every point, object score = the map's
max re-scored by RsCon over the scans' anomaly-salient features (k in 1 and 7).

`steps="release"` (the paper preset) computes each step as the release does (`musc_steps`, checked
against the release's outputs in tests/oracle): organised scans resized to image_size squared first,
degrees pooled into one feature per layer, MSM and CAE per layer then the mean, 1/d^2 weights to points,
the 3D map blurred and the 2D map added. `steps="ad3d"` (the default) keeps ad3d's variants, measured
better with the weight-free features on the development parts (docs/detectors/musc.md): scans at their
own resolution, one view per layer and degree with the distances averaged over views, quantile-mapped
CAE, 1/d weights, the fused map blurred, RsCon on cosines.

`fit(scans)` keeps an optional reference pool: then one scan can be scored alone against it. Time grows
with the square of the set size; memory with its size; `subset_size` splits large sets.
"""

from __future__ import annotations

import numpy as np
import torch

from ad3d.detectors import musc_steps as steps
from ad3d.detectors.base import Detector, as_tuple
from ad3d.detectors.neural import resolve_device
from ad3d.detectors.registry import register
from ad3d.detectors.scoring import blur_8bit, spread
from ad3d.errors import ConfigError
from ad3d.types import Scan, diagonal

PRESETS = {
    "cpu": {"point_features": "fpfh", "image_backbone": "efficientnet-lite0"},
    "paper": {"steps": "release", "point_features": "point-mae", "image_backbone": "dino-vitb8"},
}


@register
class MuSc(Detector):
    name = "musc"
    learning_type = "zero-shot"
    PRESETS = PRESETS
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
        steps: str = "ad3d",
        device: str = "cpu",
        seed: int = 0,
    ):
        self._store_params(locals())
        self.pool_ = self.pool_rgb_ = None

    def check_params(self) -> None:
        checks = {
            "modalities": len(self.reads) >= 1 and set(self.reads) <= {"xyz", "rgb"},
            "num_groups": self.num_groups >= 1,
            "group_size": self.group_size >= 1,
            "radii": len(as_tuple(self.radii)) >= 1 and all(r > 0 for r in as_tuple(self.radii)),
            "point_features": self.point_features in ("fpfh", "point-mae"),
            "degrees": len(as_tuple(self.degrees)) >= 1 and all(d >= 1 and d % 2 == 1 for d in as_tuple(self.degrees)),
            "interval": 0 < self.interval <= 1,
            "image_size": self.image_size >= 32,
            "blur": self.blur >= 0,
            "subset_size": self.subset_size is None or self.subset_size >= 2,
            "steps": self.steps in ("release", "ad3d"),
        }
        self._require(checks)

    def fingerprints(self) -> list[dict]:
        nets = [self._image_net()] if "rgb" in self.reads else []
        if "xyz" in self.reads and self.point_features == "point-mae":
            nets.append(self._point_net())
        return [net.fingerprint() for net in nets]

    # --- features -----------------------------------------------------------------------------
    def describe(self, scan: Scan) -> dict:
        """3D: the cloud scored (steps='release': an organised scan's points resized to image_size squared;
        else the scan's points), the pixel of each point and the grid (organised scans), the FPS centres and
        the (V, G, D) group features; 2D (organised scans with colour): the (V, P, C) patch features and
        the patch grid. V: one view per layer (release) or per layer and degree (ad3d)."""
        out = {}
        if "xyz" in self.reads:
            out.update(self._describe_points(scan))
        if "rgb" in self.reads:
            out.update(self._describe_image(scan))
        return out

    def _cloud(self, scan: Scan) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int] | None]:
        """(points, each point's pixel, the pixel grid's shape); (points, None, None) for a scan without one.
        The release's loader brings organised clouds to image_size squared (nearest) before anything else."""
        points = np.ascontiguousarray(scan.points, dtype=np.float32)
        if not scan.is_organised:
            return points, None, None
        if self.steps != "release":
            return points, scan.grid_index, scan.grid_shape
        from ad3d import fusion

        resized = fusion.resize(scan, self.image_size)
        pixels = np.flatnonzero(resized.valid.reshape(-1))
        return np.ascontiguousarray(resized.xyz.reshape(-1, 3)[pixels]), pixels, (self.image_size,) * 2

    def _describe_points(self, scan: Scan) -> dict:
        from ad3d import ops
        from ad3d.features import fpfh

        release = self.steps == "release"
        points, pixels, pixel_grid = self._cloud(scan)
        if self.ipg:
            centres = ops.even_subset(points, self.num_groups)
            grouping = steps.iterative_groups if release else steps.iterative_groups_unique
            groups, curv = grouping(
                points, centres, self.group_size, self.search_size, self.grow_step, self.curvature_threshold
            )
        else:
            centres, groups = ops.group_points(points, self.num_groups, self.group_size)
            curv = np.zeros(len(centres))
        if self.point_features == "point-mae":  # one layer per kept block, computed on the IPG groups
            layers = self._point_net().blocks_of(points, centres, groups)
        else:
            diag = diagonal(points)
            layers = [fpfh(points, radius * diag)[groups].mean(1) for radius in as_tuple(self.radii)]
        flat, where = curv < self.curvature_threshold, points[centres]
        if release:
            views = [steps.snamd_groups(steps.unit(layer), where, flat, as_tuple(self.degrees)) for layer in layers]
        else:
            views = [v for layer in layers for v in steps.snamd_group_views(layer, where, flat, as_tuple(self.degrees))]
        return {
            "points": points,
            "pixels": pixels,
            "pixel_grid": pixel_grid,
            "centre_idx": centres,
            "views": np.stack(views),
        }

    def _point_net(self):
        if getattr(self, "_point", None) is None:
            from ad3d.features import point_backbone

            self._point = point_backbone(
                "point-mae", weights=self.point_weights, seed=self.seed, device=resolve_device(self.device)
            )
        return self._point

    def _image_net(self):
        if getattr(self, "_image", None) is None:
            from ad3d.features import image_backbone

            self._image = image_backbone(
                self.image_backbone, weights=self.image_weights, device=resolve_device(self.device)
            )
        return self._image

    def _describe_image(self, scan: Scan) -> dict:
        if scan.image is None or not scan.is_organised:
            raise ConfigError(f"musc with rgb needs an organised scan with its colour image: '{scan.path or 'scan'}'")
        maps, size = self._image_net().on_grid(scan.image, self.image_size)
        if self.steps == "release":
            views = [steps.snamd_patches(m.numpy(), as_tuple(self.degrees)) for m in maps]
        else:
            views = [v for m in maps for v in steps.snamd_patch_views(m.numpy(), as_tuple(self.degrees))]
        width = max(v.shape[1] for v in views)  # layers differ in channels: zeros added keep every distance
        padded = np.stack([np.pad(v, ((0, 0), (0, width - v.shape[1]))) for v in views])
        return {"grid": tuple(size), "views_rgb": padded}  # (V, P, C)

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

    def _distances(self, described: list[dict], key: str, pool: np.ndarray | None) -> list[list[np.ndarray]]:
        """Per scan, per view: (rows, R) nearest distances to the R other scans and pool scans."""
        pool = list(pool) if pool is not None and len(pool) else []
        views = described[0][key].shape[0]
        per_view = [
            steps.mutual_distances([d[key][v] for d in described], [p[v] for p in pool], self.device)
            for v in range(views)
        ]
        return [[per_view[v][i] for v in range(views)] for i in range(len(described))]

    def _layer_scores(self, d2: list | None, d3: list | None, patch_of_group: np.ndarray | None):
        """(2D patch scores or None, 3D group scores or None) from each view's distances. release: MSM per
        view (with CAE between the views of the two modalities, paired cyclically when their counts
        differ), then the mean over views; ad3d: the distances averaged over views, CAE, then MSM."""
        fused = d2 is not None and d3 is not None and self.cae
        if self.steps == "release":
            if fused:
                rounds = [
                    steps.enhance(d2[r % len(d2)], d3[r % len(d3)], patch_of_group)
                    for r in range(max(len(d2), len(d3)))
                ]
                d2, d3 = [e2 for e2, _ in rounds], [e3 for _, e3 in rounds]
            return tuple(
                None if d is None else np.mean([steps.interval_mean(x, self.interval) for x in d], 0) for d in (d2, d3)
            )
        d2, d3 = (None if d is None else np.mean(d, 0) for d in (d2, d3))
        if fused:
            pooled = np.full_like(d2, np.nan)
            for p in np.unique(patch_of_group):
                pooled[p] = d3[patch_of_group == p].mean(0)
            d2, d3 = steps.enhance_by_quantile(d2, pooled), steps.enhance_by_quantile(d3, d2[patch_of_group])
        return tuple(None if d is None else steps.interval_mean(d, self.interval) for d in (d2, d3))

    def _score_set(self, scans: list[Scan]) -> list[tuple[np.ndarray, float]]:
        described = [self.describe(s) for s in scans]
        use3d, use2d = "xyz" in self.reads, "rgb" in self.reads
        d3 = self._distances(described, "views", self.pool_) if use3d else None
        d2 = self._distances(described, "views_rgb", self.pool_rgb_) if use2d else None
        results, salient = [], []
        for i, (scan, d) in enumerate(zip(scans, described)):
            patch_of_group = self._patch_of_group(d) if use3d and use2d else None
            s2, s3 = self._layer_scores(d2[i] if use2d else None, d3[i] if use3d else None, patch_of_group)
            results.append(self._maps(scan, d, s2, s3))
            salient.append(
                np.concatenate(
                    [self._salient(d[key], s) for key, s in (("views_rgb", s2), ("views", s3)) if s is not None]
                )
            )
        if self.rscon and len(scans) > 1:
            rescore = steps.rscon if self.steps == "release" else steps.rscon_cosine
            objects = rescore(np.array([o for _, o in results]), np.stack(salient), as_tuple(self.rscon_k))
            results = [(sc, float(o)) for (sc, _), o in zip(results, objects)]
        return results

    def _salient(self, views: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The anomaly-salient feature: at the most anomalous row, the second-to-last view's feature (release)
        or every view's (ad3d)."""
        row = int(np.argmax(scores))
        return views[max(0, len(views) - 2), row] if self.steps == "release" else views[:, row].reshape(-1)

    @staticmethod
    def _patch_of_group(described: dict) -> np.ndarray:
        """(G,) the patch (row-major on the patch grid) holding each group centre's pixel."""
        (height, width), (rows_p, cols_p) = described["pixel_grid"], described["grid"]
        rows, cols = np.divmod(described["pixels"][described["centre_idx"]], width)
        return (rows * rows_p // height) * cols_p + cols * cols_p // width

    def _maps(self, scan: Scan, described: dict, s2: np.ndarray | None, s3: np.ndarray | None):
        """(per-point scores or an (H, W) map at the scan's grid, object score). Group scores reach points by
        inverse-distance weights of the 3 nearest centres (release: 1/d^2, ad3d: 1/d). On an organised
        scan, release: on the image_size grid the 3D map blurred, the 2D map (bilinear, corners aligned)
        added, each pixel of the scan taking its resized pixel's value; ad3d: the 2D map at the scan's grid
        plus the 3D scores, blurred together. Object score: the max of the map (or of the points)."""
        from ad3d import fusion
        from ad3d.detectors.scoring import blur_map

        release, points3 = self.steps == "release", None
        if s3 is not None:
            points = described["points"]
            centres = points[described["centre_idx"]]
            points3 = spread(points, centres, s3.astype(np.float32), power=2 if release else 1).astype(np.float32)
            if not scan.is_organised or (s2 is None and not release):
                return points3, float(points3.max())
        if not release:
            full, _ = fusion.map_to_points(scan, s2.reshape(described["grid"]))
            if points3 is not None:
                full = full + scan.to_image(points3)
            image = blur_map(full, self.blur * scan.grid_shape[0] / self.image_size) if self.blur else full
            return image.astype(np.float32), float(image.reshape(-1)[scan.grid_index].max())
        size = self.image_size
        image = np.zeros((size, size), np.float32)
        if points3 is not None:
            flat = np.zeros(size * size, np.float32)
            flat[described["pixels"]] = points3
            image += blur_8bit(flat.reshape(size, size), self.blur) if self.blur else flat.reshape(size, size)
        if s2 is not None:
            patch_map = torch.from_numpy(s2.reshape(described["grid"]).astype(np.float32))[None, None]
            up = torch.nn.functional.interpolate(patch_map, size=(size, size), mode="bilinear", align_corners=True)
            image += up[0, 0].numpy()
        h, w = scan.grid_shape
        rows, cols = np.arange(h) * size // h, np.arange(w) * size // w
        return image[rows[:, None], cols[None, :]], float(image.max())
