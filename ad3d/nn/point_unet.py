"""A point U-Net on ad3d's own ops: MC4AD's backbone without MinkowskiEngine.

Encoder: set-abstraction levels, each taking ad3d.ops.fps centres (a fixed fraction of the previous
level) and grouping their k nearest previous-level points (ad3d.ops.knn) through a shared MLP and a
max-pool. Decoder: feature propagation by inverse-distance 3-NN interpolation back to the finer level,
fused with the encoder skip by MC4AD's gate (alpha = sigmoid of the refined decoder feature; fused =
alpha * projected skip + (1 - alpha) * refined decoder), then concatenated with the skip as in a plain
U-Net. Every input point gets a feature; the level sizes scale with the scan's point count.

Why not MinkowskiEngine: its last release (0.5.4, 2021) only builds from source against old CUDA and
PyTorch; fps/knn are ad3d's own compiled ops and run on CPU and GPU alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def gather(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """values (B, N, C), idx (B, M, ...) -> (B, M, ..., C)."""
    b, _, c = values.shape
    flat = idx.reshape(b, -1)
    out = values.gather(1, flat[..., None].expand(-1, -1, c))
    return out.reshape(*idx.shape, c)


class SharedMLP(nn.Module):
    """Linear + BatchNorm + ReLU layers applied to the last dimension of any-shaped input."""

    def __init__(self, dims: tuple[int, ...]):
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm1d(b) for b in dims[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        for linear, norm in zip(self.linears, self.norms):
            x = torch.relu(norm(linear(x)))
        return x.reshape(*shape, x.shape[-1])


@dataclass
class Hierarchy:
    """Index structure of one batch: per level the point coordinates, the fps centres' neighbour
    indices into the finer level, and the 3-NN (indices, weights) from the finer level up to it."""

    xyz: list[torch.Tensor]
    groups: list[torch.Tensor]
    up_idx: list[torch.Tensor]
    up_weight: list[torch.Tensor]


@torch.no_grad()
def build_hierarchy(xyz: torch.Tensor, levels: int, ratio: int, k: int) -> Hierarchy:
    """fps + knn indices for `levels` set-abstraction levels of a (B, N, 3) batch."""
    from ad3d import ops

    coords, groups, up_idx, up_weight = [xyz], [], [], []
    for _ in range(levels):
        fine = coords[-1]
        m = max(1, fine.shape[1] // ratio)
        centres = gather(fine, ops.fps(fine, m))
        groups.append(ops.knn(centres, fine, min(k, fine.shape[1]))[1])
        d2, idx = ops.knn(fine, centres, min(3, m))
        w = 1.0 / (d2.clamp_min(0).sqrt() + 1e-8)
        up_idx.append(idx)
        up_weight.append(w / w.sum(-1, keepdim=True))
        coords.append(centres)
    return Hierarchy(coords, groups, up_idx, up_weight)


class GatedSkip(nn.Module):
    """MC4AD's gated skip fusion followed by the U-Net concatenation and an MLP."""

    def __init__(self, c_skip: int, c_dec: int, c_out: int):
        super().__init__()
        self.project = nn.Linear(c_skip, c_dec)
        self.refine = nn.Linear(c_dec, c_dec)
        self.gate = nn.Linear(c_dec, 1)
        self.mlp = SharedMLP((c_dec + c_skip, c_out))

    def forward(self, skip: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        refined = self.refine(dec)
        alpha = torch.sigmoid(self.gate(refined))
        fused = alpha * self.project(skip) + (1 - alpha) * refined
        return self.mlp(torch.cat([fused, skip], -1))


class PointUNet(nn.Module):
    """(B, N, 3) coordinates -> (B, N, out_channels) per-point features."""

    def __init__(
        self,
        encoder: tuple[int, ...] = (32, 64, 128, 256, 256),
        decoder: tuple[int, ...] = (192, 128, 96, 64),
        ratio: int = 4,
        k: int = 16,
    ):
        super().__init__()
        if len(decoder) != len(encoder) - 1:
            raise ValueError(f"decoder needs {len(encoder) - 1} widths for {len(encoder)} encoder levels")
        self.ratio, self.k = ratio, k
        self.stem = SharedMLP((3, encoder[0]))
        self.down = nn.ModuleList(SharedMLP((c_in + 3, c_out, c_out)) for c_in, c_out in zip(encoder[:-1], encoder[1:]))
        ups, c_dec = [], encoder[-1]
        for level, c_out in enumerate(decoder):
            ups.append(GatedSkip(encoder[-2 - level], c_dec, c_out))
            c_dec = c_out
        self.up = nn.ModuleList(ups)
        self.out_channels = decoder[-1]

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        h = build_hierarchy(xyz, len(self.down), self.ratio, self.k)
        feats = [self.stem(xyz)]
        for level, mlp in enumerate(self.down):
            fine_xyz, centres = h.xyz[level], h.xyz[level + 1]
            grouped = torch.cat(
                [gather(fine_xyz, h.groups[level]) - centres[:, :, None], gather(feats[-1], h.groups[level])], -1
            )
            feats.append(mlp(grouped).max(2).values)
        dec = feats[-1]
        for step, block in enumerate(self.up):
            level = len(self.down) - 1 - step  # interpolate from level + 1 to level
            upsampled = (gather(dec, h.up_idx[level]) * h.up_weight[level][..., None]).sum(2)
            dec = block(feats[level], upsampled)
        return dec


BACKBONES = {"point-unet": PointUNet}
