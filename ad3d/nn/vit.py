"""The vision transformer of DINO (ViT-S/8, ViT-B/8) and DINOv2 (ViT-S/14), with the authors' module
names, so their released backbone checkpoints load key for key. Written here rather than taken from
timm: timm requires torchvision, whose wheels pull a CUDA build of torch onto CPU machines.

Pre-norm blocks (LayerNorm eps 1e-6, GELU MLP of ratio 4, qkv with bias), a class token, learned
position embeddings interpolated bicubically to the input's patch grid (as both releases do), and in
DINOv2 a LayerScale (`ls1.gamma`, `ls2.gamma`) on each residual branch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ad3d.nn.transformer import Attention, Mlp


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, layer_scale: bool):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, num_heads, qkv_bias=True)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, 4 * dim)
        self.ls1 = LayerScale(dim) if layer_scale else nn.Identity()
        self.ls2 = LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """`img_size` is the size the position table was trained for (224 for DINO, 518 for DINOv2)."""

    def __init__(
        self, patch_size: int, embed_dim: int, depth: int, num_heads: int, img_size: int, layer_scale: bool = False
    ):
        super().__init__()
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (img_size // patch_size) ** 2 + 1, embed_dim) * 0.02)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, layer_scale) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)

    def positions(self, h: int, w: int) -> torch.Tensor:
        """The position table resized to an h x w patch grid (bicubic), class position first."""
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        side = int(math.isqrt(grid.shape[1]))
        if (h, w) != (side, side):
            grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
            grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([cls, grid], dim=1)

    def intermediate(self, x: torch.Tensor, blocks: tuple[int, ...]) -> list[torch.Tensor]:
        """(B, 3, H, W) -> the patch tokens after each listed block (0-based), through the final norm,
        as (B, C, H / patch, W / patch) maps."""
        b, _, height, width = x.shape
        h, w = height // self.patch_size, width // self.patch_size
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1) + self.positions(h, w)
        out = {}
        for i, block in enumerate(self.blocks[: max(blocks) + 1]):
            tokens = block(tokens)
            if i in blocks:
                out[i] = self.norm(tokens)[:, 1:].transpose(1, 2).reshape(b, -1, h, w)
        return [out[i] for i in blocks]
