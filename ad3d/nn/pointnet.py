"""R3D-AD's networks: a PointNet shape encoder and a per-point ConcatSquash denoiser."""

from __future__ import annotations

import torch
from torch import nn


class PointNetEncoder(nn.Module):
    """Shared per-point MLP with BatchNorm, global max-pool, then an MLP to the shape latent.

    Release widths: convs (128, 128, 256, 512), head (256, 128), latent 256.
    """

    def __init__(
        self, latent: int = 256, widths: tuple[int, ...] = (128, 128, 256, 512), head: tuple[int, ...] = (256, 128)
    ):
        super().__init__()
        layers, c = [], 3
        for i, w in enumerate(widths):
            layers += [nn.Conv1d(c, w, 1), nn.BatchNorm1d(w)] + ([nn.ReLU()] if i < len(widths) - 1 else [])
            c = w
        self.points = nn.Sequential(*layers)
        mlp = []
        for w in head:
            mlp += [nn.Linear(c, w), nn.BatchNorm1d(w), nn.ReLU()]
            c = w
        self.head = nn.Sequential(*mlp, nn.Linear(c, latent))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) -> (B, latent)."""
        return self.head(self.points(x.transpose(1, 2)).max(2).values)


class ConcatSquashLinear(nn.Module):
    """Linear(x) * sigmoid(gate(c)) + bias(c): a per-point layer modulated by a context vector."""

    def __init__(self, dim_in: int, dim_out: int, dim_ctx: int):
        super().__init__()
        self.layer = nn.Linear(dim_in, dim_out)
        self.gate = nn.Linear(dim_ctx, dim_out)
        self.bias = nn.Linear(dim_ctx, dim_out, bias=False)

    def forward(self, ctx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """ctx (B, 1, C), x (B, N, dim_in) -> (B, N, dim_out)."""
        return self.layer(x) * torch.sigmoid(self.gate(ctx)) + self.bias(ctx)


class PointDenoiser(nn.Module):
    """eps_theta(x_t, beta_t, z): ConcatSquash layers 3 -> widths -> 3, leaky-ReLU between, context
    [beta, sin beta, cos beta, z]; residual output x_t + MLP(x_t) as in the release.

    Two ad3d options, off in the release preset: fourier > 0 also feeds sin/cos(2^k pi x) for
    k < fourier to the first layer (surface detail in far fewer iterations), and time_dim > 0 replaces
    the beta context by a sinusoidal embedding of the step t of that width: beta spans only 1e-4..0.05,
    which a briefly trained network cannot tell apart, so it cannot scale its noise estimate to the step.
    """

    def __init__(
        self,
        latent: int = 256,
        widths: tuple[int, ...] = (128, 256, 512, 256, 128),
        fourier: int = 0,
        time_dim: int = 0,
    ):
        super().__init__()
        self.register_buffer("frequencies", (2.0 ** torch.arange(fourier)) * torch.pi, persistent=False)
        half = time_dim // 2
        self.register_buffer(
            "time_frequencies",
            torch.exp(-torch.arange(half) * (torch.log(torch.tensor(1000.0)) / max(half - 1, 1))),
            persistent=False,
        )
        dims = (3 + 6 * fourier, *widths, 3)
        ctx = latent + (2 * half if time_dim else 3)
        self.layers = nn.ModuleList(ConcatSquashLinear(a, b, ctx) for a, b in zip(dims[:-1], dims[1:]))

    def forward(
        self, x: torch.Tensor, beta: torch.Tensor, z: torch.Tensor, t: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, N, 3) noisy points, beta (B,) their step's beta, z (B, latent), t (B,) the step (for time_dim)."""
        if len(self.time_frequencies):
            angles = t.view(-1, 1).float() * self.time_frequencies
            ctx = torch.cat([torch.sin(angles), torch.cos(angles), z], 1)[:, None, :]
        else:
            beta = beta.view(-1, 1)
            ctx = torch.cat([beta, torch.sin(beta), torch.cos(beta), z], 1)[:, None, :]
        out = x
        if len(self.frequencies):
            angles = (x[..., None] * self.frequencies).flatten(-2)
            out = torch.cat([x, torch.sin(angles), torch.cos(angles)], -1)
        for i, layer in enumerate(self.layers):
            out = layer(ctx, out)
            if i < len(self.layers) - 1:
                out = nn.functional.leaky_relu(out)
        return x + out


class R3DNet(nn.Module):
    """R3D-AD's network: the shape encoder and the denoiser it conditions."""

    def __init__(self, latent, encoder_widths, denoiser_widths, fourier, time_dim):
        super().__init__()
        self.encoder = PointNetEncoder(latent, tuple(encoder_widths), (max(latent, 128), 128))
        self.denoiser = PointDenoiser(latent, tuple(denoiser_widths), fourier, time_dim)
