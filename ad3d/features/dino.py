"""DINO ViT-S/8 and ViT-B/8 (the 2D backbone of M3DM, LSFA and MuSc-V2) and DINOv2 ViT-S/14 (ad3d.nn.vit),
filled from a local checkpoint in the layout the authors released (state-dict keys as in
`dino_vitbase8_pretrain.pth` / `dinov2_vits14_pretrain.pth`). Features: the patch tokens after chosen
blocks, through the final LayerNorm, as (B, C, H/patch, W/patch) maps."""

from __future__ import annotations

import os

from ad3d.errors import ConfigError, WeightsError
from ad3d.features.base import ImageBackbone
from ad3d.features.weights import match_keys, read_state_dict, resolve

ARCHS = {  # as released; DINOv2 is trained at 518 px, so its position table has 37 x 37 + 1 entries
    "dino-vits8": {"patch_size": 8, "embed_dim": 384, "depth": 12, "num_heads": 6, "img_size": 224},
    "dino-vitb8": {"patch_size": 8, "embed_dim": 768, "depth": 12, "num_heads": 12, "img_size": 224},
    "dinov2-vits14": {
        "patch_size": 14,
        "embed_dim": 384,
        "depth": 12,
        "num_heads": 6,
        "img_size": 518,
        "layer_scale": True,
    },
}
DROPPED = {"mask_token"}  # DINOv2's masked-token embedding: used in its training only


class DinoViT(ImageBackbone):
    """A DINO / DINOv2 vision transformer; `blocks` are 0-based block indices (MuSc-V2: 3, 7, 11)."""

    def __init__(
        self,
        name: str = "dino-vitb8",
        blocks=(3, 7, 11),
        weights: str | os.PathLike | None = None,
        random_init: bool = False,
        device: str = "cpu",
        **arch_overrides,
    ):
        import torch

        from ad3d.nn.vit import VisionTransformer

        if name not in ARCHS:
            raise ConfigError(f"unknown DINO backbone {name!r}; known: {', '.join(ARCHS)}")
        self.name, arch = name, {**ARCHS[name], **arch_overrides}
        self.strides = {f"block{b}": arch["patch_size"] for b in range(arch["depth"])}
        path = None if random_init else resolve(name, weights)
        super().__init__(tuple(f"block{b}" for b in blocks), path, device)
        torch.manual_seed(0)
        self.net = VisionTransformer(**arch)
        if path is not None:
            state = read_state_dict(path, name)
            state = {k: v for k, v in state.items() if k not in DROPPED}
            if "head.weight" in state:
                raise WeightsError(
                    f"weights file '{path}' holds a classifier head: pass the backbone checkpoint of {name}"
                )
            match_keys(path, state, self.net.state_dict(), name)
            self.net.load_state_dict(state)
        self.net.eval().to(device)

    def _forward(self, x) -> dict:
        maps = self.net.intermediate(x, tuple(int(layer[5:]) for layer in self.layers))
        return dict(zip(self.layers, maps))
