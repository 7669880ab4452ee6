"""A linear-beta DDPM over point coordinates (R3D-AD): the schedule, forward noising, and two samplers.

Index convention (as R3D-AD's release): betas[0] = 0 is padding, steps run 1..T, alpha_bar[t] is the
product of (1 - beta_s) for s <= t, so alpha_bar[0] = 1 (the clean cloud).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> predicted noise


class LinearSchedule:
    """beta_t linear from beta_1 to beta_T over T steps."""

    def __init__(self, steps: int = 200, beta_1: float = 1e-4, beta_T: float = 0.05):
        if steps < 1 or not 0 < beta_1 <= beta_T < 1:
            raise ValueError(f"need steps >= 1 and 0 < beta_1 <= beta_T < 1, got {steps}, {beta_1}, {beta_T}")
        self.steps = steps
        betas = torch.cat(
            [torch.zeros(1, dtype=torch.float64), torch.linspace(beta_1, beta_T, steps, dtype=torch.float64)]
        )
        self.betas = betas
        self.alpha_bar = torch.cumprod(1 - betas, 0)

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) as float32 on t's device, shaped (B, 1, 1)."""
        ab = self.alpha_bar.to(t.device)[t].float()[:, None, None]
        return ab.sqrt(), (1 - ab).sqrt()

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise."""
        a, s = self.coefficients(t)
        return a * x0 + s * noise

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The clean cloud implied by a noise estimate."""
        a, s = self.coefficients(t)
        return (x_t - s * eps) / a

    def posterior_variance(self, t: int) -> float:
        """beta~_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t (R3D-AD's sigma_t^2, flexibility 0)."""
        ab = self.alpha_bar
        return float((1 - ab[t - 1]) / (1 - ab[t]) * self.betas[t])

    def ddpm(
        self, denoise: Denoise, x_t: torch.Tensor, start: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Ancestral sampling from step `start` down to 0, one network call per step."""
        x = x_t
        for t in range(start, 0, -1):
            tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            eps = denoise(x, tt)
            alpha, ab = float(1 - self.betas[t]), float(self.alpha_bar[t])
            mean = (x - (1 - alpha) / (1 - ab) ** 0.5 * eps) / alpha**0.5
            if t > 1:
                noise = torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
                mean = mean + self.posterior_variance(t) ** 0.5 * noise
            x = mean
        return x

    def ddim(self, denoise: Denoise, x_t: torch.Tensor, start: int, steps: int) -> torch.Tensor:
        """Deterministic DDIM (eta = 0) from `start` to 0 in `steps` evenly spaced jumps."""
        ts = torch.linspace(start, 0, steps + 1).round().long().tolist()
        x = x_t
        for t, t_next in zip(ts[:-1], ts[1:]):
            if t == t_next:
                continue
            tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            eps = denoise(x, tt)
            x0 = self.predict_x0(x, tt, eps)
            ab_next = float(self.alpha_bar[t_next])
            x = ab_next**0.5 * x0 + (1 - ab_next) ** 0.5 * eps
        return x
