"""The two backbone interfaces: images in, patch feature maps out; points in, group features out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ad3d.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FeatureMap:
    """One layer's patch features, (B, C, h, w) float32, each patch covering `stride` pixels square."""

    layer: str
    stride: int
    features: "torch.Tensor"  # noqa: F821 (torch is imported lazily)

    def normalised(self):
        """The features L2-normalised per patch (what patch-distance methods compare)."""
        import torch.nn.functional as F

        return F.normalize(self.features, dim=1)


@dataclass(frozen=True)
class PointFeatures:
    """Features of point groups: `centres` (G, 3), `features` (G, C), and `groups` (G, k) indices of the
    points each group holds, so group values can be carried back to points."""

    centres: np.ndarray
    features: np.ndarray
    groups: np.ndarray

    def at_points(self, points: np.ndarray, power: int = 1) -> np.ndarray:
        """(N, C) features at any points: inverse-distance weights of the 3 nearest group centres (power 2:
        1/(d^2 + 1e-8), as M3DM and LSFA carry them)."""
        import torch

        from ad3d import ops

        values = ops.interpolate(
            torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(self.centres, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(self.features, dtype=np.float32)),
            power=power,
        )
        return values.numpy().astype(np.float32)


class ImageBackbone:
    """A frozen image network: uint8 RGB (H, W, 3) or (B, H, W, 3) in, one FeatureMap per layer out.

    Subclasses set `net` (a torch module in eval mode), `strides` (layer -> stride) and `_forward`
    (a normalised (B, 3, H, W) batch -> {layer: (B, C, h, w)}).
    """

    name = ""
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    strides: dict[str, int] = {}

    def __init__(self, layers: tuple[str, ...], weights_path: Path | None, device: str = "cpu"):
        unknown = [la for la in layers if la not in self.strides]
        if unknown or not layers:
            raise ConfigError(
                f"{self.name} has no layer {', '.join(map(repr, unknown)) or '(none asked)'}; "
                f"layers: {', '.join(self.strides)}"
            )
        self.layers, self.weights_path, self.device = tuple(layers), weights_path, device

    def to_tensor(self, images: np.ndarray):
        """A uint8 RGB image or batch as the normalised float (B, 3, H, W) tensor the network expects."""
        import torch

        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ConfigError(
                f"{self.name} takes uint8 RGB images (H, W, 3) or (B, H, W, 3), got {images.dtype} {images.shape}"
            )
        x = torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).float().div(255)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((x - mean) / std).to(self.device)

    def __call__(self, images: np.ndarray) -> list[FeatureMap]:
        import torch

        with torch.inference_mode():
            maps = self._forward(self.to_tensor(images))
        return [FeatureMap(layer, self.strides[layer], maps[layer].float().cpu()) for layer in self.layers]

    def on_grid(self, image: np.ndarray, size: int) -> tuple[list, tuple[int, int]]:
        """One uint8 image resized to size x size, and each layer's (C, h, w) map brought (bilinearly) to
        the grid of the first, finest layer: what patch-level methods compare, patch for patch."""
        import torch.nn.functional as F
        from PIL import Image

        resized = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
        maps = self(resized)
        grid = tuple(maps[0].features.shape[-2:])
        return [F.interpolate(m.features, size=grid, mode="bilinear", align_corners=False)[0] for m in maps], grid

    def fingerprint(self) -> dict:
        """What a model file records instead of the weights: the backbone's name, the weights' sha256 and
        the file they were read from (for messages; only the sha256 is compared)."""
        from ad3d.features.weights import sha256

        return {
            "backbone": self.name,
            "sha256": sha256(self.weights_path) if self.weights_path else None,
            "file": str(self.weights_path) if self.weights_path else None,
        }

    def _forward(self, x) -> dict:
        raise NotImplementedError
