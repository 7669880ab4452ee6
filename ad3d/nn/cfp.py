"""MC4AD's corrective-force prediction network (CFP) and loss: a point U-Net backbone, PO3AD's head,
an internal and an external force per point."""

from __future__ import annotations

import torch
from torch import nn

from ad3d.errors import ConfigError


def corrective_force_loss(
    f_in: torch.Tensor, f_ex: torch.Tensor, target: torch.Tensor, sym_weight: float = 0.1, eps: float = 1e-8
) -> dict[str, torch.Tensor]:
    """MC4AD's loss on (..., 3) forces and target offsets; returns total, overall and symmetric terms.

    overall = mean ||o_hat - o||_1 + mean(-cos(o_hat, o)), o_hat = (f_in + f_ex) / 2, with unit vectors
    taken as v / (|v| + eps) so points whose target is zero add 0 to the cosine term (PO3AD);
    symmetric = mean ||f_in - f_ex||_1 / (|f_in| + |f_ex| + 1e-6) + mean(-cos(f_in, f_ex)).
    """

    def unit(v):
        return v / (v.norm(dim=-1, keepdim=True) + eps)

    joint = (f_in + f_ex) / 2
    overall = (joint - target).abs().sum(-1).mean() - (unit(joint) * unit(target)).sum(-1).mean()
    symmetric = ((f_in - f_ex).abs().sum(-1) / (f_in.norm(dim=-1) + f_ex.norm(dim=-1) + 1e-6)).mean() - (
        unit(f_in) * unit(f_ex)
    ).sum(-1).mean()
    return {"total": overall + sym_weight * symmetric, "overall": overall, "symmetric": symmetric}


class CFPNet(nn.Module):
    """Backbone features -> PO3AD's head (Linear 32 no bias + BN + PReLU, 16 + BN + PReLU) -> 6 numbers:
    the internal and the external force."""

    def __init__(self, backbone: str, encoder, decoder, k: int):
        super().__init__()
        from ad3d.nn.point_unet import BACKBONES

        if backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {backbone!r}; available: {', '.join(BACKBONES)}")
        self.backbone = BACKBONES[backbone](tuple(encoder), tuple(decoder), k=k)
        c = self.backbone.out_channels
        self.head = nn.Sequential(
            nn.Linear(c, 32, bias=False),
            nn.BatchNorm1d(32),
            nn.PReLU(),
            nn.Linear(32, 16, bias=False),
            nn.BatchNorm1d(16),
            nn.PReLU(),
            nn.Linear(16, 6),
        )

    def forward(self, xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 3) -> internal, external forces, each (B, N, 3)."""
        feats = self.backbone(xyz)
        out = self.head(feats.reshape(-1, feats.shape[-1])).reshape(*feats.shape[:-1], 6)
        return out[..., :3], out[..., 3:]
