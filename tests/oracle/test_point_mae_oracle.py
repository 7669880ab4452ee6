"""Point-MAE's encoder on raw points against M3DM's (nomewang/M3DM @ 62b7f46, models/models.py:
PointTransformer): a row already equal, kept so. Both load the same seeded weights, ad3d's from a
checkpoint written in the released layout."""

import json

import numpy as np
import torch
from oracle_weights import seeded_state


def test_point_mae_encoder_matches_m3dm_point_transformer(fixture, tmp_path):
    from ad3d.features.point_mae import PointMAEBackbone

    f = fixture("point_mae_encoder")
    shapes = {k: tuple(json.loads(s)) for k, s in zip(f["keys"], f["shapes"])}
    state = {f"module.MAE_encoder.{k}": torch.from_numpy(v) for k, v in seeded_state(shapes, 12).items()}
    torch.save({"base_model": state}, tmp_path / "pretrain.pth")  # the released file's layout
    backbone = PointMAEBackbone(tmp_path / "pretrain.pth", num_group=64, group_size=32, frame="raw")
    out = backbone(f["points"])
    assert np.array_equal(out.centres, f["centres"])
    assert np.array_equal(out.groups, f["members"])  # the same members, nearest first
    scale = np.abs(f["features"]).max()
    assert np.abs(out.features - f["features"]).max() < 1e-6 * scale
    sphere = PointMAEBackbone(tmp_path / "pretrain.pth", num_group=64, group_size=32)(f["points"])
    assert np.abs(sphere.features - f["features"]).max() > 0.5 * scale  # the frame is what M3DM feeds
