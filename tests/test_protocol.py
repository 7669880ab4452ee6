"""The detector protocol beyond one-class point scoring: declared modalities, image-level anomaly maps,
zero-shot (batch) detectors through the API, the pipeline and the CLI, and the organised-scan helpers."""

import numpy as np
import pytest

import ad3d
from ad3d import fusion
from ad3d.detectors import Detector, register
from ad3d.errors import ConfigError
from ad3d.types import Scan


def organised(h=6, w=8, seed=0, image=True):
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:h, 0:w]
    keep = np.flatnonzero((v * w + u).ravel() % 5 != 0)  # every fifth pixel missing
    points = np.stack([u.ravel(), v.ravel(), np.zeros(h * w)], 1)[keep].astype(np.float32)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8) if image else None
    return Scan(points=points, image=img, grid_index=keep, grid_shape=(h, w))


@register
class Brightness(Detector):
    """Colour detector stand-in: the anomaly map is the image's brightness, an (H, W) map."""

    name = "test-brightness"
    modalities = ("xyz", "rgb")

    def _fit(self, scans, progress):
        pass

    def _score(self, scan):
        brightness = scan.image.mean(2).astype(np.float32)
        return brightness, float(brightness.max())


@register
class Mutual(Detector):
    """Zero-shot stand-in: a point scores its distance to the nearest point of any other scan."""

    name = "test-mutual"
    learning_type = "zero-shot"
    _state_arrays = ("pool_",)

    def __init__(self):
        self.pool_ = None

    def _fit(self, scans, progress):
        self.pool_ = np.concatenate([s.points for s in scans]) if scans else np.zeros((0, 3), np.float32)

    def _score_batch(self, scans):
        from scipy.spatial import cKDTree

        out = []
        for i, scan in enumerate(scans):
            others = [s.points for j, s in enumerate(scans) if j != i] + [self.pool_]
            others = np.concatenate(others)
            if not len(others):
                raise ConfigError("test-mutual scores a scan against others: give it a pool or several scans")
            d = cKDTree(others).query(scan.points)[0].astype(np.float32)
            out.append((d, float(d.max())))
        return out


def test_a_detector_that_reads_colour_refuses_scans_without_it():
    det = ad3d.create("test-brightness")
    with pytest.raises(ConfigError, match=r"test-brightness reads colour and geometry .*'part\.ply' has no image"):
        det.fit([Scan(points=np.random.rand(10, 3), path="part.ply")])
    det.fit([organised()])
    with pytest.raises(ConfigError, match="has no image and no point colours"):
        det.score(organised(image=False))


def test_an_image_map_gives_each_point_its_pixels_score():
    scan = organised()
    result = ad3d.create("test-brightness").fit([organised(seed=1)]).score(scan)
    brightness = scan.image.mean(2)
    assert np.allclose(result.image_scores, brightness)
    assert np.allclose(result.point_scores, brightness.ravel()[scan.grid_index])
    assert result.object_score == pytest.approx(brightness.max())


def bumped(scan: Scan, rows: slice) -> Scan:
    points = scan.points.copy()
    points[rows, 2] += 3.0
    return scan.replace(points=points)


def test_zero_shot_scores_a_set_of_scans_together_and_one_scan_against_its_pool():
    normal = [organised(seed=s, image=False) for s in range(3)]
    odd = bumped(organised(seed=9, image=False), slice(0, 5))
    det = ad3d.create("test-mutual").fit([])  # no pool: a set of scans scores itself
    results = det.score_many(normal + [odd])
    assert np.argmax([r.object_score for r in results]) == 3
    assert results[3].point_scores[:5].min() > results[3].point_scores[5:].max()
    with pytest.raises(ConfigError, match="give it a pool"):
        det.score(odd)
    pooled = ad3d.create("test-mutual").fit(normal)  # with a reference pool, one scan alone
    assert pooled.score(odd).object_score == pytest.approx(3.0)
    assert pooled.score(normal[0]).object_score == pytest.approx(0.0)


def test_eval_runs_a_zero_shot_detector_on_the_test_split_only(tmp_path, shared_data, monkeypatch):
    from ad3d import datasets, pipeline
    from ad3d.synth import make_dataset

    make_dataset(
        [shared_data / "meshes" / "cad" / "round.stl"],
        "anomaly-shapenet",
        tmp_path / "d",
        points=600,
        train=2,
        good=2,
        per_defect=1,
        defects=("bulge",),
        seed=1,
    )
    splits, real_load = [], datasets.load
    monkeypatch.setattr(datasets, "load", lambda *a, **k: splits.append(a[3]) or real_load(*a, **k))
    rows = pipeline.evaluate_dataset("test-mutual", {}, tmp_path / "d", "anomaly-shapenet")
    assert splits == ["test"] and rows[0]["test_scans"] == 3 and rows[0]["fit_s"] == 0.0
    assert rows[0]["object_auroc"] is not None


def test_cli_scores_a_folder_with_a_zero_shot_model_together(tmp_path, capsys):
    from ad3d import cli
    from ad3d.io import write_scan

    folder = tmp_path / "scans"
    folder.mkdir()
    for s in range(3):
        write_scan(folder / f"n{s}.ply", Scan(points=organised(seed=s).points))
    write_scan(folder / "odd.ply", Scan(points=bumped(organised(seed=9), slice(0, 5)).points))
    (folder / "broken.pcd").write_bytes(b"")
    ad3d.create("test-mutual").fit([]).save(tmp_path / "m.ad3d")
    code = cli.main(["score", str(tmp_path / "m.ad3d"), str(folder), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 2 and "broken.pcd" in captured.err and "4 of 5 scans scored, 1 failed" in captured.err
    import json

    reports = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")}
    assert set(reports) == {"n0", "n1", "n2", "odd"}
    assert max(reports, key=lambda k: reports[k]["object_score"]) == "odd"


def test_resize_patches_and_maps_on_an_organised_scan():
    scan = organised(h=4, w=4)
    small = fusion.resize(scan, 2)  # nearest as torch picks it (M3DM, MuSc-V2): rows/cols 0 and 2 of the 4
    assert small.xyz.shape == (2, 2, 3) and small.rgb.shape == (2, 2, 3)
    assert np.array_equal(small.rgb[1, 0], scan.image[2, 0])
    assert small.valid.tolist() == [[False, True], [True, False]]  # pixels 0 and 10 are missing
    import torch

    image = torch.from_numpy(scan.image.astype(np.float32)).permute(2, 0, 1)[None]
    for size in (3, 7):  # down and up, against torch's own nearest resize
        expected = torch.nn.functional.interpolate(image, size=(size, size), mode="nearest")[0].permute(1, 2, 0)
        assert np.array_equal(fusion.resize(scan, size).rgb, expected.numpy().astype(np.uint8))
    patch = fusion.patch_of_points(scan, 2)
    rows, cols = np.divmod(scan.grid_index, 4)
    assert np.array_equal(patch, (rows // 2) * 2 + cols // 2)
    means, counts = fusion.points_to_patches(scan, scan.points[:, 0], 2)
    assert counts.tolist() == [[2, 4], [4, 2]]  # pixels 0, 5, 10, 15 are missing
    assert means[0, 0] == pytest.approx(0.5)  # the top-left patch keeps pixels 1 (x = 1) and 4 (x = 0)
    full, at_points = fusion.map_to_points(scan, np.array([[0.0, 1.0], [2.0, 3.0]]))
    assert full.shape == (4, 4) and np.allclose(at_points, full.ravel()[scan.grid_index])
    assert full[0, 0] == pytest.approx(0.0) and full[3, 3] == pytest.approx(3.0)
    with pytest.raises(ConfigError, match="not organised"):
        fusion.resize(Scan(points=np.zeros((3, 3))), 2)


def test_preprocess_plane_from_the_cli_names_what_does_not_fit(tmp_path, capsys):
    from ad3d import cli
    from ad3d.io import write_scan

    write_scan(tmp_path / "flat.ply", Scan(points=np.random.default_rng(0).random((50, 3))))
    ad3d.create("test-mutual").fit([Scan(points=np.random.default_rng(1).random((50, 3)))]).save(tmp_path / "m.ad3d")
    code = cli.main(
        [
            "score",
            str(tmp_path / "m.ad3d"),
            str(tmp_path / "flat.ply"),
            "--out",
            str(tmp_path / "o"),
            "--preprocess",
            "plane",
        ]
    )
    assert code == 2 and "flat.ply': background-plane removal needs an organised scan" in capsys.readouterr().err
    code = cli.main(
        [
            "eval",
            "--detector",
            "patchcore",
            "--data",
            str(tmp_path),
            "--format",
            "anomaly-shapenet",
            "--preprocess",
            "plane",
        ]
    )
    assert code == 2 and "anomaly-shapenet loader takes no option preprocess" in capsys.readouterr().err


def test_blur_map_spreads_a_peak_and_keeps_its_mass():
    from ad3d.detectors.scoring import blur_map

    peak = np.zeros((41, 41), np.float32)
    peak[20, 20] = 1.0
    blurred = blur_map(peak, sigma=4.0)
    assert blurred.sum() == pytest.approx(1.0, rel=1e-4) and blurred.argmax() == 20 * 41 + 20
    assert blurred[20, 24] == pytest.approx(blurred[20, 20] * np.exp(-0.5), rel=0.02)  # one sigma away
