"""Simple3D: FPFH/MSND against hand-worked histograms and Open3D, LFSA as group means, the thinning that keeps
dense scans affordable, and a subtle planted defect on a dense scan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import ad3d
from ad3d.detectors.simple3d import thin_at, thinning_voxel
from ad3d.features.msnd import ADAPTIVE_NORMAL_KS, fpfh_knn, msnd, neighbour_graph, pca_normals
from ad3d.types import Scan


def _bins(feature: np.ndarray) -> dict[int, float]:
    return {int(i): round(float(feature[i]), 4) for i in np.flatnonzero(feature)}


def test_fpfh_of_a_flat_patch_is_the_flat_histogram():
    # every pair on a plane with normals +z: alpha = atan2(0, 1) = 0 -> bin 5; phi = v.n2 = 0 -> bin 11 + 5;
    # theta = n1.d = 0 -> bin 22 + 5; SPFH 100 in each, FPFH = SPFH + renormalised neighbours' SPFH = 200
    grid = np.stack(np.meshgrid(np.arange(5.0), np.arange(5.0)), -1).reshape(-1, 2)
    points = np.c_[grid, np.zeros(len(grid))] + np.c_[np.random.default_rng(0).normal(0, 0.01, (25, 2)), np.zeros(25)]
    normals = np.tile([0.0, 0.0, 1.0], (25, 1))
    dist2, idx = neighbour_graph(points, 6)
    feats = fpfh_knn(points, normals, dist2, idx)
    assert all(_bins(f) == {5: 200.0, 16: 200.0, 27: 200.0} for f in feats)


@pytest.mark.parametrize(
    "normals, expected",
    [
        # p1 = 0, n1 = z; p2 = x, n2 = (0, .6, .8): d.n1 = d.n2 = 0 (no swap, theta 0 -> bin 27); v = d x n1 = -y,
        # w = n1 x v = x: phi = v.n2 = -0.6 -> floor(11 * 0.4 / 2) = 2 -> bin 13; alpha = atan2(w.n2, n1.n2) =
        # atan2(0, .8) = 0 -> bin 5. The same from p2's side.
        ([[0.0, 0, 1], [0.0, 0.6, 0.8]], {5: 200.0, 13: 200.0, 27: 200.0}),
        # n1 = (.28, 0, .96), n2 = (.6, .48, .64): |n1.d| = .28 < |n2.d| = .6, so Open3D swaps: m1 = n2, m2 = n1,
        # d = -x, theta = -.6 -> floor(11 * .4 / 2) = 2 -> bin 24; v = d x m1 / |.| = (0, .8, -.6), w = m1 x v =
        # (-.8, .36, .48): phi = v.m2 = -.576 -> floor(11 * .424 / 2) = 2 -> bin 13; alpha = atan2(w.m2, m1.m2) =
        # atan2(.2368, .7824) = .2940 -> floor(11 * (.2940 + pi) / 2pi) = 6 -> bin 6. From p2's side no swap and
        # the same angles.
        ([[0.28, 0, 0.96], [0.6, 0.48, 0.64]], {6: 200.0, 13: 200.0, 24: 200.0}),
    ],
    ids=["tilted", "swapped"],
)
def test_fpfh_of_a_pair_by_hand(normals, expected):
    # each point's FPFH: its one pair's SPFH (100 in each angle's bin) plus its neighbour's, renormalised
    points = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    dist2, idx = neighbour_graph(points, 1)
    feats = fpfh_knn(points, np.array(normals), dist2, idx)
    assert _bins(feats[0]) == _bins(feats[1]) == expected


@pytest.mark.parametrize("k", [1, 12, 40])
def test_fpfh_equals_open3d_given_the_same_normals_and_neighbours(k):
    import open3d as o3d

    rng = np.random.default_rng(k)
    p = rng.normal(size=(2000, 3))
    p = p / np.linalg.norm(p, axis=1, keepdims=True) * [3, 2, 1] + rng.normal(0, 0.01, p.shape)
    normals = rng.normal(size=p.shape)  # random normals: no exact ties between |n1.d| and |n2.d|
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p))
    cloud.normals = o3d.utility.Vector3dVector(normals)
    ref = np.asarray(
        o3d.pipelines.registration.compute_fpfh_feature(cloud, o3d.geometry.KDTreeSearchParamKNN(k + 1)).data
    ).T
    ours = fpfh_knn(p, normals, *neighbour_graph(p, k))
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_msnd_concatenates_one_fpfh_per_scale_and_normals_point_outwards():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(1500, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    graph = neighbour_graph(p, 24)
    normals = pca_normals(p, graph[1], 10)
    assert np.all(np.einsum("ij,ij->i", normals, p) > 0.95)  # a sphere's normals are its radii, outwards
    feats = msnd(p, (8, 24, 24), normal_k=10)  # k counts the point itself, as Open3D's max_nn does
    assert feats.shape == (1500, 99)
    np.testing.assert_array_equal(feats[:, 33:66], feats[:, 66:])  # a repeated scale repeats its block
    np.testing.assert_allclose(feats[:, :33], fpfh_knn(p, normals, graph[0][:, :8], graph[1][:, :8]), atol=1e-4)
    np.testing.assert_allclose(feats[:, :33].reshape(-1, 3, 11).sum(2), 200.0, rtol=1e-4)  # SPFH + neighbours


def _cube_surface(spacing: float = 0.05) -> np.ndarray:
    """A grid on the six faces of the cube [-1, 1]^3, no point on an edge."""
    ticks = np.arange(-1 + spacing / 2, 1, spacing)
    u, v = (a.ravel() for a in np.meshgrid(ticks, ticks))
    return np.concatenate([np.insert(np.c_[u, v], axis, side, axis=1) for axis in range(3) for side in (-1.0, 1.0)])


def test_adaptive_normals_take_the_flattest_neighbourhood():
    points = _cube_surface()
    graph = neighbour_graph(points, 89)[1]
    near_edge = int(np.flatnonzero(np.all(np.isclose(points, [0.825, 0.025, 1.0]), axis=1))[0])  # 0.175 from x = 1
    adaptive_ks = (*ADAPTIVE_NORMAL_KS, 90)
    single, adaptive = pca_normals(points, graph, 90)[near_edge], pca_normals(points, graph, adaptive_ks)[near_edge]
    # 90 neighbours reach over the edge onto the x = 1 face and tilt the normal; the smaller sizes lie on the top face
    assert float(single[0]) > 0.05
    np.testing.assert_allclose(adaptive.numpy(), [0.0, 0.0, 1.0], atol=1e-9)
    # on a noisy flat face every size fits a plane: the largest averages the noise out, and is mostly taken
    rng = np.random.default_rng(0)
    plane = np.c_[rng.random((3000, 2)), 0.002 * rng.normal(size=3000)]
    graph = neighbour_graph(plane, 89)[1]
    tilt = {k: float((1 - pca_normals(plane, graph, k)[:, 2].abs()).mean()) for k in (15, 90, adaptive_ks)}
    assert tilt[adaptive_ks] < 1.2 * tilt[90] < 0.5 * tilt[15]


def test_msnd_with_adaptive_normals_uses_the_adaptive_sizes_and_normal_k():
    points = _cube_surface(0.1)
    dist2, idx = neighbour_graph(points, 89)
    normals = pca_normals(points, idx, (*ADAPTIVE_NORMAL_KS, 90))
    adaptive = msnd(points, (30,), normal_k=90, normals="adaptive")
    np.testing.assert_allclose(adaptive, fpfh_knn(points, normals, dist2[:, :30], idx[:, :30]), atol=1e-4)
    outward = msnd(points, (30,), normal_k=90, normals="outward")  # near the edges 90 points tilt the normals
    assert float((adaptive - outward).abs().max()) > 1.0


def test_lfsa_is_the_mean_of_each_centres_group():
    rng = np.random.default_rng(2)
    p = rng.normal(size=(600, 3)).astype(np.float32)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    det = ad3d.create("simple3d", max_points=0, scales=(8,), normal_k=10, num_groups=5, group_size=600)
    centres, feats = det.centre_features(p)
    assert centres.shape == (5, 3) and feats.shape == (5, 33)
    whole = msnd(p, (8,), 10).mean(0)  # a group of every point: each centre's feature is the mean of all
    np.testing.assert_allclose(feats, np.tile(whole, (5, 1)), rtol=1e-5)
    det = ad3d.create("simple3d", max_points=0, scales=(8,), normal_k=10, num_groups=5, group_size=1)
    centres, feats = det.centre_features(p)  # a group of one: the centre's own descriptor
    rows = [int(np.flatnonzero((p == c).all(1))[0]) for c in centres]
    np.testing.assert_allclose(feats, msnd(p, (8,), 10)[rows], rtol=1e-5)


def test_thinning_keeps_the_first_point_of_each_cell():
    # x from the minimum 0.01 in cells of 0.25: cells 0, 1, 0, 2, 0 -> the first points of cells 0, 1, 2 are 0, 1, 3
    points = np.array([[0.05, 0, 0], [0.5, 0, 0], [0.06, 0, 0], [0.55, 0, 0], [0.01, 0, 0]])
    np.testing.assert_array_equal(thin_at(points, 0.25), [0, 1, 3])


def test_thinning_keeps_an_even_cover_of_at_most_max_points():
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 1, (200_000, 3)) * [1, 1, 0.001]
    kept = thin_at(p, thinning_voxel(p, 5000))
    assert 4000 <= len(kept) <= 5000 and np.all(np.diff(kept) > 0)
    gaps = torch.from_numpy(p.astype(np.float32))
    from ad3d import ops

    dist2 = ops.knn(gaps, gaps[torch.from_numpy(kept)], 1)[0]
    assert float(dist2.max().sqrt()) < 3 / np.sqrt(len(kept))  # no point far from a kept one
    np.testing.assert_array_equal(thin_at(p[:100], thinning_voxel(p[:100], 5000)), np.arange(100))


def test_a_scan_under_max_points_is_still_thinned_to_thin_share_of_its_points():
    # the descriptors see an even copy of at most half a 12,500-point scan's points, not the scan as sampled
    rng = np.random.default_rng(4)
    p = (rng.uniform(0, 1, (12_500, 3)) ** [1, 3, 1] * [1, 1, 0.001]).astype(np.float32)  # uneven density
    det = ad3d.create("simple3d", scales=(8,), normal_k=10, num_groups=100_000, group_size=4).fit([Scan(points=p)])
    centres, _ = det.centre_features(p)  # num_groups above the point count: one centre per working point
    assert 0.9 * 6250 <= len(centres) <= 6250
    det.set_params(thin_share=1.0).fit([Scan(points=p)])
    assert len(det.centre_features(p)[0]) == 12_500  # max_points (16,384) alone leaves it as scanned


def test_the_spacing_learned_at_fit_thins_every_scan_of_the_part_to_one_density():
    # scans of one surface with 10,000 and 15,000 points: thinned each to half its own count they would differ
    # in density by half, so k neighbours would cover different areas; at the spacing learned at fit they differ
    # only by how often a sparser scan leaves a cell empty
    rng = np.random.default_rng(5)
    square = lambda n: (rng.uniform(0, 1, (n, 3)) * [1, 1, 0.001]).astype(np.float32)  # noqa: E731
    det = ad3d.create("simple3d").fit([Scan(points=square(12_500)) for _ in range(3)])
    sparse, dense = square(10_000), square(15_000)
    fit_counts = [len(det.working_copy(s)) for s in (sparse, dense)]
    det.set_params(spacing="scan")
    scan_counts = [len(det.working_copy(s)) for s in (sparse, dense)]
    assert 0.9 * 6250 <= len(det.set_params(spacing="fit").working_copy(square(12_500))) <= 6600
    assert scan_counts[1] / scan_counts[0] > 1.4
    assert fit_counts[1] / fit_counts[0] < 1.25


def test_fps_thinning_spreads_the_kept_points_evenly_where_a_grid_leaves_pose_patterns():
    # a square turned 20 degrees: the grid keeps one point per cell it crosses, some pairs almost touching across a
    # cell wall; as many farthest points are spread evenly (nearest-neighbour spacing nearly constant)
    from scipy.spatial.transform import Rotation

    from ad3d import ops

    rng = np.random.default_rng(7)
    turn = Rotation.from_euler("xyz", [4, 3, 20], degrees=True).as_matrix().T
    square = lambda: (rng.uniform(0, 1, (20_000, 3)) * [1, 1, 0.001] @ turn).astype(np.float32)  # noqa: E731
    det = ad3d.create("simple3d", max_points=4000).fit([Scan(points=square())])
    scan = square()
    spreads = {}
    for thinning in ("grid", "fps"):
        kept = torch.from_numpy(det.set_params(thinning=thinning).working_copy(scan))
        gaps = ops.knn(kept, kept, 2)[0][:, 1].sqrt()
        spreads[thinning] = (len(kept), float(gaps.min() / gaps.mean()), float(gaps.std() / gaps.mean()))
    assert spreads["fps"][0] == spreads["grid"][0]  # the same count: the learned spacing's
    assert spreads["grid"][1] < 0.1 and spreads["fps"][1] > 0.6  # no near-touching pairs after FPS
    assert spreads["fps"][2] < 0.5 * spreads["grid"][2]


def test_each_fit_draw_adds_another_sampling_of_every_training_scan_to_the_bank():
    # draws beyond the first start every FPS (thinning and centres) at a random point: other centres, other
    # thinned neighbourhoods, so the bank also holds the features a scan gets when sampled differently; with
    # the whole bank kept (coreset_ratio=1) it is the single draw's bank plus new rows, so no distance can grow
    rng = np.random.default_rng(8)
    square = lambda n: (rng.uniform(0, 1, (n, 3)) * [1, 1, 0.05]).astype(np.float32)  # noqa: E731
    train, test = [Scan(points=square(3000)) for _ in range(2)], Scan(points=square(3000))
    params = dict(max_points=1000, scales=(8, 16), normal_k=10, num_groups=64, group_size=8, coreset_ratio=1.0)
    one = ad3d.create("simple3d", fit_draws=1, **params).fit(train)
    three = ad3d.create("simple3d", fit_draws=3, **params).fit(train)
    assert len(three.bank_) == 3 * len(one.bank_)
    as_set = lambda rows: {r.tobytes() for r in rows}  # noqa: E731
    assert as_set(one.bank_) <= as_set(three.bank_)  # the first draw is the one a scan is scored with
    assert len(as_set(three.bank_) - as_set(one.bank_)) > len(one.bank_)  # the others are new samplings
    np.testing.assert_array_equal(three.bank_, ad3d.create("simple3d", fit_draws=3, **params).fit(train).bank_)
    assert np.all(three.score(test).point_scores <= one.score(test).point_scores + 1e-5)


def test_a_scan_far_larger_than_the_training_scans_is_thinned_to_max_points():
    # the learned spacing on a part four times the size would keep about 16 x max_points: memory would follow the
    # scan; over twice max_points the copy is thinned to max_points instead
    rng = np.random.default_rng(6)
    det = ad3d.create("simple3d", max_points=1000).fit([Scan(points=rng.uniform(0, 1, (3000, 3)) * [1, 1, 0.001])])
    large = (rng.uniform(0, 1, (48_000, 3)) * [4, 4, 0.001]).astype(np.float32)
    assert len(thin_at(large, det.voxel_)) > 2000  # what the learned spacing alone would keep
    assert 900 <= len(det.working_copy(large)) <= 1000


def test_thinning_finds_a_grid_where_the_plain_update_steps_back_and_forth():
    # benchmarks/scale.py's 500k-point scan: the plain update jumped over the 90-100 % band for 12 rounds and
    # kept 14,371 points (0.6 s); bracketing the voxel size finds 14,833 in a few rounds
    from ad3d.io import read_scan
    from ad3d.synth.acquisition import add_noise

    part = Path(ad3d.__file__).resolve().parents[1] / "datasets" / "demo" / "idler_riser.STL"  # shipped
    scan = add_noise(read_scan(part, sample=500_000, seed=99), 0.0005, np.random.default_rng(99))
    kept = thin_at(scan.points, thinning_voxel(scan.points, 16384))
    assert 0.9 * 16384 <= len(kept) <= 16384


def _dense_part(seed: int, n: int = 200_000) -> Scan:
    import trimesh

    mesh = trimesh.creation.capsule(height=1.0, radius=0.4)
    pts, faces = trimesh.sample.sample_surface(mesh, n, seed=seed)
    pts = pts + np.random.default_rng(seed).normal(0, 0.0005, pts.shape)
    normals = np.asarray(mesh.face_normals[faces], np.float32)  # planting needs no normal estimate (no Open3D)
    return Scan(points=np.asarray(pts, np.float32), normals=normals, category="capsule")


def test_a_subtle_defect_on_half_a_percent_of_a_dense_scan_is_found():
    from sklearn.metrics import roc_auc_score

    from ad3d.synth.defects import plant

    det = ad3d.create("simple3d").fit([_dense_part(s) for s in range(3)])
    good = det.score(_dense_part(10))
    defective = plant(_dense_part(11), "bulge", seed=0, fraction=(0.005, 0.005), height=(0.008, 0.008))
    assert 0.004 < defective.labels.mean() < 0.006
    bad = det.score(defective)
    assert bad.object_score > 1.5 * good.object_score
    assert roc_auc_score(defective.labels, bad.point_scores) > 0.95
    # the object score: the mean of the 640 highest point scores (the default, chosen on the development sets)
    np.testing.assert_allclose(bad.object_score, np.sort(bad.point_scores)[-640:].mean(), rtol=1e-5)


def test_paper_preset_is_the_released_setting():
    from ad3d.detectors.registry import preset

    det = ad3d.create("simple3d", **preset("simple3d", "paper"))
    assert det.scales == (40, 80, 80, 120) and det.num_groups == 4096 and det.group_size == 128
    assert det.max_points == 0 and det.normals == "open3d" and det.normal_k == 10
    assert det.coreset_ratio == 0.05 and det.top_k == 80 and det.smooth_centres == 1024 and det.smooth_k == 12


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_on_the_gpu_the_descriptors_and_the_scores_are_the_cpus():
    # float32 sums in another order can move a pair feature across a bin edge: a few rows may differ by one
    # pair's share (100 / k), nothing more; the detector then finds the same defect with the same scores
    from ad3d.synth.defects import plant

    points = _dense_part(0, 50_000).points
    on_cpu, on_gpu = msnd(points, (16, 32), 10), msnd(points, (16, 32), 10, device="cuda")
    assert on_gpu.is_cuda
    off = (on_gpu.cpu() - on_cpu).abs().amax(1)
    assert float((off > 1e-3).float().mean()) < 0.01 and float(off.max()) <= 100 / 15 + 1e-3
    train = [_dense_part(s) for s in range(3)]
    defective = plant(_dense_part(11), "bulge", seed=0, fraction=(0.005, 0.005), height=(0.008, 0.008))
    cpu = ad3d.create("simple3d").fit(train).score(defective)
    gpu = ad3d.create("simple3d", device="cuda").fit(train).score(defective)
    assert abs(gpu.object_score - cpu.object_score) < 0.05 * cpu.object_score
    assert np.corrcoef(gpu.point_scores, cpu.point_scores)[0, 1] > 0.99
