"""Defect synthesis: geometry and labels of each defect, and datasets the loaders read back."""

import json

import numpy as np
import pytest

import ad3d.datasets as ds
from ad3d.errors import ConfigError
from ad3d.io import read_scan
from ad3d.synth import GEOMETRIC, make_dataset, plant


@pytest.fixture(scope="module")
def bottle(shared_data):
    return read_scan(shared_data / "meshes" / "ycb" / "mustard_bottle.obj", sample=5000, seed=1)


@pytest.mark.parametrize("kind", GEOMETRIC)
def test_defect_labels_a_compact_share_of_points(bottle, kind):
    for seed in range(4):
        scan = plant(bottle, kind, seed)
        assert scan.label == 1 and scan.defect_type == kind
        assert 0.005 <= scan.labels.mean() <= 0.15
        bad = scan.points[scan.labels == 1]
        assert np.ptp(bad, axis=0).max() < 0.8 * np.ptp(bottle.points, axis=0).max()  # local, not everywhere


@pytest.mark.parametrize("kind,sign", [("bulge", 1), ("dent", -1)])
def test_bulge_moves_out_and_dent_moves_in(bottle, kind, sign):
    scan = plant(bottle, kind, 3)
    moved = scan.points - bottle.points
    assert np.allclose(moved[scan.labels == 0], 0, atol=1e-3 * np.ptp(bottle.points))
    shift = moved[scan.labels == 1]
    along_normal = np.einsum("ij,ij->i", shift, bottle.normals[scan.labels == 1])
    assert sign * np.median(along_normal) > 0


@pytest.mark.parametrize("kind", ["concavity", "scratch"])
def test_sink_defects_press_the_surface_in(bottle, kind):
    for seed in range(3):
        scan = plant(bottle, kind, seed)
        moved = scan.points - bottle.points
        assert np.allclose(moved[scan.labels == 0], 0, atol=1e-3 * np.ptp(bottle.points))
        along_normal = np.einsum("ij,ij->i", moved[scan.labels == 1], bottle.normals[scan.labels == 1])
        assert np.median(along_normal) < 0


@pytest.mark.parametrize("kind", GEOMETRIC)
def test_every_moved_point_is_labelled_and_nothing_is_added(bottle, kind):
    """Labels are exact: a point the defect displaced is labelled; removals only remove."""
    from scipy.spatial import cKDTree

    for seed in range(4):
        scan = plant(bottle, kind, seed)
        assert len(scan) <= len(bottle)
        off = cKDTree(bottle.points).query(scan.points)[0]
        assert (scan.labels[off > 1e-6] == 1).all()
        assert scan.labels.sum() > 0


def test_broken_edge_sits_at_an_extreme_of_the_part(bottle):
    centred = bottle.points - bottle.points.mean(0)
    reach = np.linalg.norm(centred, axis=1)
    for seed in range(4):
        scan = plant(bottle, "broken", seed)
        rim = np.linalg.norm(scan.points[scan.labels == 1] - bottle.points.mean(0), axis=1)
        assert np.median(rim) > np.median(reach)  # towards the outside of the part, not mid-face


def test_combo_plants_two_different_kinds_and_keeps_both_labels(bottle, monkeypatch):
    """Stand-in planters label one residue class of point indices each: a combo must carry exactly two
    different classes, and a removal by the first must carry its labels through to the result."""
    from ad3d.synth import defects

    def labeller(i):
        return lambda scan, rng, fraction, height: (
            None,
            scan.points,
            (np.arange(len(scan)) % 8 == i).astype(np.uint8),
            None,
        )

    def remover(scan, rng, fraction, height):  # drops every point with an odd index, labels those divisible by 4
        keep = np.arange(len(scan)) % 2 == 0
        return keep, scan.points[keep], (np.arange(len(scan))[keep] % 4 == 0).astype(np.uint8), None

    for i, kind in enumerate(defects.SINGLE):
        monkeypatch.setitem(defects._PLANTERS, kind, remover if i == 0 else labeller(i))
    for seed in range(12):
        scan = plant(bottle, "combo", seed)
        if len(scan) < len(bottle):  # the remover ran: its labels sit on kept points
            assert len(scan) == len(bottle) // 2 and scan.labels.sum() >= len(bottle) // 8
            continue
        classes = {int(c) for c in np.unique(np.flatnonzero(scan.labels) % 8)}
        assert len(classes) == 2 and 0 not in classes


@pytest.mark.parametrize("kind", ["hole", "crack", "cut", "broken"])
def test_removal_defects_remove_points_and_label_the_rim(bottle, kind):
    scan = plant(bottle, kind, 5)
    assert len(scan) < len(bottle)
    kept = {tuple(p) for p in bottle.points.astype(np.float32).tolist()}
    assert all(tuple(p) in kept for p in scan.points.tolist())  # nothing moved, only removed
    from scipy.spatial import cKDTree

    removed = np.array(sorted(kept - {tuple(p) for p in scan.points.tolist()}))
    gap = cKDTree(removed).query(scan.points)[0]
    assert np.median(gap[scan.labels == 1]) < np.median(gap[scan.labels == 0])  # the rim borders the gap


def test_planting_is_deterministic_and_seed_dependent(bottle):
    a, b, c = plant(bottle, "hole", 7), plant(bottle, "hole", 7), plant(bottle, "hole", 8)
    assert np.array_equal(a.points, b.points) and np.array_equal(a.labels, b.labels)
    assert not (len(a) == len(c) and np.array_equal(a.points, c.points))  # another seed, another hole


def test_contamination_recolours_a_patch():
    rng = np.random.default_rng(0)
    from ad3d.types import Scan

    scan = Scan(points=rng.random((2000, 3)), colors=np.full((2000, 3), 128, np.uint8))
    dirty = plant(scan, "contamination", 1)
    changed = (dirty.colors != 128).any(axis=1)
    assert changed.any() and (changed <= (dirty.labels == 1)).all()
    with pytest.raises(ValueError, match="needs a scan with colours"):
        plant(Scan(points=scan.points), "contamination", 1)


@pytest.mark.parametrize("layout", ["anomaly-shapenet", "real3d"])
def test_synth_dataset_reads_back_through_the_loader(tmp_path, shared_data, layout):
    sources = [shared_data / "meshes" / "cad" / "round.stl", shared_data / "meshes" / "ycb" / "banana.obj"]
    make_dataset(sources, layout, tmp_path / "out", points=1500, train=2, good=2, per_defect=1)
    cats = ds.categories(layout, tmp_path / "out")
    assert len(cats) == 2
    for cat in cats:
        assert len(ds.load(layout, tmp_path / "out", cat, "train")) == 2
        test = list(ds.load(layout, tmp_path / "out", cat, "test"))
        assert sorted(s.defect_type for s in test) == sorted(["good", "good", *GEOMETRIC])
        for s in test:
            assert s.labels.any() == (s.label == 1)
            if s.label == 1:
                assert s.meta["gt_max_distance"] < 1e-5
        counts = [len(s) for s in test]
        assert len(set(counts)) > 1  # point counts vary from scan to scan (realistic acquisition)
        if layout == "real3d":  # single-view test scans, complete training prototypes
            train = ds.load(layout, tmp_path / "out", cat, "train")
            assert max(counts) < 0.9 * min(len(s) for s in train)


def test_synth_refuses_a_non_empty_output(tmp_path, shared_data):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        make_dataset([shared_data / "meshes" / "cad" / "round.stl"], "real3d", tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left behind


def test_synth_mvtec3d_layout_reads_back_with_visible_masks(tmp_path, shared_data):
    from PIL import Image

    make_dataset(
        [shared_data / "meshes" / "ycb" / "cracker_box.obj"],
        "mvtec3d",
        tmp_path / "mv",
        train=2,
        good=1,
        per_defect=1,
        image_size=64,
    )
    assert ds.describe("mvtec3d", tmp_path / "mv")[0]["validation"] == 1
    test = list(ds.load("mvtec3d", tmp_path / "mv", "cracker_box", "test"))
    assert sorted(s.defect_type for s in test) == sorted(["good", *GEOMETRIC, "contamination"])
    for s in test:
        assert s.grid_shape == (64, 64) and s.image.shape == (64, 64, 3)
        assert s.labels.sum() == s.mask.sum()  # every masked pixel is a measured point
        assert (s.labels.sum() > 0) == (s.label == 1)
    dirty = next(s for s in test if s.defect_type == "contamination")
    clean = next(s for s in test if s.defect_type == "good")
    assert np.abs(dirty.colors[dirty.labels == 1].astype(int).mean(0) - clean.colors.astype(int).mean(0)).max() > 5
    assert ds.verify("mvtec3d", tmp_path / "mv")[0]["problems"] == []
    assert np.asarray(Image.open(tmp_path / "mv/cracker_box/test/good/gt/000.png")).max() == 0


@pytest.mark.parametrize("kind,sign", [("bulge", 1), ("dent", -1), ("concavity", -1), ("scratch", -1)])
def test_subtle_defects_have_the_height_asked_as_a_share_of_the_part(bottle, kind, sign):
    size = float(np.linalg.norm(np.ptp(bottle.points, axis=0)))
    for seed in range(3):
        scan = plant(bottle, kind, seed, fraction=(0.005, 0.005), height=(0.004, 0.004))
        along = np.einsum("ij,ij->i", scan.points - bottle.points, bottle.normals)
        peak = along[np.argmax(np.abs(along))]
        assert sign * peak > 0 and abs(peak) == pytest.approx(0.004 * size, rel=0.25)  # the normals vary a little
        assert scan.meta["defect_height"] == pytest.approx(sign * 0.004 * size, rel=0.05)  # recorded, signed
        low, high = (0.001, 0.02) if kind == "scratch" else (0.002, 0.008)  # a scratch: a third of the share, long
        assert low < scan.labels.mean() < high


def test_synth_takes_defect_size_and_height_and_refuses_nonsense(tmp_path, shared_data):
    from ad3d.cli import main

    source = shared_data / "meshes" / "cad" / "round.stl"
    with pytest.raises(ConfigError, match="defect height"):
        make_dataset([source], "anomaly-shapenet", tmp_path / "a", defect_height=(0.5, 2.0))
    with pytest.raises(ConfigError, match="defect size"):
        make_dataset([source], "anomaly-shapenet", tmp_path / "b", defect_size=(0.2, 0.1))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    args = ["synth", str(source), "--format", "anomaly-shapenet", "--out", str(tmp_path / "c"), "--points", "3000"]
    args += ["--train", "1", "--good", "1", "--per-defect", "1", "--defects", "bulge"]
    assert main([*args, "--defect-size", "0.004,0.006", "--defect-height", "0.003,0.005", "--quiet"]) == 0
    (bulge,) = [s for s in ds.load("anomaly-shapenet", tmp_path / "c", "round0", "test") if s.label == 1]
    assert 0.002 < bulge.labels.mean() < 0.01
    manifest = json.loads((tmp_path / "c" / "defects.json").read_text())  # the planted truth, per test scan
    size = float(np.linalg.norm(np.ptp(bulge.points, axis=0)))
    assert manifest["pcd/round0/test/round0_positive0.pcd"] == {"kind": "good", "height": None}
    assert 0.003 * size * 0.9 < manifest["pcd/round0/test/round0_bulge0.pcd"]["height"] < 0.005 * size * 1.1
    with pytest.raises(SystemExit):
        main([*args[:-8], "--out", str(tmp_path / "d"), "--defect-size", "small"])
