"""Point-MAE (Pang et al., ECCV 2022): the point transformer that M3DM, LSFA and MuSc-V2 use as their 3D
backbone, and its masked-autoencoder pretraining model. Module and attribute names follow the release,
so a state dict in the released layout (`MAE_encoder.blocks.blocks.0.attn.qkv.weight`, ...) loads as is.

Groups: FPS centres and their k nearest points (ad3d.ops), centred on the centre. Tokens: a mini-PointNet
per group. Transformer: pre-norm blocks, the centres' positional embedding added before every block.
Drop-path, which only regularises training, is left out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ad3d import ops
from ad3d.nn.transformer import Attention, Mlp


@dataclass(frozen=True)
class PointMAEConfig:
    """The architecture; defaults are the released ShapeNet pretraining (`pretrain.yaml`)."""

    trans_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    encoder_dims: int = 384
    decoder_depth: int = 4
    decoder_num_heads: int = 6
    group_size: int = 32
    num_group: int = 64

    def as_dict(self) -> dict:
        return asdict(self)


def group(points: torch.Tensor, num_group: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, N, 3) -> neighbourhoods (B, G, k, 3) centred on their centres, centres (B, G, 3), and the
    indices (B, G, k) of each group's points."""
    centre_idx = ops.fps(points, num_group)
    centres = torch.gather(points, 1, centre_idx[..., None].expand(-1, -1, 3))
    idx = ops.knn(centres, points, group_size)[1]
    b = torch.arange(points.shape[0], device=points.device)[:, None, None]
    return points[b, idx] - centres[:, :, None], centres, idx


class Encoder(nn.Module):
    """Mini-PointNet: a group's points -> one token (max-pooled twice, with the group's global feature)."""

    def __init__(self, encoder_channel: int):
        super().__init__()
        self.encoder_channel = encoder_channel
        self.first_conv = nn.Sequential(
            nn.Conv1d(3, 128, 1), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Conv1d(128, 256, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Conv1d(512, encoder_channel, 1)
        )

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        b, g, n, _ = groups.shape
        x = self.first_conv(groups.reshape(b * g, n, 3).transpose(2, 1))
        x = torch.cat([x.max(2, keepdim=True)[0].expand(-1, -1, n), x], dim=1)
        return self.second_conv(x).max(2)[0].reshape(b, g, self.encoder_channel)


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, num_heads, qkv_bias=False)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerEncoder(nn.Module):
    def __init__(self, embed_dim: int, depth: int, num_heads: int):
        super().__init__()
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads) for _ in range(depth)])

    def forward(self, x: torch.Tensor, pos: torch.Tensor, keep: tuple[int, ...] = ()) -> tuple[torch.Tensor, list]:
        """The last block's output, and the outputs of the blocks listed in `keep` (0-based)."""
        kept = []
        for i, block in enumerate(self.blocks):
            x = block(x + pos)
            if i in keep:
                kept.append(x)
        return x, kept


class MaskTransformer(nn.Module):
    """The encoder: group tokens + positional embedding of the centres -> transformer -> LayerNorm."""

    def __init__(self, config: PointMAEConfig):
        super().__init__()
        self.encoder = Encoder(config.encoder_dims)
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, config.trans_dim))
        self.blocks = TransformerEncoder(config.trans_dim, config.depth, config.num_heads)
        self.norm = nn.LayerNorm(config.trans_dim)

    def forward(
        self,
        groups: torch.Tensor,
        centres: torch.Tensor,
        visible: torch.Tensor | None = None,
        keep: tuple[int, ...] = (),
    ) -> tuple[torch.Tensor, list]:
        """Encoded visible tokens (B, V, C) after the final norm, and the normed outputs of `keep` blocks
        (M3DM's features: blocks 3, 7, 11 of the full, unmasked set)."""
        tokens = self.encoder(groups)
        if visible is not None:
            b, _, c = tokens.shape
            tokens, centres = tokens[visible].reshape(b, -1, c), centres[visible].reshape(b, -1, 3)
        x, kept = self.blocks(tokens, self.pos_embed(centres), keep)
        return self.norm(x), [self.norm(k) for k in kept]


class TransformerDecoder(nn.Module):
    def __init__(self, embed_dim: int, depth: int, num_heads: int):
        super().__init__()
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, last: int) -> torch.Tensor:
        for block in self.blocks:
            x = block(x + pos)
        return self.norm(x[:, -last:])


class PointMAE(nn.Module):
    """The pretraining model: mask a share of the groups, encode the visible ones, decode a token per
    masked group and predict its points; the loss is the Chamfer distance to the true points."""

    def __init__(self, config: PointMAEConfig):
        super().__init__()
        self.config = config
        self.MAE_encoder = MaskTransformer(config)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.trans_dim))
        self.decoder_pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, config.trans_dim))
        self.MAE_decoder = TransformerDecoder(config.trans_dim, config.decoder_depth, config.decoder_num_heads)
        self.increase_dim = nn.Sequential(nn.Conv1d(config.trans_dim, 3 * config.group_size, 1))
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(
        self, points: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The masked-reconstruction Chamfer loss of a (B, N, 3) batch, averaged over the masked groups."""
        cfg = self.config
        groups, centres, _ = group(points, cfg.num_group, cfg.group_size)
        b, g = centres.shape[:2]
        masked_count = int(mask_ratio * g)
        order = torch.rand(b, g, generator=generator).argsort(1).to(points.device)
        masked = torch.zeros(b, g, dtype=torch.bool, device=points.device)
        masked.scatter_(1, order[:, :masked_count], True)
        visible_tokens, _ = self.MAE_encoder(groups, centres, ~masked)
        c = visible_tokens.shape[-1]
        pos_visible = self.decoder_pos_embed(centres[~masked]).reshape(b, -1, c)
        pos_masked = self.decoder_pos_embed(centres[masked]).reshape(b, -1, c)
        x = torch.cat([visible_tokens, self.mask_token.expand(b, masked_count, -1)], dim=1)
        decoded = self.MAE_decoder(x, torch.cat([pos_visible, pos_masked], dim=1), masked_count)
        predicted = self.increase_dim(decoded.transpose(1, 2)).transpose(1, 2).reshape(b * masked_count, -1, 3)
        return ops.chamfer(predicted, groups[masked].reshape(b * masked_count, -1, 3)).mean()
