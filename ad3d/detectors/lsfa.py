"""LSFA (Tu et al., ECCV 2024): self-supervised adaptation of frozen RGB and point features, then
M3DM's memory-bank scoring and decision-layer fusion.

Tokens: on organised RGB-D scans, one RGB and one point feature per patch of a patches x patches
layout (image backbone maps pooled from their stride-8 grid: 28 x 28 at 224, the release's 56 x 56 in
the paper preset; per-point FPFH, or Point-MAE group features carried to points, averaged per patch
through `grid_index`); on point-only scans, FPS groups (mean FPFH of the
group). Adaptors: one transformer block per modality; projection heads only feed the losses:
 - local cross-modal consistency: patch InfoNCE between the RGB and point feature of the same patch;
 - RGB rotation consistency: InfoNCE between the patches of the image and of a copy with every 4 x 4
   block rotated by a multiple of 90 degrees, on a random sixth of the patches (weight 0.05);
 - intra-modal compactness: mean nearest distance of the adapted patches, and of the scan's mean
   feature, to FIFO queues of earlier ones (0.4 for the global term), after a warm-up (weight 0.9);
 - global cross-modal consistency: InfoNCE between the scans' mean RGB and mean point features (weight
   0.1), each through its own modality's head as the paper describes (the release passes the RGB means
   through the point head).
Scoring: a coreset memory bank per modality of the adapted training patches (standardised per dimension
as released for the image features; FPFH histograms kept raw by default, chosen on development parts);
each patch's nearest distance; fused per patch by a one-class SVM learned on held-out normal scans only
(M3DM's decision layer) or by a sum of scores standardised on those scans; patches holding no point of
the part set to the part's least anomalous patch (else the background's colour scores bleed into the
silhouette's points); the map brought to the image, blurred, read at every point. Object score = the
mean of the top 5 % of the scan's point scores. `fit_joint` trains one
adaptor on every category of a dataset, as released. `device` runs the backbones, the coreset and the
nearest-distance queries; the adaptors (one block each) train on the CPU. The paper preset's losses='release',
point_tokens='m3dm' and scoring='release' compute the InfoNCE scale, the compactness clamp, the rotated
copies, M3DM's point tokens and the release's decision layer (`decision_layer`) as the releases do
(docs/detectors/lsfa.md; tests/oracle).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ad3d.detectors.base import Detector, as_tuple
from ad3d.detectors.lsfa_adapt import Adaptation
from ad3d.detectors.neural import resolve_device
from ad3d.detectors.registry import register
from ad3d.detectors.scoring import spread
from ad3d.errors import ConfigError
from ad3d.nn.adaptor import rotate_blocks
from ad3d.types import Scan, diagonal

POINT_GROUP_SIZE = 32  # points averaged into each group's feature on point-only scans (FPFH mode)
PRESETS = {
    "cpu": {"image_backbone": "efficientnet-lite0", "point_features": "fpfh", "iterations": 100},
    "paper": {
        "image_backbone": "dino-vitb8",
        "point_features": "point-mae",
        "iterations": 2000,
        "lr": 3e-4,
        "patches": 56,
        "num_groups": 1024,
        "losses": "release",
        "point_tokens": "m3dm",
        "scoring": "release",
        "warmup": 60,
        "batch_size": 8,
        "accumulate": 16,
        "queue_size": 60000,
        "proj_dim": 512,
    },
}


@register
class LSFA(Adaptation, Detector):
    name = "lsfa"
    PRESETS = PRESETS
    _adaptor: nn.ModuleDict | None = None  # set by fit_joint: the adaptor shared by every category

    def __init__(
        self,
        modalities: tuple[str, ...] = ("rgb", "xyz"),
        image_backbone: str = "efficientnet-lite0",
        image_weights: str | None = None,
        image_size: int = 224,
        patches: int = 28,
        point_features: str = "fpfh",
        point_weights: str | None = None,
        point_radius: float = 0.1,
        num_groups: int = 784,
        adapt: bool = True,
        iterations: int = 100,
        batch_size: int = 2,
        accumulate: int = 1,
        lr: float = 1e-3,
        proj_dim: int = 128,
        temperature: float = 1.0,
        rotation_weight: float = 0.05,
        compactness_weight: float = 0.9,
        global_weight: float = 0.1,
        warmup: int = 30,
        queue_size: int = 4096,
        coreset_ratio: float = 0.1,
        standardise: tuple[str, ...] = ("rgb",),
        fusion: str = "ocsvm",
        blur: float = 4.0,
        top_fraction: float = 0.05,
        losses: str = "ad3d",
        point_tokens: str = "patch-mean",
        scoring: str = "ad3d",
        device: str = "cpu",
        seed: int = 0,
    ):
        self._store_params(locals())
        self.net_ = None
        self.dims_ = None
        self.banks_ = {}
        self.fusion_ = {}

    def check_params(self) -> None:
        checks = {
            "modalities": len(self.reads) >= 1 and set(self.reads) <= {"rgb", "xyz"},
            "standardise": set(as_tuple(self.standardise)) <= {"rgb", "xyz"},
            "point_features": self.point_features in ("fpfh", "point-mae"),
            "fusion": self.fusion in ("ocsvm", "sum"),
            "losses": self.losses in ("ad3d", "release"),
            "point_tokens": self.point_tokens in ("patch-mean", "m3dm"),
            "scoring": self.scoring in ("ad3d", "release"),
            "iterations": self.iterations >= 0,
            "batch_size": self.batch_size >= 1,
            "accumulate": self.accumulate >= 1,
            "coreset_ratio": 0 < self.coreset_ratio <= 1,
            "num_groups": self.num_groups >= 1,
            "patches": self.patches >= 1,
            "point_radius": self.point_radius > 0,
            "blur": self.blur >= 0,
            "top_fraction": 0 <= self.top_fraction < 1,
        }
        self._require(checks)

    def fingerprints(self) -> list[dict]:
        out = [self._image_net().fingerprint()] if "rgb" in self.reads else []
        return out + ([self._point_net().fingerprint()] if self.point_features == "point-mae" else [])

    # --- frozen tokens ------------------------------------------------------------------------
    def _image_net(self):
        """The image backbone; a ViT gives its last block after the final norm, as M3DM and LSFA take it
        (768-d for ViT-B/8), not the three blocks MuSc takes."""
        if getattr(self, "_image", None) is None:
            from ad3d.features import image_backbone
            from ad3d.features.dino import ARCHS

            last = {"blocks": (ARCHS[self.image_backbone]["depth"] - 1,)} if self.image_backbone in ARCHS else {}
            self._image = image_backbone(
                self.image_backbone, weights=self.image_weights, device=resolve_device(self.device), **last
            )
        return self._image

    def _point_net(self):
        if getattr(self, "_points", None) is None:
            from ad3d.features import point_backbone

            frame = "raw" if self.point_tokens == "m3dm" else "unit-sphere"  # M3DM and LSFA feed raw xyz
            self._points = point_backbone(
                "point-mae",
                weights=self.point_weights,
                num_group=self.num_groups,
                frame=frame,
                device=resolve_device(self.device),
            )
        return self._points

    def _rgb_tokens(self, image: np.ndarray) -> np.ndarray:
        """(patches^2, C) image features: the backbone's stride-8 maps pooled (adaptively, as released)
        onto the patch grid."""
        maps, _ = self._image_net().on_grid(image, self.image_size)
        joined = nn.functional.adaptive_avg_pool2d(torch.cat(maps, dim=0), self.patches)
        return joined.reshape(joined.shape[0], -1).T.numpy()

    def _point_values(self, points: np.ndarray) -> np.ndarray:
        """(N, C) features at every point: FPFH at point_radius x the diagonal, or Point-MAE groups (1/d or,
        with point_tokens='m3dm', M3DM's 1/(d^2 + 1e-8) weights)."""
        if self.point_features == "point-mae":
            return self._point_net()(points).at_points(points, power=2 if self.point_tokens == "m3dm" else 1)
        from ad3d.features import fpfh

        return fpfh(points, self.point_radius * diagonal(points))

    def tokens(self, scan: Scan, rotated: bool = False, rng: np.random.Generator | None = None) -> dict:
        """The frozen tokens of a scan: {'rgb': (P, C), 'xyz': (P, D), 'valid': (P,), 'grid' or 'centres'}."""
        from ad3d import fusion, ops

        self.check_modalities(scan)
        use_rgb = "rgb" in self.reads
        if use_rgb and (scan.image is None or not scan.is_organised):
            raise ConfigError(f"lsfa with rgb needs an organised scan with its colour image: '{scan.path or 'scan'}'")
        out = {}
        if use_rgb:
            image = scan.image
            if rotated and self.losses == "release":  # the release turns 4 x 4 blocks of the network's input
                from PIL import Image

                size = (self.image_size, self.image_size)
                image = rotate_blocks(np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR)), rng)
            elif rotated:
                image = rotate_blocks(image, rng)
            out["rgb"] = self._rgb_tokens(image)
        if "xyz" in self.reads and scan.is_organised and self.point_tokens == "m3dm":
            resized = fusion.resize(scan, self.image_size)  # M3DM: 224^2, zero-filled, 3 x 3 mean, pooled
            points = resized.xyz[resized.valid]
            patches = fusion.pooled_patches(resized, self._point_values(points), self.patches)
            held = fusion.pooled_patches(resized, np.ones((len(points), 1), np.float32), self.patches)[:, 0] > 0
            out.update(xyz=patches, valid=held)  # patches a point reaches (the release: features all non-zero)
        elif "xyz" in self.reads:
            points = np.ascontiguousarray(scan.points, dtype=np.float32)
            values = self._point_values(points)
            if scan.is_organised:
                means, counts = fusion.points_to_patches(scan, values, self.patches)
                out.update(xyz=means.reshape(-1, values.shape[1]), valid=counts.reshape(-1) > 0)
            else:
                centres, near = ops.group_points(points, self.num_groups, POINT_GROUP_SIZE)
                out.update(xyz=values[near].mean(1), valid=np.ones(len(centres), bool), centres=points[centres])
        if "valid" not in out:
            out["valid"] = np.ones(len(out["rgb"]), bool)
        if scan.is_organised:
            out["grid"] = (self.patches, self.patches)
        return out

    # --- fit and score ----------------------------------------------------------------------------
    def _fit_tokens(self, scans: list[Scan], rng) -> tuple[list[dict], list[dict], list[dict]]:
        """Tokens of the training scans, of the one normal scan kept out of the banks (for the decision
        layer and the early stop; none under three scans), and of the block-rotated training images."""
        held_n = 1 if len(scans) >= 3 else 0
        train_scans, held_scans = scans[: len(scans) - held_n], scans[len(scans) - held_n :]
        train, held = [self.tokens(s) for s in train_scans], [self.tokens(s) for s in held_scans]
        for scan, t in zip(train_scans + held_scans, train + held):
            t["category"] = scan.category or ""
        rotated = train
        if self.adapt and self.iterations and "rgb" in self.reads and self._adaptor is None:
            rotated = [self.tokens(s, rotated=True, rng=rng) for s in train_scans]
        return train, held, rotated

    def _fit(self, scans: list[Scan], progress: bool) -> None:

        train, held, rotated = self._fit_tokens(scans, np.random.default_rng(self.seed))
        self.dims_ = {m: int(train[0][m].shape[1]) for m in self.reads}
        if self._adaptor is not None:  # trained by fit_joint on every category
            self.net_ = self._adaptor
        elif self.adapt and self.iterations:
            self._train(train, rotated, held, progress)
        else:
            self.net_ = self._build_net().eval()
        features = {
            m: np.concatenate([self._adapted(t)[m][t["valid"] if m == "xyz" else slice(None)] for t in train])
            for m in self.reads
        }
        self.banks_ = self._banks(features)
        if self.scoring == "release":  # fused as released: on the training scans' own scores
            self._fit_release_fusion(train)
        else:
            self._fit_fusion(held or train[-1:])

    def _banks(self, features: dict[str, np.ndarray]) -> dict[str, dict]:
        """A coreset bank per modality of standardised features, with the (mean, std) used. ad3d: per
        dimension where `standardise` names the modality, else raw (per-dimension scaling would blow up the
        near-constant bins of a histogram, FPFH). The release: scalars, and an RGB coreset of 0.1 x the xyz
        coreset's size (its `run_coreset` sizes the second from the first's reduced bank)."""
        from ad3d.detectors.decision_layer import release_statistics
        from ad3d.detectors.memory_bank import coreset_bank

        stats = release_statistics(features) if self.scoring == "release" else {}
        banks = {}
        for m in ("xyz", "rgb"):
            if m not in features:
                continue
            feats, dim, ratio = features[m], features[m].shape[1], self.coreset_ratio
            if m in stats:
                mean, std = np.full(dim, stats[m][0]), np.full(dim, stats[m][1])
                if m == "rgb" and "xyz" in banks:
                    ratio = min(1.0, self.coreset_ratio * len(banks["xyz"]["bank"]) / len(feats))
            elif m in as_tuple(self.standardise):
                mean, std = feats.mean(0), feats.std(0) + 1e-6
            else:
                mean, std = np.zeros(dim), np.ones(dim)
            banks[m] = {
                "mean": mean.astype(np.float32),
                "std": std.astype(np.float32),
                "bank": coreset_bank(
                    ((feats - mean) / std).astype(np.float32), ratio, self.seed, str(resolve_device(self.device))
                ),
            }
        return banks

    def fit_joint(self, scans_by_category: dict[str, list[Scan]], progress: bool = False) -> dict[str, LSFA]:
        """One adaptor for a whole dataset, as released: trained on the normal scans of every category
        (compactness queues kept per category), then per category a detector with that adaptor and its
        own memory banks and decision layer. Returns {category: fitted detector}."""
        self.check_params()
        rng = np.random.default_rng(self.seed)
        train, held, rotated = [], [], []
        for scans in scans_by_category.values():
            t, h, r = self._fit_tokens(list(scans), rng)
            train, held, rotated = train + t, held + h, rotated + r
        if not train:
            raise ConfigError("lsfa fit_joint needs normal scans in at least one category")
        self.dims_ = {m: int(train[0][m].shape[1]) for m in self.reads}
        if self.adapt and self.iterations:
            self._train(train, rotated, held, progress)
        else:
            self.net_ = self._build_net().eval()
        fitted = {}
        for category, scans in scans_by_category.items():
            det = self.clone()
            det._adaptor = self.net_
            fitted[category] = det.fit(scans)
        return fitted

    def _patch_scores(self, tokens: dict) -> dict:
        """Each modality's nearest-bank distance per patch; NaN for point scores of patches without points
        (their token is empty, not normal or anomalous)."""
        from ad3d.detectors.memory_bank import nearest_distances

        adapted = self._adapted(tokens)
        out = {}
        for m in self.reads:
            standard = ((adapted[m] - self.banks_[m]["mean"]) / self.banks_[m]["std"]).astype(np.float32)
            out[m] = nearest_distances(standard, self.banks_[m]["bank"], str(resolve_device(self.device)))
            if m == "xyz":
                out[m] = np.where(tokens["valid"], out[m], np.nan)
        return out

    def _fit_fusion(self, normal: list[dict]) -> None:
        """ad3d's decision layer, from held-out normal scans (`decision_layer.fit_standard_fusion`)."""
        from ad3d.detectors.decision_layer import fit_standard_fusion

        scores = [self._patch_scores(t) for t in normal]
        stacked = {m: np.concatenate([s[m] for s in scores]) for m in self.reads}
        self.fusion_ = fit_standard_fusion(stacked, self.fusion, self.seed)

    def _release_scores(self, tokens: dict) -> tuple[dict, dict]:
        """Per modality: the reweighted-max object score over the patches that hold points, and the patch
        scores (a 224 x 224 blurred map on organised scans, as released; per group otherwise)."""
        from ad3d.detectors.decision_layer import release_map
        from ad3d.detectors.memory_bank import reweighted_max

        adapted, patch = self._adapted(tokens), self._patch_scores(tokens)
        objects, maps = {}, {}
        for m in self.reads:
            keep = tokens["valid"] if m == "xyz" else slice(None)
            standard = ((adapted[m][keep] - self.banks_[m]["mean"]) / self.banks_[m]["std"]).astype(np.float32)
            objects[m] = reweighted_max(standard, self.banks_[m]["bank"])
            values = np.nan_to_num(patch[m], nan=float(np.nanmin(patch[m]))) if m == "xyz" else patch[m]
            maps[m] = release_map(values.reshape(tokens["grid"]), self.blur) if "grid" in tokens else values
        return objects, maps

    def _fit_release_fusion(self, train: list[dict]) -> None:
        """The release's two fusers, fitted on the training scans' own object scores and map pixels."""
        from ad3d.detectors.decision_layer import fit_release_fuser, release_pairs

        if len(self.reads) == 1:
            self.fusion_ = {}
            return
        scored = [self._release_scores(t) for t in train]
        objects = np.concatenate([release_pairs(o["xyz"], o["rgb"]) for o, _ in scored])
        pixels = np.concatenate([release_pairs(p["xyz"], p["rgb"]) for _, p in scored])
        (d_xyz, d_rgb), (s_xyz, s_rgb) = fit_release_fuser(objects), fit_release_fuser(pixels)
        self.fusion_ = {"object_xyz": d_xyz, "object_rgb": d_rgb, "map_xyz": s_xyz, "map_rgb": s_rgb}

    def _release_score(self, scan: Scan, tokens: dict) -> tuple[np.ndarray, float]:
        from ad3d import fusion
        from ad3d.detectors.decision_layer import release_pairs

        objects, maps = self._release_scores(tokens)
        if len(self.reads) == 1:
            (m,) = self.reads
            score, fused = objects[m], maps[m]
        else:
            f = self.fusion_
            score = float((release_pairs(objects["xyz"], objects["rgb"]) @ [f["object_xyz"], f["object_rgb"]])[0])
            fused = (release_pairs(maps["xyz"], maps["rgb"]) @ [f["map_xyz"], f["map_rgb"]]).reshape(maps["xyz"].shape)
        fused = np.asarray(fused, np.float32)
        if "centres" in tokens:
            return spread(scan.points, tokens["centres"], fused), score
        image, _ = fusion.map_to_points(scan, fused)
        return image.astype(np.float32), score

    def _score(self, scan: Scan) -> tuple[np.ndarray, float]:
        from ad3d import fusion
        from ad3d.detectors.decision_layer import standard_fused
        from ad3d.detectors.scoring import blur_map, top_mean

        tokens = self.tokens(scan)
        if self.scoring == "release":
            return self._release_score(scan, tokens)
        fused = standard_fused(self._patch_scores(tokens), self.fusion_, self.fusion).astype(np.float32)
        if "centres" in tokens:
            scores = spread(scan.points, tokens["centres"], fused).astype(np.float32)
            return scores, top_mean(scores, self.top_fraction)
        if "xyz" in self.reads and tokens["valid"].any():  # a patch without a point of the part says
            fused = np.where(tokens["valid"], fused, fused[tokens["valid"]].min())  # nothing about it: normal
        full, _ = fusion.map_to_points(scan, fused.reshape(tokens["grid"]))
        image = blur_map(full, self.blur * scan.grid_shape[0] / self.image_size) if self.blur else full
        return image.astype(np.float32), top_mean(image.reshape(-1)[scan.grid_index], self.top_fraction)

    # --- model file -----------------------------------------------------------------------------
    def _fitted(self) -> bool:
        return self.net_ is not None and bool(self.banks_)

    def n_learned(self) -> int:
        adaptor = sum(p.numel() for p in self.net_.parameters()) if self.adapt and self.net_ is not None else 0
        return int(adaptor + sum(b["bank"].size for b in self.banks_.values()))

    def _export_state(self) -> dict[str, np.ndarray]:
        state = {f"net.{k}": v.detach().cpu().numpy().copy() for k, v in self.net_.state_dict().items()}
        for m, bank in self.banks_.items():
            state.update({f"bank.{m}.{k}": v for k, v in bank.items()})
        state.update({f"fusion.{k}": np.array([v], np.float64) for k, v in self.fusion_.items()})
        return state

    def _import_state(self, tensors: dict[str, np.ndarray]) -> None:
        missing = [f"bank.{m}.mean" for m in self.reads if f"bank.{m}.mean" not in tensors]
        if missing:
            raise KeyError(", ".join(missing))
        self.dims_ = {m: int(tensors[f"bank.{m}.mean"].shape[0]) for m in self.reads}
        net = self._build_net()
        given = {k[4:]: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith("net.")}
        missing = set(net.state_dict()) - set(given)
        if missing:
            raise KeyError(", ".join(f"net.{k}" for k in sorted(missing)))
        net.load_state_dict(given, strict=True)
        self.net_ = net.eval()
        self.banks_ = {m: {k: tensors[f"bank.{m}.{k}"] for k in ("mean", "std", "bank")} for m in self.reads}
        self.fusion_ = {k[len("fusion.") :]: float(v[0]) for k, v in tensors.items() if k.startswith("fusion.")}
