"""The Point-MAE encoder as a frozen point backbone: a scan's points in, features of FPS-centred groups
out (M3DM's use: 1024 groups of 128 points, blocks 3, 7 and 11 concatenated, 1152 numbers per group).

Weights: the released `pretrain.pth` (its `base_model` dict, with or without DataParallel's `module.`
prefix) or a file written by `ad3d pretrain point-mae` (safetensors, the same key names, the
architecture in its header); only the `MAE_encoder.` part is used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ad3d.errors import ConfigError, WeightsError
from ad3d.features.base import PointFeatures
from ad3d.features.weights import match_keys, read_state_dict, resolve, sha256

PREFIX = "MAE_encoder."


def encoder_state(path: Path) -> tuple[dict, dict]:
    """(the encoder's tensors without their prefix, the architecture the file records or {})."""
    state = read_state_dict(path, "Point-MAE")
    state = state.get("base_model", state)
    if not isinstance(state, dict):
        raise WeightsError(f"weights file '{path}': 'base_model' is not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    encoder = {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}
    if not encoder:
        raise WeightsError(f"weights file '{path}' holds no '{PREFIX}*' tensors: not a Point-MAE checkpoint")
    arch = {}
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            try:
                arch = json.loads((f.metadata() or {}).get("point_mae", "{}"))
            except json.JSONDecodeError as e:
                raise WeightsError(f"weights file '{path}': its point_mae metadata is not JSON ({e})") from None
        if not isinstance(arch, dict):
            raise WeightsError(f"weights file '{path}': its point_mae metadata is not a record")
    _check_arch(path, arch, encoder)
    return encoder, arch


def _check_arch(path: Path, arch: dict, encoder: dict) -> None:
    """The architecture a file's header claims against its tensors, before anything is built from it (a
    header claiming 300,000 blocks must not allocate them)."""
    depth = len({k.split(".")[2] for k in encoder if k.startswith("blocks.blocks.")})
    if "depth" in arch and arch["depth"] != depth:
        raise WeightsError(f"weights file '{path}': its header claims {arch['depth']} blocks, its tensors hold {depth}")
    norm = encoder.get("norm.weight")
    if "trans_dim" in arch and norm is not None and arch["trans_dim"] != norm.shape[0]:
        raise WeightsError(
            f"weights file '{path}': its header claims width {arch['trans_dim']}, its tensors are {norm.shape[0]} wide"
        )


class PointMAEBackbone:
    """Frozen Point-MAE encoder. Points are centred and scaled into the unit sphere first (frame
    "unit-sphere": its ShapeNet pretraining, and MuSc-V2's input) or taken as they are ("raw": M3DM's and
    LSFA's input); features are the normed outputs of `blocks` (0-based; default the ends of the three
    thirds of the network: 3, 7, 11 of 12 as in M3DM), concatenated per group."""

    name = "point-mae"

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        random_init: bool = False,
        num_group: int = 1024,
        group_size: int = 128,
        blocks=None,
        device: str = "cpu",
        seed: int = 0,
        frame: str = "unit-sphere",
        **arch_overrides,
    ):
        import torch

        from ad3d.nn.point_mae import MaskTransformer, PointMAEConfig

        if frame not in ("unit-sphere", "raw"):
            raise ConfigError(f"point-mae frame must be 'unit-sphere' or 'raw', got {frame!r}")
        self.frame = frame

        self.weights_path = None if random_init else resolve(self.name, weights)
        encoder, arch = encoder_state(self.weights_path) if self.weights_path else ({}, {})
        fields = set(PointMAEConfig.__dataclass_fields__)
        self.config = PointMAEConfig(**{**{k: v for k, v in arch.items() if k in fields}, **arch_overrides})
        depth = self.config.depth
        blocks = tuple(blocks) if blocks is not None else tuple(sorted({max(0, depth * k // 3 - 1) for k in (1, 2, 3)}))
        if any(not 0 <= b < depth for b in blocks):
            raise ConfigError(f"point-mae blocks {tuple(blocks)} outside 0..{self.config.depth - 1}")
        self.num_group, self.group_size, self.blocks, self.device = num_group, group_size, tuple(blocks), device
        torch.manual_seed(seed)
        self.net = MaskTransformer(self.config)
        if self.weights_path is not None:
            match_keys(
                self.weights_path,
                encoder,
                self.net.state_dict(),
                f"the Point-MAE encoder ({self.config.trans_dim} wide, {self.config.depth} blocks)",
            )
            self.net.load_state_dict(encoder)
        self.net.eval().to(device)

    @property
    def dim(self) -> int:
        return self.config.trans_dim * len(self.blocks)

    def __call__(self, points: np.ndarray) -> PointFeatures:
        import torch

        from ad3d.nn.point_mae import group

        x, centre, scale = self._in_frame(points)
        with torch.inference_mode():
            groups, centres, idx = group(x[None], min(self.num_group, len(x)), min(self.group_size, len(x)))
            _, kept = self.net(groups, centres, keep=self.blocks)
        features = torch.cat(kept, dim=-1)[0].float().cpu().numpy()
        return PointFeatures(centres[0].cpu().numpy() * scale + centre, features, idx[0].cpu().numpy())

    def blocks_of(self, points: np.ndarray, centre_idx: np.ndarray, group_idx: np.ndarray) -> list[np.ndarray]:
        """Features of groups chosen by the caller (MuSc's IPG): centre_idx (G,) and group_idx (G, k) index
        `points`. One (G, trans_dim) array per kept block."""
        import torch

        x, _, _ = self._in_frame(points)
        centres = x[torch.from_numpy(np.asarray(centre_idx, dtype=np.int64)).to(self.device)]
        members = x[torch.from_numpy(np.asarray(group_idx, dtype=np.int64)).to(self.device)]
        with torch.inference_mode():
            _, kept = self.net((members - centres[:, None])[None], centres[None], keep=self.blocks)
        return [k[0].float().cpu().numpy() for k in kept]

    def _in_frame(self, points: np.ndarray):
        """The points centred and scaled into the unit sphere (frame "unit-sphere"), or as they are ("raw"),
        as a tensor on the device; the centre and the scale to undo it."""
        import torch

        points = np.asarray(points, dtype=np.float32)
        if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
            raise ConfigError(f"point-mae takes (N, 3) points, got {points.shape}")
        if self.frame == "raw":
            return torch.from_numpy(np.ascontiguousarray(points)).to(self.device), np.zeros(3, np.float32), 1.0
        centre = points.mean(0)
        scale = float(np.linalg.norm(points - centre, axis=1).max()) or 1.0
        return torch.from_numpy((points - centre) / scale).to(self.device), centre, scale

    def fingerprint(self) -> dict:
        return {
            "backbone": self.name,
            "sha256": sha256(self.weights_path) if self.weights_path else None,
            "file": str(self.weights_path) if self.weights_path else None,
            "config": self.config.as_dict(),
        }
