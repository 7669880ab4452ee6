"""MuSc-V2's steps against the outputs of its release (HUST-SLOW/MuSc-V2 @ b5e911d; README.md here says which
function made each fixture). The release computes SNAMD in half precision: those tolerances say so."""

import numpy as np
import pytest

import ad3d
from ad3d.detectors import musc_steps as steps
from ad3d.types import Scan


def test_mutual_scoring_per_layer_then_the_mean_matches_msm_single(fixture):
    f = fixture("musc_msm")
    det = ad3d.create("musc", steps="release")
    per_layer = [[steps.interval_mean(d, det.interval) for d in steps.mutual_distances(list(z))] for z in f["layers"]]
    np.testing.assert_allclose(np.array(per_layer), f["per_layer"], rtol=1e-5, atol=1e-6)
    distances = [steps.mutual_distances(list(z)) for z in f["layers"]]
    for i in range(f["layers"].shape[1]):
        _, s3 = det._layer_scores(None, [layer[i] for layer in distances], None)
        np.testing.assert_allclose(s3, f["mean"][i], rtol=1e-5, atol=1e-6)


def test_snamd_on_groups_matches_embed_3d(fixture):
    f = fixture("musc_snamd_3d")
    flat = f["curvatures"] < 0.01
    for layer, expected in zip(f["layers"], f["out"].transpose(1, 0, 2)):
        got = steps.snamd_groups(layer, f["centres"], flat, (1, 3, 5))
        np.testing.assert_allclose(got, expected, atol=2e-3)  # the release rounds to float16


def test_snamd_on_patches_matches_embed_2d(fixture):
    f = fixture("musc_snamd_2d")
    for tokens, expected in zip(f["tokens"], f["out"].transpose(1, 0, 2)):
        grid = tokens[1:].T.reshape(-1, 12, 12)  # the class token dropped, patches row-major
        np.testing.assert_allclose(steps.snamd_patches(grid, (1, 3, 5)), expected, atol=2e-3)


def test_cross_modal_enhancement_matches_compute_scores_multiple(fixture):
    f = fixture("musc_cae")
    det = ad3d.create("musc", modalities=("rgb", "xyz"), steps="release")
    d2 = steps.mutual_distances(list(f["z2"]))
    d3 = steps.mutual_distances(list(f["z3"]))
    for i in range(len(d2)):
        described = {
            "pixels": f["pixels"][i],
            "pixel_grid": (224, 224),
            "centre_idx": np.arange(f["pixels"].shape[1]),
            "grid": (28, 28),
        }
        s2, s3 = det._layer_scores([d2[i]], [d3[i]], det._patch_of_group(described))
        np.testing.assert_allclose(s2, f["out2"][i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s3, f["out3"][i], rtol=1e-5, atol=1e-6)


def test_rscon_matches_release(fixture):
    f = fixture("musc_rscon")
    np.testing.assert_allclose(steps.rscon(f["scores"], f["salient"], (1, 7)), f["out"], rtol=1e-5, atol=1e-6)


def test_iterative_point_grouping_matches_iter_group(fixture):
    f = fixture("musc_ipg")
    groups, curvatures = steps.iterative_groups(f["xyz"], f["centres"], 128, 256, 80, 0.01)
    np.testing.assert_allclose(curvatures, f["curvatures"], rtol=1e-4, atol=1e-6)
    curved = f["curvatures"] >= 0.01
    assert 10 < curved.sum() < len(curved) - 10  # both kinds of group are exercised
    assert (np.array([len(set(g)) for g in f["groups"]]) < 128).any()  # and members that repeat
    # the same members, repeats included; two new members at nearly equal distances may come in swapped order
    # (float32 distances computed in another order), which changes no group feature
    np.testing.assert_array_equal(np.sort(groups, 1), np.sort(f["groups"], 1))
    assert (groups == f["groups"]).mean() > 0.999


def test_maps_and_object_score_match_release(fixture):
    f = fixture("musc_maps")
    import torch

    from ad3d import ops

    points = torch.from_numpy(f["xyz"])
    at_points = ops.interpolate(points, points[f["centre_idx"]], torch.from_numpy(f["s3"]), power=2).numpy()
    # the release expands |a - b|^2 = |a|^2 + |b|^2 - 2ab in float32 (cancellation: about 5e-4 here); weights
    # of 1/d instead of 1/(d^2 + 1e-8) would miss by far more
    np.testing.assert_allclose(at_points, f["at_points"], atol=1e-3)
    inverse_d = ops.interpolate(points, points[f["centre_idx"]], torch.from_numpy(f["s3"]), power=1).numpy()
    assert np.abs(inverse_d - f["at_points"]).max() > 0.02
    scan = Scan(points=f["xyz"], grid_index=f["pixels"], grid_shape=(224, 224))
    det = ad3d.create("musc", modalities=("rgb", "xyz"), steps="release")
    described = {"points": f["xyz"], "pixels": f["pixels"], "centre_idx": f["centre_idx"], "grid": (28, 28)}
    fused, object_score = det._maps(scan, described, f["s2"], f["s3"])
    # the 3D map is cut to 8 bits before its blur: one level of the map's max is the most a rounding can move
    step = float(f["at_points"].max()) / 255
    np.testing.assert_allclose(fused, f["fused"], atol=step + 1e-6)
    assert np.mean(np.abs(fused - f["fused"]) < 1e-5) > 0.99
    assert object_score == pytest.approx(float(f["object"]), abs=step)
