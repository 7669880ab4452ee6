"""Loaders read miniature copies of each benchmark written in its exact native layout."""

import numpy as np
import pytest
from conftest import tree_digest
from native import make_anomaly_shapenet, make_mvtec3d, make_real3d, write_gt_txt

import ad3d.datasets as ds
from ad3d.errors import DatasetError


def test_real3d_layout(tmp_path):
    planted = make_real3d(tmp_path)
    before = tree_digest(tmp_path)
    assert ds.categories("real3d", tmp_path) == ["airplane", "duck"]
    train = ds.load("real3d", tmp_path, "duck", "train")
    assert len(train) == 2  # *template* and *prototype* names both accepted
    test = ds.load("real3d", tmp_path, "duck", "test")
    scans = list(test)
    assert [s.label for s in scans] == [0, 0, 1, 1]
    assert [s.defect_type for s in scans] == ["good", "good", "bulge", "sink"]
    for s in scans:
        assert s.category == "duck" and len(s.labels) == len(s)
        if s.label == 1:
            assert s.labels.sum() == planted[("duck", s.meta["gt_path"].rsplit("/", 1)[1][:-4])]
            assert s.meta["gt_max_distance"] < 1e-5
        else:
            assert s.labels.sum() == 0
    only_template = ds.load("real3d", tmp_path, "duck", "train", train_globs=("*template*",))
    assert len(only_template) == 1
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("v2", [True, False])
def test_anomaly_shapenet_layouts_with_shuffled_comma_gt_and_crak(tmp_path, v2):
    planted = make_anomaly_shapenet(tmp_path, v2=v2)
    assert ds.categories("anomaly-shapenet", tmp_path) == ["cap0", "vase0"]
    assert len(ds.load("anomaly-shapenet", tmp_path, "vase0", "train")) == 2
    scans = list(ds.load("anomaly-shapenet", tmp_path, "vase0", "test"))
    assert [s.defect_type for s in scans] == ["bulge", "crack", "good", "good"]
    assert [s.label for s in scans] == [1, 1, 0, 0]
    for s in scans[:2]:
        stem = s.meta["gt_path"].rsplit("/", 1)[1][:-4]
        assert s.labels.sum() == planted[("vase0", stem)]  # GT rows were shuffled: matched by position
        assert s.meta["gt_max_distance"] < 1e-5


def test_gt_labels_follow_points_not_row_order(tmp_path):
    from ad3d.datasets.base import attach_gt
    from ad3d.types import Scan

    pts = np.random.default_rng(0).random((50, 3))
    labels = (pts[:, 0] > 0.7).astype(np.uint8)
    write_gt_txt(tmp_path / "g.txt", pts, labels, ",", shuffle_seed=5)
    scan = attach_gt(Scan(points=pts), tmp_path / "g.txt")
    assert np.array_equal(scan.labels, labels)


def test_mvtec3d_layout_masks_zeros_and_splits(tmp_path):
    planted = make_mvtec3d(tmp_path)
    before = tree_digest(tmp_path)
    assert ds.categories("mvtec3d", tmp_path) == ["cable_gland"]
    assert len(ds.load("mvtec3d", tmp_path, "cable_gland", "train")) == 3
    assert len(ds.load("mvtec3d", tmp_path, "cable_gland", "validation")) == 1
    test = list(ds.load("mvtec3d", tmp_path, "cable_gland", "test"))
    assert [(s.defect_type, s.label) for s in test] == [("good", 0), ("good", 0), ("hole", 1), ("hole", 1)]
    hole = test[2]
    assert len(hole) == 40 * 40 - 15  # the zero pixels are missing points
    assert hole.labels.sum() == planted[("hole", 0)] == 20 + 6  # mask values 253 and 255 both count
    assert hole.mask.sum() == 26 and hole.image.shape == (40, 40, 3)
    assert np.array_equal(hole.colors, hole.image.reshape(-1, 3)[hole.grid_index])
    assert tree_digest(tmp_path) == before


def test_mvtec3d_plane_removal_is_cached_outside_the_dataset(tmp_path, monkeypatch):
    import tifffile

    make_mvtec3d(tmp_path / "data", size=60)
    xyz_path = tmp_path / "data/cable_gland/test/good/xyz/000.tiff"
    xyz = tifffile.imread(xyz_path)
    xyz[20:40, 20:40, 2] -= 0.02  # an object standing 2 cm off the background plane
    tifffile.imwrite(xyz_path, xyz, photometric="rgb")
    cache = tmp_path / "cache"
    monkeypatch.setenv("AD3D_CACHE", str(cache))
    before = tree_digest(tmp_path / "data")
    scan = ds.load("mvtec3d", tmp_path / "data", "cable_gland", "test", preprocess="plane")[0]
    assert len(scan) == 400
    assert np.allclose(scan.points[:, 2], scan.points[:, 2].min(), atol=0.001)
    assert len(list(cache.rglob("*.npy"))) == 1
    again = ds.load("mvtec3d", tmp_path / "data", "cable_gland", "test", preprocess="plane")[0]
    assert np.array_equal(again.points, scan.points)
    assert tree_digest(tmp_path / "data") == before


def test_folder_dataset(tmp_path, shared_data):
    import shutil

    for split, kind in (("train", "good"), ("test", "good"), ("test", "dent")):
        (tmp_path / "part" / split / kind).mkdir(parents=True)
    shutil.copy(shared_data / "pcd" / "bun0.pcd", tmp_path / "part/train/good/a.pcd")
    shutil.copy(shared_data / "meshes/cad/round.stl", tmp_path / "part/test/good/b.stl")
    shutil.copy(shared_data / "pcd" / "bun0.pcd", tmp_path / "part/test/dent/c.pcd")
    bunny = ds.load("folder", tmp_path, "part", "train")[0]
    write_gt_txt(tmp_path / "part/gt/dent/c.txt", bunny.points, (np.arange(len(bunny)) < 10).astype(int), " ", 1)
    assert ds.categories("folder", tmp_path) == ["part"]
    assert ds.categories("folder", tmp_path / "part") == ["part"]
    test = ds.load("folder", tmp_path, "part", "test")
    dent = [s for s in test if s.label == 1][0]
    assert dent.defect_type == "dent" and dent.labels.sum() == 10


def test_loader_errors_are_clear(tmp_path):
    make_real3d(tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset format 'kitti'"):
        ds.load("kitti", tmp_path, "duck")
    with pytest.raises(DatasetError, match="no category 'fish'.*found: airplane, duck"):
        ds.load("real3d", tmp_path, "fish")
    with pytest.raises(DatasetError, match="real3d has no 'validation' split"):
        ds.load("real3d", tmp_path, "duck", "validation")
    with pytest.raises(DatasetError, match="does not exist"):
        ds.load("real3d", tmp_path / "nope", "duck")
    (tmp_path / "duck/gt/2_bulge.txt").unlink()
    with pytest.raises(DatasetError, match=r"1 anomalous test scan has no GT file.*2_bulge\.txt"):
        ds.load("real3d", tmp_path, "duck", "test")


def test_every_missing_gt_file_is_named_in_one_error(tmp_path):
    make_anomaly_shapenet(tmp_path)
    for gt in (tmp_path / "pcd/vase0/GT").glob("*.txt"):
        gt.unlink()
    with pytest.raises(
        DatasetError, match=r"2 anomalous test scans have no GT file.*vase0_bulge0\.txt.*vase0_crak1\.txt"
    ):
        ds.load("anomaly-shapenet", tmp_path, "vase0", "test")


def test_verify_on_an_empty_folder_says_why(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "ad3d.cli", "datasets", "verify", str(tmp_path), "--format", "real3d"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "no real3d categories found" in out.stderr and "Traceback" not in out.stderr


def test_verify_reports_gt_mismatch_and_unreadable_files(tmp_path):
    make_anomaly_shapenet(tmp_path)
    clean = ds.verify("anomaly-shapenet", tmp_path)
    assert [r["problems"] for r in clean] == [[], []]
    assert clean[1]["scans"] == 6 and clean[1]["anomalous"] == 2
    gt = tmp_path / "pcd/vase0/GT/vase0_bulge0.txt"
    gt.write_text("\n".join(gt.read_text().splitlines()[:100]) + "\n")  # GT for a different cloud
    (tmp_path / "pcd/vase0/test/vase0_positive1.pcd").write_bytes(b"VERSION 0.7\n")
    problems = ds.verify("anomaly-shapenet", tmp_path)[1]["problems"]
    assert any("100 GT rows for 500 scan points" in p for p in problems)
    assert any("vase0_positive1.pcd" in p and "DATA" in p for p in problems)


def test_describe_counts_defect_types(tmp_path):
    make_anomaly_shapenet(tmp_path)
    rows = ds.describe("anomaly-shapenet", tmp_path)
    assert rows[1] == {"category": "vase0", "train": 2, "test": 4, "defects": {"bulge": 1, "crack": 1, "good": 2}}


def test_eval_warns_when_its_ground_truth_is_what_verify_flags(tmp_path):
    import ad3d
    from ad3d.pipeline import evaluate_category

    make_anomaly_shapenet(tmp_path)
    gt = tmp_path / "pcd/vase0/GT/vase0_bulge0.txt"
    gt.write_text("\n".join(gt.read_text().splitlines()[:100]) + "\n")
    det = ad3d.create("patchcore", num_groups=128).fit(ds.load("anomaly-shapenet", tmp_path, "vase0", "train"))
    with pytest.warns(UserWarning, match=r"vase0: 2 ground-truth problem.*100 GT rows for 500 scan points"):
        row = evaluate_category(det, tmp_path, "anomaly-shapenet", "vase0")
    assert row["gt_problems"] == 2  # the row count, and points far from their rows


def test_loaders_take_the_released_benchmarks_quirks(tmp_path):
    """As public notes report them: Anomaly-ShapeNet v2 PCDs stored binary, a GT file with one row more
    than its PCD (helmet1), test files named without the category's digit (desk0/desk_bulge0.pcd), the
    ten later categories in a `new_pcd/` collection beside `pcd/`; Real3D-AD test names with a `_cut`
    suffix (482_bulge_cut.pcd)."""
    from native import mesh_points, plant_bulge, write_pcd

    for cat, stem, collection in (
        ("helmet1", "helmet1_bulge0", "pcd"),
        ("desk0", "desk_bulge0", "pcd"),
        ("spoon0", "spoon0_bulge0", "new_pcd"),
    ):
        base = tmp_path / "asn" / collection
        write_pcd(base / cat / "train" / f"{cat}_template0.pcd", mesh_points("cad/round.stl", 400, 1))
        pts, labels = plant_bulge(mesh_points("cad/round.stl", 400, 2), seed=1)
        write_pcd(base / cat / "test" / f"{stem}.pcd", pts, data="binary")
        rows_pts, rows_labels = pts, labels
        if cat == "helmet1":  # one GT row more than the PCD has points
            rows_pts, rows_labels = np.vstack([pts, pts[:1] + 1e-3]), np.r_[labels, 0]
        write_gt_txt(base / cat / "GT" / f"{stem}.txt", rows_pts, rows_labels, ",", shuffle_seed=3)
        scan = ds.load("anomaly-shapenet", tmp_path / "asn", cat, "test")[0]
        assert scan.defect_type == "bulge" and np.array_equal(scan.labels, labels)
    assert ds.categories("anomaly-shapenet", tmp_path / "asn") == ["desk0", "helmet1", "spoon0"]
    assert len(ds.load("anomaly-shapenet", tmp_path / "asn", "spoon0", "train")) == 1
    real = tmp_path / "real" / "seahorse"
    write_pcd(real / "train" / "1_template.pcd", mesh_points("cad/round.stl", 400, 1))
    pts, labels = plant_bulge(mesh_points("cad/round.stl", 400, 4), seed=2)
    write_pcd(real / "test" / "482_bulge_cut.pcd", pts, data="binary_compressed")
    write_gt_txt(real / "gt" / "482_bulge_cut.txt", pts, labels, " ", None)
    scan = ds.load("real3d", tmp_path / "real", "seahorse", "test")[0]
    assert scan.defect_type == "bulge" and scan.label == 1 and np.array_equal(scan.labels, labels)


@pytest.mark.parametrize(
    "make, expected",
    [
        (make_real3d, "real3d"),
        (lambda root: make_anomaly_shapenet(root, v2=True), "anomaly-shapenet"),
        (lambda root: make_anomaly_shapenet(root, v2=False), "anomaly-shapenet"),
        (make_mvtec3d, "mvtec3d"),
    ],
)
def test_the_layout_is_told_by_the_folders(tmp_path, make, expected):
    make(tmp_path)
    assert ds.guess_format(tmp_path) == expected


def test_a_folder_of_no_known_layout_asks_for_the_format(tmp_path):
    (tmp_path / "parts" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="cannot tell the layout .* give --format"):
        ds.guess_format(tmp_path)


@pytest.mark.parametrize("mode", ["P", "LA", "1", "I;16", "RGBA"])
def test_mvtec3d_colour_images_in_any_png_mode_are_read_as_their_colours(tmp_path, mode):
    from PIL import Image

    make_mvtec3d(tmp_path)
    png = sorted(tmp_path.glob("*/test/hole/rgb/*.png"))[0]
    rgb = np.asarray(Image.open(png).convert("RGB"))
    saved = Image.fromarray(rgb)
    if mode == "I;16":
        grey = np.asarray(saved.convert("L")).astype(np.uint16) * 257  # 16-bit grey, full range
        Image.fromarray(grey).save(png)
        expected = np.repeat((grey >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    else:
        converted = saved.convert(mode) if mode != "P" else saved.quantize(16)
        converted.save(png)
        expected = np.asarray(Image.open(png).convert("RGB"))  # palette images through their palette
    loaded = [s.image for s in ds.load("mvtec3d", tmp_path, "cable_gland", "test")]
    assert all(image.dtype == np.uint8 and image.shape[2] == 3 for image in loaded)
    assert any(np.array_equal(image, expected) for image in loaded), mode
