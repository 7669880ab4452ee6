"""R3D-AD (ECCV 2024): reconstruct the scan with a latent-conditioned point diffusion model trained on
normal parts; a point's anomaly score is how far it lies from the reconstruction.

Training follows the paper rather than the release (reference.md section 4): every training cloud is a
normal template (rotation per `rotation`, random `num_points` subset) with a Patch-Gen defect; the
encoder sees the defective cloud and the model learns the clean one. objective='noise' is the
released DDPM loss (predict the noise added to the clean cloud); objective='clean' noises the
*defective* cloud and asks for the noise that would have produced it from the clean cloud, i.e. the
clean-shape reconstruction loss in noise units (the release's unusable `--rel` path).

Scoring: the scan is registered to the part's reference (align=True, ad3d.preprocess.align) and an
even subset of `score_points` points (the density every scan is then scored at, whatever the
scanner's) is encoded from its FPS subset of `num_points`, noised to `start_step` and denoised (DDIM in
`sample_steps` jumps, or full ancestral DDPM); each point scores its distance to the nearest
reconstructed point, plus two ad3d additions for missing material: (coverage) how far its nearest
reconstructed points lie from the scan, and (reference_coverage; complete scans only, see `covers`;
point scores only) how far its nearest points of the part's reference lie from the scan: the
reconstruction only moves
the points a scan has, so a hole's rim shows up against the reference, not against the reconstruction
(development set: P-AUROC 0.749 -> 0.773, but O-AUROC 0.696 -> 0.641 when the object score used it
too, so it does not). With location_norm (aligned scans), each point's raw score first loses the
normal score at that place of the part, learned from the training scans at fit. Scores are averaged
over `smooth_k` neighbours and carried to every input point. Object score (object_score='top') = mean of the top
`top_fraction` of the scores averaged over only `object_smooth_k` neighbours: wide smoothing helps
localisation but blurs the peak that separates scans (measured on a development set; see docs/results.md).
On realistic scans (sensor noise) the top 3 % beat the top 1 % on the development set (O-AUROC 0.722
vs 0.678). The paper preset scores as the release (alibalapour/r3d-ad, a fork of the authors' commit
7b1d989: evaluation/evaluation_metrics.py ROC_AP): object_score='reweighted', PatchCore's reweighted max
(k = 3) of the points' distances to the reconstruction, on 2048 points of each test cloud (the release draws
them at random, ad3d takes an even subset: deterministic; every point then takes the 1/d interpolation of
its 3 nearest scored points).
Training matches acquisition: small pose jitter (rotation='jitter') and noise (noise_aug) on the
defective cloud.
Defaults are the CPU preset; PRESETS['paper'] holds the released sizes.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ad3d.detectors.memory_bank import reweighted_max
from ad3d.detectors.neural import NeuralDetector, jitter, random_rotation
from ad3d.detectors.registry import register
from ad3d.detectors.scoring import neighbour_indices, smooth, spread, top_mean
from ad3d.errors import ConfigError
from ad3d.nn.pointnet import R3DNet
from ad3d.ops import even_subset
from ad3d.types import Scan

PRESETS = {
    "cpu": {},
    "paper": {
        "num_points": 2048,
        "latent": 256,
        "encoder_widths": (128, 128, 256, 512),
        "denoiser_widths": (128, 256, 512, 256, 128),
        "fourier": 0,
        "time_dim": 0,
        "train_max_step": None,
        "batch_size": 128,
        "iterations": 40000,
        "rotation": "full",
        "sampler": "ddpm",
        "start_step": 200,
        "coverage": False,
        "reference_coverage": False,
        "location_norm": False,
        "top_fraction": 0.01,
        "object_score": "reweighted",
        "smooth_k": 1,
        "object_smooth_k": 1,
        "align": False,
        "noise_aug": 0.0,
        "score_points": 2048,  # the release scores a 2048-point subset of each test cloud
        "eval_every": 1000,
        "patience": 10,
    },
}


def uncovered(scan: torch.Tensor, surface: torch.Tensor, k: int = 4) -> torch.Tensor:
    """Per scan point: how far its k nearest `surface` points lie from the scan (mean). Large where the
    surface has material that the scan lacks: the rim of a hole, crack, cut or break."""
    from ad3d import ops

    gap = ops.knn(surface, scan, 1)[0][:, 0].clamp_min(0).sqrt()
    return gap[ops.knn(scan, surface, min(k, len(surface)))[1]].mean(1)


def covers(scan: torch.Tensor, surface: torch.Tensor, share: float = 0.8) -> bool:
    """Whether the scan is complete: at least `share` of the surface points have a scan point within two
    of the surface's point spacings. A single view (Real3D-AD test scans) is not, and a reference
    coverage would flag the edge of its view."""
    from ad3d import ops

    spacing = ops.knn(surface, surface, 2)[0][:, 1].clamp_min(0).sqrt().median()
    return bool((ops.knn(surface, scan, 1)[0][:, 0].clamp_min(0).sqrt() <= 2 * spacing).float().mean() >= share)


@functools.lru_cache(maxsize=8)
def _schedule(steps: int, beta_1: float, beta_T: float):
    from ad3d.nn.diffusion import LinearSchedule

    return LinearSchedule(steps, beta_1, beta_T)


@register
class R3DAD(NeuralDetector):
    name = "r3dad"
    modalities = ("xyz",)
    PRESETS = PRESETS

    def __init__(
        self,
        num_points: int = 512,
        latent: int = 128,
        encoder_widths=(64, 64, 128, 256),
        denoiser_widths=(64, 128, 256, 128, 64),
        fourier: int = 6,
        time_dim: int = 16,
        train_max_step: int | None = 60,
        steps: int = 200,
        beta_1: float = 1e-4,
        beta_T: float = 0.05,
        objective: str = "noise",
        patch_gen: bool = True,
        patch_fraction: float = 1 / 16,
        patch_scale: float = 0.05,
        align: bool = True,
        rotation: str = "jitter",
        noise_aug: float = 0.002,
        score_points: int | None = 4096,
        normalise: str = "category",
        iterations: int = 2000,
        batch_size: int = 16,
        lr: float = 1e-3,
        eval_every: int = 200,
        patience: int = 5,
        val_batches: int = 2,
        sampler: str = "ddim",
        sample_steps: int = 10,
        start_step: int = 20,
        coverage: bool = True,
        reference_coverage: bool = True,
        location_norm: bool = True,
        smooth_k: int = 32,
        object_smooth_k: int = 8,
        top_fraction: float = 0.03,
        object_score: str = "top",
        device: str = "auto",
        seed: int = 0,
    ):
        self._store_params(locals())

    @property
    def schedule(self):
        """The noise schedule of the current parameters (built once per parameter set: read every step)."""
        return _schedule(self.steps, self.beta_1, self.beta_T)

    def _build_net(self) -> torch.nn.Module:
        if self.objective not in ("noise", "clean"):
            raise ConfigError(f"r3dad objective must be 'noise' or 'clean', got {self.objective!r}")
        if self.object_score not in ("top", "reweighted"):
            raise ConfigError(f"r3dad object_score must be 'top' or 'reweighted', got {self.object_score!r}")
        if self.sampler not in ("ddim", "ddpm"):
            raise ConfigError(f"r3dad sampler must be 'ddim' or 'ddpm', got {self.sampler!r}")
        if not 1 <= self.start_step <= self.steps:
            raise ConfigError(f"r3dad start_step must lie in [1, steps={self.steps}], got {self.start_step}")
        return R3DNet(self.latent, self.encoder_widths, self.denoiser_widths, self.fourier, self.time_dim)

    def _denoise(self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        beta = self.schedule.betas.to(x_t.device)[t].float()
        return self.net_.denoiser(x_t, beta, z, t)

    # --- training -------------------------------------------------------------------------------
    def training_pair(self, scan: Scan, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(clean, defective) clouds of num_points: a rotated random subset and its Patch-Gen copy."""
        from ad3d.synth.pseudo import patch_gen

        idx = rng.choice(len(scan), self.num_points, replace=len(scan) < self.num_points)
        clean = (scan.points[idx] @ random_rotation(rng, self.rotation).T).astype(np.float32)
        if not self.patch_gen:
            return clean, jitter(clean, rng, self.noise_aug)
        return clean, jitter(patch_gen(clean, rng, self.patch_fraction, self.patch_scale)[0], rng, self.noise_aug)

    def _batch_loss(self, scans: list[Scan], rng: np.random.Generator) -> torch.Tensor:
        pairs = [self.training_pair(scans[rng.integers(len(scans))], rng) for _ in range(self.batch_size)]
        clean = torch.from_numpy(np.stack([c for c, _ in pairs])).to(self.device_)
        defective = torch.from_numpy(np.stack([d for _, d in pairs])).to(self.device_)
        t = torch.randint(1, (self.train_max_step or self.steps) + 1, (len(pairs),)).to(self.device_)
        return self.loss(clean, defective, t, torch.randn(clean.shape).to(self.device_))

    def loss(self, clean: torch.Tensor, defective: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """MSE between the network's noise estimate and the objective's target, latent from the defective cloud."""
        z = self.net_.encoder(defective)
        schedule = self.schedule
        if self.objective == "noise":
            x_t, target = schedule.q_sample(clean, t, eps), eps
        else:  # the noise that turns the clean cloud into x_t, x_t made from the defective cloud
            x_t = schedule.q_sample(defective, t, eps)
            a, s = schedule.coefficients(t)
            target = (x_t - a * clean) / s
        return torch.nn.functional.mse_loss(self._denoise(x_t, t, z), target)

    # --- scoring --------------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, points: np.ndarray) -> np.ndarray:
        """The model's normal version of a cloud given in the network frame, one point per input point.

        The latent comes from an FPS subset of num_points; every input point is noised to start_step
        (start_step = steps: pure noise, as the release) and denoised, so the reconstruction is as
        dense as the scan and a point's distance to it is not dominated by the sampling gaps.
        """
        from ad3d import ops

        x = torch.from_numpy(points).to(self.device_)
        sub = x[ops.fps(x, self.num_points)] if len(x) > self.num_points else x
        z = self.net_.encoder(sub[None])
        generator = torch.Generator().manual_seed(self.seed)
        noise = torch.randn(x[None].shape, generator=generator).to(self.device_)
        schedule = self.schedule
        start = torch.tensor([self.start_step], device=self.device_)
        x_t = noise if self.start_step == self.steps else schedule.q_sample(x[None], start, noise)
        denoise = lambda xt, t: self._denoise(xt, t, z)  # noqa: E731
        if self.sampler == "ddpm":
            out = schedule.ddpm(denoise, x_t, self.start_step, generator)
        else:
            out = schedule.ddim(denoise, x_t, self.start_step, self.sample_steps)
        return out[0].cpu().numpy()

    @torch.no_grad()
    def _raw_scores(self, points: np.ndarray) -> np.ndarray:
        return self._distances(points, self.reconstruct(points))

    def _distances(self, points: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
        """Per point (network frame): distance to the nearest reconstructed point, plus coverage."""
        from ad3d import ops

        recon = torch.from_numpy(reconstruction)
        x = torch.from_numpy(points)
        score = ops.knn(x, recon, 1)[0][:, 0].clamp_min(0).sqrt()
        if self.coverage:  # reconstructed surface the scan does not cover: holes, cuts, cracks
            score = score + uncovered(x, recon)
        return score.numpy()

    def _finish(self, train: list[Scan], val: list[Scan]) -> None:
        self._fit_baseline(train + val, self.score_points or max(len(s) for s in train + val))

    @torch.no_grad()
    def _score(self, scan: Scan) -> tuple[np.ndarray, float]:
        full, scale = self.to_frame(scan.points)
        subset = even_subset(full, self.score_points) if self.score_points else np.arange(len(full))
        pts = full[subset]
        x = torch.from_numpy(pts)
        recon = self.reconstruct(pts)
        score = torch.from_numpy(self._less_baseline(pts, self._distances(pts, recon)))
        near = neighbour_indices(x, max(self.smooth_k, self.object_smooth_k))
        object_basis = (smooth(score, near, self.object_smooth_k) * scale).numpy()
        ref = self._reference_frame()
        if self.reference_coverage and ref is not None and covers(x, torch.from_numpy(ref)):
            score = score + uncovered(x, torch.from_numpy(ref))  # the part's reference, likewise
        point_scores = (smooth(score, near, self.smooth_k) * scale).numpy().astype(np.float32)
        if self.object_score == "reweighted":  # the release's: PatchCore's reweighted max against the reconstruction
            return spread(full, full[subset], point_scores), reweighted_max(pts, recon) * scale
        return spread(full, full[subset], point_scores), top_mean(object_basis, self.top_fraction)
