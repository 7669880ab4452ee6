"""LSFA: its losses by hand, block rotation, the decision layer from normal scans only, determinism,
save/load, and modality checks, on a small synthetic RGB-D part."""

import math

import numpy as np
import pytest
import torch

import ad3d
from ad3d.errors import ConfigError
from ad3d.nn.adaptor import compactness, info_nce, rotate_blocks
from ad3d.types import Scan


def test_info_nce_by_hand_and_the_way_it_pulls_pairs_together():
    a = torch.eye(2, requires_grad=True)
    loss = info_nce(a, torch.eye(2))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)))  # each row: its own pair at 1, the other at 0
    b = torch.tensor([[1.0, 0.2], [0.3, 1.0]])
    x = torch.tensor([[0.2, 1.0], [1.0, 0.1]], requires_grad=True)  # pairs start crossed
    before = torch.nn.functional.cosine_similarity(x, b).sum()
    info_nce(x, b).backward()
    with torch.no_grad():
        x -= 0.5 * x.grad
    assert torch.nn.functional.cosine_similarity(x, b).sum() > before


def test_compactness_by_hand_and_its_pull_towards_the_queue():
    f = torch.tensor([[0.0, 0.0], [3.0, 4.0]], requires_grad=True)
    queue = torch.zeros(1, 2)
    loss = compactness(f, queue)
    assert loss.item() == pytest.approx(2.5)
    loss.backward()
    assert torch.allclose(f.grad[1], torch.tensor([0.3, 0.4]))  # d/df of |f| / 2: towards the queued feature


def test_rotate_blocks_turns_each_4x4_block_by_a_multiple_of_90_degrees():
    image = np.random.default_rng(0).integers(0, 255, (8, 12, 3), dtype=np.uint8)
    turned = rotate_blocks(image, np.random.default_rng(1))
    assert not np.array_equal(turned, image)
    for r in range(0, 8, 4):
        for c in range(0, 12, 4):
            block, got = image[r : r + 4, c : c + 4], turned[r : r + 4, c : c + 4]
            assert any(np.array_equal(np.rot90(block, k, axes=(0, 1)), got) for k in range(4))


@pytest.fixture(scope="module")
def mv_root(tmp_path_factory, shared_data):
    from ad3d.synth import make_dataset

    root = tmp_path_factory.mktemp("lsfa") / "mv"
    make_dataset(
        [shared_data / "meshes" / "ycb" / "cracker_box.obj"],
        "mvtec3d",
        root,
        train=4,
        good=2,
        per_defect=1,
        defects=("contamination", "bulge"),
        image_size=48,
        seed=5,
    )
    return root


@pytest.fixture(scope="module")
def part(mv_root):
    from ad3d import datasets

    root = mv_root
    return (
        list(datasets.load("mvtec3d", root, "cracker_box", "train")),
        list(datasets.load("mvtec3d", root, "cracker_box", "test")),
    )


TINY = {"iterations": 12, "warmup": 4, "coreset_ratio": 0.5}


def test_fit_is_deterministic_and_a_saved_model_scores_the_same(part, tmp_path):
    train, test = part
    det = ad3d.create("lsfa", **TINY).fit(train)
    again = ad3d.create("lsfa", **TINY).fit(train)
    assert np.array_equal(det.banks_["rgb"]["bank"], again.banks_["rgb"]["bank"])
    first = det.score(test[0])
    assert np.array_equal(first.point_scores, again.score(test[0]).point_scores)
    assert first.image_scores.shape == (48, 48)  # the fused map comes back on the image grid
    det.save(tmp_path / "m.ad3d")
    from safetensors.numpy import load_file

    assert not any("efficientnet" in k or "_conv" in k for k in load_file(str(tmp_path / "m.ad3d")))
    back = ad3d.load(tmp_path / "m.ad3d")
    assert np.array_equal(back.score(test[0]).point_scores, first.point_scores)


def fused(det, scores: dict) -> np.ndarray:
    from ad3d.detectors.decision_layer import standard_fused

    return standard_fused(scores, det.fusion_, det.fusion)


def test_the_decision_layer_is_learned_on_normal_scans_only(part):
    train, _ = part
    det = ad3d.create("lsfa", **TINY).fit(train)
    assert {"w_rgb", "w_xyz", "offset", "rgb_mean", "xyz_std"} <= set(det.fusion_)
    normal = {"rgb": np.array([det.fusion_["rgb_mean"]]), "xyz": np.array([det.fusion_["xyz_mean"]])}
    odd = {"rgb": normal["rgb"] + 5 * det.fusion_["rgb_std"], "xyz": normal["xyz"]}
    assert fused(det, odd)[0] > fused(det, normal)[0]  # far from normal in either modality scores higher
    empty = {"rgb": normal["rgb"], "xyz": np.array([np.nan])}  # a patch that holds no points
    assert fused(det, empty)[0] == pytest.approx(fused(det, normal)[0])  # its missing point term is neutral
    tokens = det.tokens(train[0])
    assert not tokens["valid"].all()  # the background patches of the image
    assert np.isnan(det._patch_scores(tokens)["xyz"][~tokens["valid"]]).all()
    summed = ad3d.create("lsfa", fusion="sum", **TINY).fit(train)
    assert fused(summed, odd)[0] == pytest.approx(5.0, rel=1e-4)  # standardised scores added


def test_a_colour_mode_refuses_a_scan_without_its_image(part):
    train, _ = part
    det = ad3d.create("lsfa", **TINY)
    with pytest.raises(ConfigError, match="reads colour and geometry"):
        det.fit([Scan(points=train[0].points, path="bare.ply")])
    points_only = ad3d.create("lsfa", modalities=("xyz",), **TINY).fit(train)
    assert points_only.score(train[0]).point_scores.shape == (len(train[0]),)


def test_object_score_is_the_mean_of_the_top_fraction_of_point_scores(part):
    from ad3d.detectors.scoring import top_mean

    train, test = part
    det = ad3d.create("lsfa", **TINY).fit(train)
    result = det.score(test[-1])
    assert result.object_score == pytest.approx(top_mean(result.point_scores, 0.05))
    assert result.object_score < result.point_scores.max()
    peak = det.set_params(top_fraction=0.0).score(test[-1])  # 0: the max
    assert peak.object_score == pytest.approx(float(peak.point_scores.max()))
    assert ad3d.detectors.preset("lsfa", "paper")["scoring"] == "release"  # the release's reweighted max instead


def test_joint_fit_shares_one_adaptor_and_keeps_compactness_queues_per_category(part, tmp_path, shared_data):
    import copy

    from ad3d.detectors.lsfa import LSFA

    train, _ = part
    other = [copy.copy(s) for s in train]  # a second "category": the same scans under another name
    for s in other:
        object.__setattr__(s, "category", "twin")
    seen = []
    original = LSFA._loss

    def spy(self, net, batch, rotated, queues, step, rng):
        out = original(self, net, batch, rotated, queues, step, rng)
        seen.append(set(queues))
        return out

    LSFA._loss = spy
    try:
        fitted = ad3d.create("lsfa", **TINY).fit_joint({"cracker_box": train, "twin": other})
    finally:
        LSFA._loss = original
    assert set(fitted) == {"cracker_box", "twin"} and {"cracker_box", "twin"} in seen
    a, b = (fitted[c].net_.state_dict() for c in ("cracker_box", "twin"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # one adaptor
    alone = ad3d.create("lsfa", **TINY).fit(train).net_.state_dict()
    assert not all(torch.equal(a[k], alone[k]) for k in a)  # trained on both, not on one
    assert fitted["twin"].category_ == "twin" and fitted["cracker_box"].banks_["rgb"]["bank"].size
    fitted["twin"].save(tmp_path / "twin.ad3d")
    back = ad3d.load(tmp_path / "twin.ad3d")  # the shared adaptor travels in each category's model
    assert np.array_equal(back.score(train[0]).point_scores, fitted["twin"].score(train[0]).point_scores)


def test_cli_joint_fit_writes_one_model_per_category_and_eval_says_joint(mv_root, tmp_path):
    from command import run_ad3d as cli

    tiny = [a for k, v in TINY.items() for a in ("--param", f"{k}={v}")]
    data = ["--data", mv_root, "--format", "mvtec3d"]
    fit = cli("fit", "--detector", "lsfa", "--joint", *data, "--out", tmp_path / "models", "--quiet", *tiny)
    assert fit.returncode == 0, fit.stderr
    assert "fitted jointly on 4 scans of 1 category" in fit.stdout
    assert ad3d.load(tmp_path / "models" / "cracker_box.ad3d").category_ == "cracker_box"
    ev = cli("eval", "--detector", "lsfa", "--joint", *data, "--quiet", *tiny)
    assert ev.returncode == 0 and "lsfa (joint fit)" in ev.stdout and "cracker_box" in ev.stdout, ev.stderr
    other = cli("eval", "--detector", "patchcore", "--joint", *data)
    assert other.returncode == 2 and "patchcore has no joint fit" in other.stderr


def test_the_early_stop_criterion_always_holds_the_compactness_term(part):
    from ad3d.detectors.lsfa import LSFA

    train, _ = part
    steps = []
    original = LSFA._loss

    def spy(self, net, batch, rotated, queues, step, rng):
        if batch is rotated:  # the held-out check passes the held scans as their own rotated copies
            steps.append(step)
        return original(self, net, batch, rotated, queues, step, rng)

    LSFA._loss = spy
    try:
        ad3d.create("lsfa", **{**TINY, "iterations": 25, "warmup": 30}).fit(train)
    finally:
        LSFA._loss = original
    assert steps and all(s >= 30 for s in steps)  # the one check (step 25) is before the warm-up ends


def test_tokens_sit_on_the_patch_grid_point_means_and_pooled_image_features(part):
    from ad3d import fusion

    train, _ = part
    scan = train[0]
    det = ad3d.create("lsfa", patches=7, **TINY)
    tokens = det.tokens(scan)
    assert tokens["grid"] == (7, 7) and tokens["rgb"].shape[0] == tokens["xyz"].shape[0] == 49
    means, counts = fusion.points_to_patches(scan, det._point_values(scan.points), 7)
    assert np.allclose(tokens["xyz"], means.reshape(49, -1)) and np.array_equal(tokens["valid"], counts.reshape(-1) > 0)
    maps, grid = det._image_net().on_grid(scan.image, det.image_size)  # 224 input: a 28 x 28 stride-8 grid
    assert grid == (28, 28)
    first = torch.cat(maps)[:, :4, :4].mean((1, 2)).numpy()  # patch (0, 0) covers the first 4 x 4 cells
    assert np.allclose(tokens["rgb"][0], first, atol=1e-5)
    fine = ad3d.create("lsfa", patches=56, **TINY).tokens(scan)["rgb"].reshape(56, 56, -1)
    assert np.array_equal(fine[0, 0], fine[1, 1])  # 28 -> 56: each cell's feature fills its 2 x 2 patches


def test_m3dm_point_tokens_pool_the_resized_zero_filled_grid_and_mark_patches_a_point_reaches(part):
    from ad3d import fusion

    scan = part[0][0]
    det = ad3d.create("lsfa", patches=7, point_tokens="m3dm", **TINY)
    tokens = det.tokens(scan)
    resized = fusion.resize(scan, det.image_size)
    values = det._point_values(resized.xyz[resized.valid])  # FPFH: many bins are exactly 0 at valid points
    assert np.allclose(tokens["xyz"], fusion.pooled_patches(resized, values, 7), atol=1e-6)
    reach = torch.nn.functional.adaptive_avg_pool2d(
        torch.nn.functional.avg_pool2d(torch.from_numpy(resized.valid[None, None].astype(np.float32)), 3, stride=1), 7
    )
    assert np.array_equal(tokens["valid"], reach.reshape(-1).numpy() > 0)
    assert 0 < tokens["valid"].sum() < 49


def test_standardise_picks_the_banks_scaled_per_dimension(part):
    train, _ = part
    raw_points = ad3d.create("lsfa", **TINY).fit(train)  # default: image features scaled, FPFH kept raw
    assert np.array_equal(raw_points.banks_["xyz"]["mean"], np.zeros_like(raw_points.banks_["xyz"]["mean"]))
    assert np.array_equal(raw_points.banks_["xyz"]["std"], np.ones_like(raw_points.banks_["xyz"]["std"]))
    feats = []
    for scan in train[:-1]:  # the last scan is held out for the decision layer
        tokens = raw_points.tokens(scan)
        feats.append(raw_points._adapted(tokens)["xyz"][tokens["valid"]])
    bank, patches = torch.from_numpy(raw_points.banks_["xyz"]["bank"]), torch.from_numpy(np.concatenate(feats))
    gaps = torch.cdist(bank, patches, compute_mode="donot_use_mm_for_euclid_dist")
    assert gaps.min(1).values.max() < 1e-3  # every bank row is an unscaled training patch
    both = ad3d.create("lsfa", standardise=("rgb", "xyz"), **TINY).fit(train)
    assert both.banks_["xyz"]["std"].min() > 0 and not np.allclose(both.banks_["xyz"]["std"], 1)
    assert np.array_equal(both.banks_["rgb"]["mean"], raw_points.banks_["rgb"]["mean"])
    with pytest.raises(ConfigError, match="standardise"):
        ad3d.create("lsfa", standardise=("depth",), **TINY).fit(train)


def test_patches_without_points_of_the_part_do_not_raise_its_point_scores(part):
    train, test = part
    det = ad3d.create("lsfa", **TINY).fit(train)
    scan = test[-1]
    valid = det.tokens(scan)["valid"]
    assert not valid.all()
    original = det._patch_scores(det.tokens(scan))

    def scored(background: float) -> np.ndarray:
        det._patch_scores = lambda tokens: {
            "rgb": np.where(valid, original["rgb"], background),
            "xyz": original["xyz"],
        }
        try:
            return det.score(scan).point_scores
        finally:
            del det._patch_scores

    # the background's colour score (say, the part's moved silhouette) would bleed into the edge points
    # through upsampling and blur; an empty patch is read as the least anomalous patch of the part
    assert np.array_equal(scored(0.0), scored(1e3))


@pytest.mark.slow
def test_paper_preset_runs_from_the_released_checkpoints_in_ad3d_weights(part, tmp_path, monkeypatch):
    """The `paper` preset end to end, its two backbones found by their official file names in AD3D_WEIGHTS:
    a full-size DINO ViT-B/8 and Point-MAE, written here key for key in the released layouts (random
    values: this checks the wiring, not the features). 768-d image and 1152-d point tokens on 56 x 56."""
    from native import official_vit_state

    from ad3d.features.weights import sha256
    from ad3d.nn.point_mae import PointMAE, PointMAEConfig

    torch.save(official_vit_state(12, 768, 28 * 28 + 1, 8, False), tmp_path / "dino_vitbase8_pretrain.pth")
    mae = PointMAE(PointMAEConfig()).state_dict()
    torch.save({"base_model": {f"module.{k}": v for k, v in mae.items()}}, tmp_path / "pretrain.pth")
    monkeypatch.setenv("AD3D_WEIGHTS", str(tmp_path))
    train, test = part
    # two steps of one batch: the checkpoints and shapes are what is tested (the preset's 8 x 16 batches a
    # step would cost minutes here); M3DM's 1024 groups of 128 points
    paper = {**ad3d.detectors.preset("lsfa", "paper"), "iterations": 2, "accumulate": 1}
    det = ad3d.create("lsfa", **paper).fit(train[:3])
    assert det.dims_ == {"rgb": 768, "xyz": 1152}
    assert (det._point_net().num_group, det._point_net().group_size) == (1024, 128)
    assert det.banks_["rgb"]["bank"].shape[1] == 768 and det.banks_["xyz"]["bank"].shape[1] == 1152
    tokens = det.tokens(test[0])
    assert tokens["grid"] == (56, 56) and tokens["rgb"].shape == (56 * 56, 768)
    result = det.score(test[0])
    assert result.image_scores.shape == (48, 48) and np.isfinite(result.point_scores).all()
    assert {f["sha256"] for f in det.fingerprints()} == {
        sha256(tmp_path / "dino_vitbase8_pretrain.pth"),
        sha256(tmp_path / "pretrain.pth"),
    }


def test_release_scoring_scales_by_the_releases_scalars_and_fuses_with_its_two_fusers(part, tmp_path):
    from ad3d.detectors.decision_layer import release_pairs

    train, test = part
    det = ad3d.create("lsfa", scoring="release", adapt=False, coreset_ratio=0.5).fit(train)
    xyz, rgb = det.banks_["xyz"], det.banks_["rgb"]
    assert np.ptp(xyz["mean"]) == 0 and np.ptp(xyz["std"]) == 0  # one scalar per modality, not per dimension
    assert xyz["mean"][0] == rgb["mean"][0] and xyz["std"][0] == rgb["std"][0]  # the release's shared statistics
    assert len(rgb["bank"]) == round(0.5 * len(xyz["bank"]))  # the RGB coreset sized from the reduced xyz bank
    assert {"object_xyz", "object_rgb", "map_xyz", "map_rgb"} == set(det.fusion_)
    scan = test[0]
    objects, maps = det._release_scores(det.tokens(scan))
    assert maps["xyz"].shape == (224, 224)  # the release's maps, blurred at 224
    weights = [det.fusion_["object_xyz"], det.fusion_["object_rgb"]]
    result = det.score(scan)
    assert result.object_score == pytest.approx(float(release_pairs(objects["xyz"], objects["rgb"])[0] @ weights))
    assert result.image_scores.shape == scan.grid_shape and np.isfinite(result.point_scores).all()
    det.save(tmp_path / "r.ad3d")
    assert np.array_equal(ad3d.load(tmp_path / "r.ad3d").score(scan).point_scores, result.point_scores)


def test_release_losses_draw_negatives_from_every_patch_of_the_batch(part):
    train, _ = part
    quiet = {"rotation_weight": 0.0, "compactness_weight": 0.0, "global_weight": 0.0}
    for losses in ("ad3d", "release"):
        det = ad3d.create("lsfa", losses=losses, **quiet, **TINY)
        tokens = [det.tokens(s) for s in train[:2]]
        det.dims_ = {m: tokens[0][m].shape[1] for m in det.reads}
        net = det._build_net()
        with torch.no_grad():
            loss = float(det._loss(net, tokens, tokens, {}, 0, np.random.default_rng(0)))
            heads = [
                {m: net[m].head(net[m](torch.from_numpy(t[m]).float()[None])[0]) for m in det.reads} for t in tokens
            ]
        rgb = [h["rgb"][torch.from_numpy(t["valid"])] for h, t in zip(heads, tokens)]
        xyz = [h["xyz"][torch.from_numpy(t["valid"])] for h, t in zip(heads, tokens)]
        if losses == "ad3d":  # each scan its own negatives, averaged
            assert loss == pytest.approx(np.mean([float(info_nce(r, x)) for r, x in zip(rgb, xyz)]), rel=1e-5)
        else:  # negatives from both scans' patches
            assert loss == pytest.approx(float(info_nce(torch.cat(rgb), torch.cat(xyz), release=True)), rel=1e-5)
    paper = ad3d.detectors.preset("lsfa", "paper")
    assert paper["batch_size"] * paper["accumulate"] == 128  # 8 scans x 16 accumulated batches a step
