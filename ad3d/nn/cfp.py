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


def voxel_representatives(points: torch.Tensor, voxel: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(first point of each occupied voxel in input order, (N,) each point's voxel): the quantisation of
    MinkowskiEngine's `sparse_quantize` as MC4AD's release feeds its sparse U-Net (features = the first
    point's xyz, every point reading its voxel's prediction through v2p_index)."""
    keys = torch.floor(points / voxel).to(torch.int64)
    _, inverse = torch.unique(keys, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(points), dtype=torch.int64, device=points.device)
    first = first.scatter_reduce(0, inverse, torch.arange(len(points), device=points.device), reduce="amin")
    order = torch.argsort(first)  # voxels in the order their first point comes
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=points.device)
    return points[first[order]], rank[inverse]


class CFPNet(nn.Module):
    """Backbone features -> PO3AD's head (Linear 32 no bias + BN + PReLU, 16 + BN + PReLU) -> 6 numbers:
    the internal and the external force. voxel > 0: the backbone sees one point per occupied voxel of that
    size (network-frame units) and every point takes its voxel's features, as the release's sparse-voxel
    U-Net predicts per voxel (0: per point, ad3d's)."""

    def __init__(self, backbone: str, encoder, decoder, k: int, voxel: float = 0.0):
        super().__init__()
        self.voxel = float(voxel)
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
        if self.voxel > 0:
            shared = []
            for cloud in xyz:  # occupied voxels differ per cloud
                kept, voxel_of = voxel_representatives(cloud, self.voxel)
                shared.append(self.backbone(kept[None])[0][voxel_of])
            feats = torch.stack(shared)
        else:
            feats = self.backbone(xyz)
        out = self.head(feats.reshape(-1, feats.shape[-1])).reshape(*feats.shape[:-1], 6)
        return out[..., :3], out[..., 3:]
