"""MuSc's 3D branch: mutual scoring, iterative point grouping, SNAMD, RsCon, pool vs batch scoring."""

import numpy as np
import pytest

import ad3d
from ad3d.detectors.musc_steps import interval_mean, iterative_groups, mutual_distances, rscon, snamd_groups
from ad3d.errors import ConfigError
from ad3d.types import Scan


def test_mutual_scoring_puts_a_planted_outlier_on_top_and_averages_the_lowest_30_percent():
    rng = np.random.default_rng(0)
    sets = [rng.normal(size=(20, 4)).astype(np.float32) * 0.01 + np.eye(4)[i % 4] for i in range(11)]
    sets[3][7] += 5.0  # one patch of one scan far from everything
    scores = [interval_mean(d, 0.3) for d in mutual_distances(sets)]
    assert np.unravel_index(np.argmax(np.stack(scores)), (11, 20)) == (3, 7)
    # by hand for one row: its nearest distance into each of the 10 other sets, the lowest 3 averaged
    d = np.sort([np.linalg.norm(other - sets[0][5], axis=1).min() for other in sets[1:]])
    assert scores[0][5] == pytest.approx(d[:3].mean(), rel=1e-5)
    with pytest.raises(ConfigError, match="give it a set of scans"):
        mutual_distances([sets[0]])


def test_iterative_grouping_keeps_a_group_on_its_own_sheet():
    """Two parallel sheets 0.03 apart (a thin wall), points 0.01 apart: the 64 nearest points of a centre
    reach across the gap; IPG, growing from its 16 nearest, stays on the centre's sheet."""
    u, v = np.meshgrid(np.arange(40) * 0.01, np.arange(40) * 0.01)
    sheet = np.stack([u.ravel(), v.ravel(), np.zeros(u.size)], 1)
    points = np.concatenate([sheet, sheet + [0, 0, 0.03]]).astype(np.float32)
    centre = np.array([20 * 40 + 20])  # middle of the lower sheet
    plain, _ = iterative_groups(points, centre, 64, 256, 16, threshold=np.inf)  # never curved: plain kNN
    grown, curv = iterative_groups(points, centre, 64, 256, 16, threshold=0.01)
    assert curv[0] > 0.01 and (points[plain[0], 2] > 0.01).any()
    assert (points[grown[0], 2] == 0).all()  # members may repeat (as released): every one on the lower sheet
    assert set(grown[0][-16:]) == set(plain[0][:16])  # the 16 nearest first, the grown members before them


def test_snamd_pools_the_degrees_of_flat_groups_channel_by_channel_as_released():
    features = np.array([[1.0, 0], [1.0, 0.2], [0, 1.0]], np.float32)
    centres = np.array([[0, 0, 0], [1, 0, 0], [5, 0, 0]], np.float32)
    out = snamd_groups(features, centres, np.array([True, True, False]), (1, 2))
    w = np.exp(-0.2)  # group 0's nearest other group differs by 0.2
    mixed = (features[0] + w * features[1]) / (1 + w)  # degree 2; degree 1 is the group itself
    # [degree 1 | degree 2] = [1, 0, m0, m1] pooled in runs of two: [(1 + 0) / 2, (m0 + m1) / 2]
    assert np.allclose(out[0], [0.5, mixed.sum() / 2])
    assert np.allclose(out[2], features[2])  # curved: keeps its own


def test_snamd_on_patches_pads_the_border_with_zeros_and_normalises():
    from ad3d.detectors.musc_steps import snamd_patches

    grid = np.stack([np.arange(9, dtype=np.float32).reshape(3, 3), np.ones((3, 3), np.float32)])
    out = snamd_patches(grid, (1, 3))
    window = np.stack([np.arange(9.0), np.ones(9)], 1)
    w = np.exp(-np.linalg.norm(window - window[4], axis=1))  # the centre patch (4, 1) and its 3 x 3 window
    expected = (window[4] + (w[:, None] * window).sum(0) / w.sum()) / 2
    assert np.allclose(out[4], expected / np.linalg.norm(expected), atol=1e-6)
    corner = np.array([[0, 0], [0, 0], [0, 0], [0, 0], [0, 1], [1, 1], [0, 0], [3, 1], [4, 1]], float)  # zero pads
    w = np.exp(-np.linalg.norm(corner - corner[4], axis=1))
    expected = (corner[4] + (w[:, None] * corner).sum(0) / w.sum()) / 2
    assert np.allclose(out[0], expected / np.linalg.norm(expected), atol=1e-6)


def test_rscon_propagates_scores_over_the_largest_raw_dot_products():
    scores = np.array([0.0, 1.0, 0.5])  # already min-max normalised
    salient = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])  # dot products as they are, not cosines
    one = [0.0, 0.0, 0.5]  # k = 1: each row's largest dot product: scans 0, 0, 2
    two = [0.9 / 1.9, 0.82 / 1.72, (0.5 + 0.1) / 1.1]  # k = 2: rows 0 and 1 keep scans 0, 1; row 2 keeps 2, 1
    assert np.allclose(rscon(scores, salient, (1,)), one)
    assert np.allclose(rscon(scores, salient, (2,)), (np.array(one) + two) / 2)  # k = 1 is always among them
    assert np.allclose(rscon(scores, salient, (1, 7)), (np.array(one) + rscon(scores, salient, (3,)) * 2 - one) / 2)


def shapes(shared_data, n, seed=0):
    from ad3d.io import read_scan

    return [read_scan(shared_data / "meshes" / "cad" / "angle_block.STL", sample=1500, seed=seed + s) for s in range(n)]


def test_pool_scoring_equals_batch_scoring_and_is_deterministic(shared_data):
    from ad3d.synth import plant

    pool = shapes(shared_data, 3)
    odd = plant(shapes(shared_data, 1, seed=20)[0], "bulge", seed=1)
    params = {
        "num_groups": 256,
        "group_size": 16,
        "grow_step": 8,
        "search_size": 64,
        "rscon": False,
        "radii": (0.1, 0.2),
    }
    alone = ad3d.create("musc", **params).fit(pool).score(odd)
    batch = ad3d.create("musc", **params).fit([]).score_many([odd, *pool])[0]
    assert np.array_equal(alone.point_scores, batch.point_scores) and alone.object_score == batch.object_score
    grown = ad3d.create("musc", **params).fit(pool[:1]).update_pool(pool[1:]).score(odd)  # a pool that grew
    assert np.array_equal(grown.point_scores, alone.point_scores)
    again = ad3d.create("musc", **params).fit([]).score_many([odd, *pool])[0]
    assert np.array_equal(again.point_scores, batch.point_scores)
    unfitted = ad3d.create("musc", **params).score_many([odd, *pool])[0]  # zero-shot: no fit([]) needed
    assert np.array_equal(unfitted.point_scores, batch.point_scores)
    from ad3d.metrics import auroc

    assert auroc(odd.labels, batch.point_scores) > 0.7  # the bulge stands out (0.76 when written)


def test_score_a_folder_with_musc_and_no_model(tmp_path, shared_data, capsys):
    from ad3d import cli
    from ad3d.io import write_scan
    from ad3d.synth import plant

    for i, scan in enumerate(shapes(shared_data, 4)):
        write_scan(tmp_path / f"good{i}.ply", scan)
    write_scan(tmp_path / "odd.ply", plant(shapes(shared_data, 1, seed=30)[0], "bulge", seed=2))
    code = cli.main(
        [
            "score",
            "--detector",
            "musc",
            str(tmp_path),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            "--param",
            "num_groups=128",
            "--param",
            "group_size=32",
            "--param",
            "grow_step=8",
            "--param",
            "search_size=64",
        ]
    )
    assert code == 0, capsys.readouterr().err
    import json

    written = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")}
    reports = {stem: r["object_score"] for stem, r in written.items()}
    assert len(reports) == 5 and max(reports, key=reports.get) == "odd"
    assert all(r["decision"] in ("accept", "review", "reject") for r in written.values())  # judged by the batch
    code = cli.main(["score", "--detector", "patchcore", str(tmp_path), "--out", str(tmp_path / "o2")])
    assert code == 2 and "needs training" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="give it a set of scans"):
        ad3d.create("musc", num_groups=64, group_size=16, grow_step=8, search_size=32).fit([]).score(
            Scan(points=shapes(shared_data, 1)[0].points)
        )


def test_replace_sorted_maps_ranks_onto_the_source_values():
    import torch

    from ad3d.detectors.musc_steps import replace_sorted

    assert replace_sorted(torch.tensor([10.0, 30.0, 20.0]), torch.tensor([3.0, 1.0, 2.0])).tolist() == [30, 10, 20]


def test_colour_and_geometry_together_find_a_contamination_the_points_cannot_see(tmp_path, shared_data):
    from ad3d import datasets
    from ad3d.metrics import auroc
    from ad3d.synth import make_dataset

    make_dataset(
        [shared_data / "meshes" / "ycb" / "cracker_box.obj"],
        "mvtec3d",
        tmp_path / "mv",
        train=1,
        good=3,
        per_defect=1,
        defects=("contamination", "bulge"),
        image_size=64,
        seed=3,
    )
    test = list(datasets.load("mvtec3d", tmp_path / "mv", "cracker_box", "test"))
    params = {"num_groups": 256, "group_size": 32, "grow_step": 16, "search_size": 64, "rscon": False}
    fused = ad3d.create("musc", modalities=("rgb", "xyz"), **params).fit([]).score_many(test)
    points = ad3d.create("musc", modalities=("xyz",), **params).fit([]).score_many(test)
    dirty = next(i for i, s in enumerate(test) if s.defect_type == "contamination")
    assert fused[dirty].image_scores.shape == (64, 64)  # the fused map comes back on the image grid
    assert auroc(test[dirty].labels, fused[dirty].point_scores) > 0.8  # colour shows it
    assert auroc(test[dirty].labels, points[dirty].point_scores) < auroc(test[dirty].labels, fused[dirty].point_scores)
    with pytest.raises(ConfigError, match="needs an organised scan with its colour image"):
        ad3d.create("musc", modalities=("rgb",)).fit([]).score_many(
            [Scan(points=test[0].points, colors=test[0].colors)] * 2
        )


def test_point_mae_features_are_the_encoder_blocks_on_the_ipg_groups_and_pin_the_weights(tmp_path, shared_data):
    import hashlib
    import json

    from safetensors.torch import save_file
    from test_features import TINY_MAE

    from ad3d.nn.point_mae import PointMAE, PointMAEConfig

    config = PointMAEConfig(**TINY_MAE)
    path = tmp_path / "pm.safetensors"
    save_file(PointMAE(config).state_dict(), str(path), metadata={"point_mae": json.dumps(config.as_dict())})
    params = {"num_groups": 64, "group_size": 16, "search_size": 32, "grow_step": 8, "rscon": False}
    det = ad3d.create("musc", point_features="point-mae", point_weights=str(path), **params)
    scans = shapes(shared_data, 3)
    views = det.describe(scans[0])["views"]
    net = det._point_net()
    assert views.shape == (len(net.blocks) * len(det.degrees), 64, 48)  # ad3d: a view per block and degree
    paper_views = ad3d.create("musc", point_features="point-mae", point_weights=str(path), steps="release", **params)
    assert paper_views.describe(scans[0])["views"].shape == (len(net.blocks), 64, 48)  # release: degrees pooled
    # blocks_of on given groups is the encoder itself: on its own FPS/kNN groups it equals a plain call
    plain = net(scans[0].points)
    centre_idx = plain.groups[:, 0]  # each centre is its own nearest point
    assert np.allclose(scans[0].points[centre_idx], plain.centres, atol=1e-5)
    blocks = net.blocks_of(scans[0].points, centre_idx, plain.groups)
    assert np.allclose(np.concatenate(blocks, 1), plain.features, atol=1e-5)
    assert det.fingerprints() == [net.fingerprint()]
    assert net.fingerprint()["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    fpfh_views = ad3d.create("musc", **params).describe(scans[0])["views"]
    assert fpfh_views.shape[1] == 64 and fpfh_views.shape[2] != 48  # the default stays FPFH
    results = det.fit([]).score_many(scans)
    assert all(np.isfinite(r.point_scores).all() and len(r.point_scores) == len(s) for r, s in zip(results, scans))


def test_an_uncalibrated_zero_shot_batch_is_judged_by_its_own_scores():
    det = ad3d.create("musc")
    scans = [Scan(points=np.random.default_rng(i).random((200, 3)).astype(np.float32)) for i in range(5)]
    objects = [1.0, 1.1, 0.9, 1.05, 5.0]  # four alike, one far off
    scored = [(np.full(200, 0.1 * (i + 1), np.float32), obj) for i, obj in enumerate(objects)]
    judge = det._judged_by_batch(scans, scored)
    assert 1.1 < judge.review_threshold_ < judge.threshold_ < 5.0
    points = np.concatenate([p for p, _ in scored])
    assert judge.point_threshold_ == pytest.approx(np.quantile(points, 0.995))
    assert judge.calibration_["method"].startswith("the batch itself") and det.threshold_ is None  # not kept
