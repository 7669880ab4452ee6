"""MC4AD (2025): predict, for every point, the internal and external corrective forces that would push
it back to the normal surface; the size of their mean (the joint correction) is the anomaly score.

Trained on normal scans only with DA-Gen pseudo-anomalies drawn per sample (reference.md section 6; the
paper preset's generator='da-gen-release' crops and draws as the release does: sphere parts of N / 64 points,
sigma and lambda once per run);
the target is each point's correction back to the clean surface. Loss = L1 + negative cosine on the
joint offset + sym_weight x the symmetric loss between the two forces. The backbone is a point U-Net on
ad3d's fps/knn (ad3d.nn.point_unet) in place of MinkowskiEngine's sparse-voxel U-Net; `voxel` > 0 (the paper
preset: 0.03, the release's voxel in the unit-sphere frame) feeds it one point per occupied voxel and gives
every point its voxel's prediction, as the release does. Every input point is scored.

ad3d's extension (`missing`, not in the paper or release; 0 in the paper preset): a displacement target
cannot describe a hole, crack or break, where the points that remain sit where they should. With
probability `missing` a training sample first loses a patch of material and its rim learns a pull
across the gap (ad3d.synth.pseudo.missing_material). Point scores are averaged over `smooth_k`
neighbours (the release: none). The CPU preset also sets sym_weight=0: at a CPU training budget the
symmetric loss cost P-AUROC on every development part (docs/results.md); the two forces are then only averaged.
All three were chosen on a development set; `--preset paper` restores the release's choices.
Object score: the mean point score (the release) or the mean of the top `top_fraction`; 'auto'
chooses between them on held-out normal scans with pseudo-defects, never on test labels (ties: top).
Acquisition (ad3d's, not in the paper): scans are registered to the part's reference first (align);
training samples get a small pose jitter and sensor-like noise (noise_aug, input only: noise is not a
defect); a scan is scored on an even subset of `num_points` points, the density the network was
trained at, and the scores carried to every point, so neighbour counts cover the same area whatever
the scanner's density.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from ad3d.detectors.neural import NeuralDetector, jitter, random_rotation
from ad3d.detectors.registry import register
from ad3d.detectors.scoring import neighbour_indices, smooth, spread, top_mean
from ad3d.errors import ConfigError
from ad3d.nn.cfp import CFPNet, corrective_force_loss
from ad3d.ops import even_subset
from ad3d.types import Scan

PRESETS = {
    "cpu": {},
    "paper": {
        "encoder": (32, 64, 128, 256, 256),
        "decoder": (192, 192, 128, 128),
        "batch_size": 32,
        "iterations": 150000,
        "patches": 1,
        "generator": "da-gen-release",
        "voxel": 0.03,
        "missing": 0.0,
        "sym_weight": 0.1,
        "smooth_k": 1,
        "rotation": "full",
        "normalise": "scan",
        "align": False,
        "noise_aug": 0.0,
        "location_norm": False,
        "object_reduce": "mean",
        "force_norm": 1,
        "eval_every": 1000,
        "patience": 20,
    },
}


@register
class MC4AD(NeuralDetector):
    name = "mc4ad"
    modalities = ("xyz",)
    PRESETS = PRESETS
    _state_scalars = NeuralDetector._state_scalars + ("object_reduce_", "reduce_auroc_")
    object_reduce_: str | None = None  # the object score chosen at fit: "mean" or "top"
    reduce_auroc_: dict | None = None  # each rule's AUROC on held-out normal vs pseudo-defective scans

    def __init__(
        self,
        backbone: str = "point-unet",
        encoder=(16, 32, 64, 128, 128),
        decoder=(96, 64, 48, 32),
        k: int = 16,
        voxel: float = 0.0,
        num_points: int = 4096,
        generator: str = "da-gen",
        patches: int = 4,
        missing: float = 1.0,
        sym_weight: float = 0.0,
        align: bool = True,
        rotation: str = "jitter",
        noise_aug: float = 0.002,
        normalise: str = "category",
        iterations: int = 2000,
        batch_size: int = 4,
        lr: float = 1e-3,
        eval_every: int = 200,
        patience: int = 5,
        val_batches: int = 4,
        object_reduce: str = "auto",
        top_fraction: float = 0.01,
        smooth_k: int = 64,
        location_norm: bool = True,
        force_norm: int = 2,
        device: str = "auto",
        seed: int = 0,
    ):
        self._store_params(locals())

    def _build_net(self) -> nn.Module:
        from ad3d.synth.pseudo import GENERATORS

        if self.generator not in GENERATORS:
            raise ConfigError(f"mc4ad generator must be one of {', '.join(GENERATORS)}, got {self.generator!r}")
        if not 0.0 <= float(self.missing) <= 1.0:
            raise ConfigError(f"mc4ad missing is a probability in [0, 1], got {self.missing!r}")
        if self.object_reduce not in ("auto", "mean", "top"):
            raise ConfigError(f"mc4ad object_reduce must be 'auto', 'mean' or 'top', got {self.object_reduce!r}")
        if self.force_norm not in (1, 2):
            raise ConfigError(f"mc4ad force_norm must be 1 (L1, as released) or 2 (L2), got {self.force_norm!r}")
        return CFPNet(self.backbone, self.encoder, self.decoder, self.k, self.voxel)

    def _prepare(self, scans: list[Scan]) -> list[Scan]:
        from ad3d.synth.defects import surface_normals

        return [s.replace(normals=surface_normals(s).astype(np.float32)) for s in super()._prepare(scans)]

    def training_sample(self, scan: Scan, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(defective points, correction back to the clean surface, mask) for one rotated, cropped normal
        scan: with probability `missing` one missing-material patch first (ad3d's extension), then
        `patches` pseudo-defects (the paper: one; more give a short CPU run more signal per step)."""
        from ad3d.synth.pseudo import GENERATORS, missing_material

        idx = rng.choice(len(scan), self.num_points, replace=len(scan) < self.num_points)
        rot = random_rotation(rng, self.rotation)
        clean, normals = (scan.points[idx] @ rot.T).astype(np.float32), scan.normals[idx] @ rot.T
        moved, correction, mask = clean, np.zeros_like(clean), np.zeros(len(clean), bool)
        if self.missing > 0 and rng.uniform() < self.missing:
            moved, correction, mask, source = missing_material(clean, normals, rng)
            normals = normals[source]
        generate = GENERATORS[self.generator]
        if self.generator == "da-gen-release":
            generate = functools.partial(generate, **self.run_draws())
        for _ in range(self.patches):
            moved, offset, patch = generate(moved, normals, rng)
            correction, mask = correction - offset, mask | patch
        return jitter(moved, rng, self.noise_aug), correction, mask

    def run_draws(self) -> dict[str, float]:
        """DA-Gen's sigma and lambda for a whole training run (generator='da-gen-release'): the release draws
        them once per process, as default arguments; here once per seed."""
        rng = np.random.default_rng([self.seed, 0xDA])
        return {"sigma": float(rng.uniform(0.0, 0.08)), "blend": float(rng.uniform(0.95, 1.0))}

    def _batch_loss(self, scans: list[Scan], rng: np.random.Generator) -> torch.Tensor:
        samples = [self.training_sample(scans[rng.integers(len(scans))], rng) for _ in range(self.batch_size)]
        moved = torch.from_numpy(np.stack([m for m, _, _ in samples])).to(self.device_)
        target = torch.from_numpy(np.stack([o for _, o, _ in samples])).to(self.device_)
        f_in, f_ex = self.net_(moved)
        return corrective_force_loss(f_in, f_ex, target, self.sym_weight)["total"]

    # --- scoring ------------------------------------------------------------------------------
    @torch.no_grad()
    def forces(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The predicted internal and external forces, (N, 3) each, for a cloud in the network frame."""
        f_in, f_ex = self.net_(torch.from_numpy(points).to(self.device_)[None])
        return f_in[0].cpu().numpy(), f_ex[0].cpu().numpy()

    def force_scores(self, f_in: np.ndarray, f_ex: np.ndarray) -> np.ndarray:
        """(N,) the size of the joint correction (f_in + f_ex) / 2: its L1 norm as the release's
        `eval.py` takes it (force_norm=1), or its length (2)."""
        return np.linalg.norm((f_in + f_ex) / 2, ord=self.force_norm, axis=1)

    def _raw_scores(self, points: np.ndarray) -> np.ndarray:
        return self.force_scores(*self.forces(points))

    def _frame_scores(self, points: np.ndarray) -> np.ndarray:
        """Point scores in network-frame units: the length of the joint correction, less its normal
        size at that place of the part (location_norm, aligned scans), averaged over `smooth_k`
        neighbours (1: none, as the release)."""
        score = torch.from_numpy(self._less_baseline(points, self._raw_scores(points)))
        if self.smooth_k > 1:
            score = smooth(score, neighbour_indices(torch.from_numpy(points), self.smooth_k), self.smooth_k)
        return score.numpy()

    def _reduce(self, point_scores: np.ndarray, how: str) -> float:
        return float(point_scores.mean()) if how == "mean" else top_mean(point_scores, self.top_fraction)

    def _subset_scores(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(frame scores of an even subset of num_points, its indices): scans are scored at the density
        the network was trained on."""
        subset = even_subset(points, self.num_points)
        return self._frame_scores(points[subset]), subset

    def _score(self, scan: Scan) -> tuple[np.ndarray, float]:
        pts, scale = self.to_frame(scan.points)
        sub_scores, subset = self._subset_scores(pts)
        point_scores = (spread(pts, pts[subset], sub_scores) * scale).astype(np.float32)
        return point_scores, self._reduce(sub_scores * scale, self.object_reduce_ or "mean")

    def _finish(self, train: list[Scan], val: list[Scan]) -> None:
        """The location baseline from the normal scans (when aligned), then the object score: each
        rule's AUROC at telling held-out normal scans from two pseudo-defective copies of each; ties go
        to the top fraction. On realistic scans the check saturates (AUROC 1.0 for both rules on every
        development part) and the top 1 % separated real defects better there (O-AUROC 0.841 vs 0.763)."""
        from ad3d.metrics import auroc

        self._fit_baseline(train + val, self.num_points)
        if self.object_reduce != "auto":
            self.object_reduce_ = self.object_reduce
            return
        rng = np.random.default_rng(self.seed + 2)
        clean, defective = [], []
        for scan in val:
            clean.append(self._subset_scores(scan.points)[0])
            defective += [self._frame_scores(self.training_sample(scan, rng)[0]) for _ in range(2)]
        labels = np.r_[np.zeros(len(clean)), np.ones(len(defective))]
        aurocs = {
            how: float(auroc(labels, np.array([self._reduce(p, how) for p in clean + defective])))
            for how in ("mean", "top")
        }
        self.object_reduce_ = max(aurocs, key=lambda how: (aurocs[how], how == "top"))
        self.reduce_auroc_ = aurocs
