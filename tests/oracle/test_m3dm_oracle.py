"""M3DM's point tokens (what LSFA's paper preset reads) against nomewang/M3DM @ 62b7f46: features/features.py
Features.__call__ and multiple_features.py PointFeatures.add_sample_to_mem_bank."""

import numpy as np

from ad3d import fusion
from ad3d.features.base import PointFeatures
from ad3d.types import Scan


def test_point_tokens_are_the_zero_filled_grid_averaged_and_pooled(fixture):
    f = fixture("m3dm_point_tokens")
    valid = (f["xyz"] != 0).all(2)
    scan = Scan(points=f["xyz"][valid], grid_index=np.flatnonzero(valid), grid_shape=(224, 224))
    resized = fusion.resize(scan, 224)
    points = resized.xyz[resized.valid]
    groups = PointFeatures(points[f["centre_idx"]], f["group_features"], np.zeros((200, 1), int))
    tokens = fusion.pooled_patches(resized, groups.at_points(points, power=2), 56)
    # the release expands squared distances in float32 (|a|^2 + |b|^2 - 2ab) before its 1/(d^2 + 1e-8)
    np.testing.assert_allclose(tokens, f["tokens"], atol=2e-3)
    inverse_d = fusion.pooled_patches(resized, groups.at_points(points, power=1), 56)
    assert np.abs(inverse_d - f["tokens"]).max() > 0.1  # 1/d weights would be far off
    means, _ = fusion.points_to_patches(scan, groups.at_points(points, power=2), 56)
    assert np.abs(means.reshape(-1, 24) - f["tokens"]).max() > 0.1  # ad3d's default patch mean is another token
