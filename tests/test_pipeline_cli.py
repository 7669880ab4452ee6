"""ad3d fit / score / eval / view / demo from the command line, including bad input."""

import json
import shutil

import numpy as np
import pytest
from browser import screenshot
from command import run_ad3d as run

from ad3d.synth import make_dataset


@pytest.fixture(scope="module")
def model(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("cli")
    make_dataset(
        [shared_data / "meshes" / "cad" / "idler_riser.STL"],
        "anomaly-shapenet",
        root / "data",
        points=2500,
        train=4,
        good=2,
        per_defect=1,
        seed=2,
    )
    fitted = run(
        "fit",
        "--data",
        root / "data",
        "--format",
        "anomaly-shapenet",
        "--category",
        "idler_riser0",
        "--out",
        root / "m.ad3d",
        "--param",
        "num_groups=1024",
        "--quiet",
    )
    assert fitted.returncode == 0, fitted.stderr
    assert "fitted on 4 scans of 'idler_riser0'" in fitted.stdout  # every normal scan: calibrated out of fold
    assert "thresholds from 4 normal scans (out-of-fold over 4 folds" in fitted.stdout
    assert "warning: a 1% false-reject rate needs about 100 normal scans" in fitted.stdout
    return root


def test_eval_prints_and_writes_the_table(model):
    result = run(
        "eval",
        model / "m.ad3d",
        "--data",
        model / "data",
        "--format",
        "anomaly-shapenet",
        "--out",
        model / "eval",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "O-AUROC" in result.stdout and "idler_riser0" in result.stdout
    rows = json.loads((model / "eval" / "eval.json").read_text())["rows"]
    assert 0 <= rows[0]["object_auroc"] <= 1 and rows[0]["learned"] > 0
    assert "| idler_riser0 |" in (model / "eval" / "eval.md").read_text()


def test_score_writes_ply_and_report_per_scan(model, tmp_path):
    test_dir = model / "data" / "pcd" / "idler_riser0" / "test"
    result = run("score", model / "m.ad3d", test_dir, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(list(test_dir.iterdir()))
    report = json.loads((tmp_path / "out" / "idler_riser0_hole0.json").read_text())
    assert report["decision"] in ("accept", "review", "reject") and report["threshold"] is not None
    from ad3d.io import read_scan

    assert read_scan(tmp_path / "out" / "idler_riser0_hole0.ply").fields["score"].shape[0] == report["points"]


def test_score_and_the_library_write_byte_identical_folders(model, tmp_path):
    import ad3d
    from ad3d.pipeline import score_files

    test_dir = model / "data" / "pcd" / "idler_riser0" / "test"
    assert run("score", model / "m.ad3d", test_dir, "--out", tmp_path / "cli", "--quiet").returncode == 0
    summary = score_files(ad3d.load(model / "m.ad3d"), [test_dir], tmp_path / "lib")
    assert len(summary.scored) == len(list(test_dir.iterdir())) and not summary.failed
    cli, lib = (sorted(p.name for p in (tmp_path / d).iterdir()) for d in ("cli", "lib"))
    assert cli == lib and len(cli) == 2 * len(summary.scored)  # a PLY and a JSON per scan
    for name in cli:
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "lib" / name).read_bytes(), name
    timed = score_files(ad3d.load(model / "m.ad3d"), [test_dir], tmp_path / "timed", timings=True)
    report = json.loads((tmp_path / "timed" / f"{timed.scored[0][1]}.json").read_text())
    assert report["timings"]["score_s"] > 0 and "timings" not in json.loads((tmp_path / "lib" / cli[0]).read_text())


def test_view_gt_on_score_output(model, tmp_path):
    # a scan that carries its labels (Anomaly-ShapeNet's GT files: x y z label) keeps them in its result
    gt = model / "data" / "pcd" / "idler_riser0" / "GT" / "idler_riser0_hole0.txt"
    assert run("score", model / "m.ad3d", gt, "--out", tmp_path / "out", "--quiet").returncode == 0
    result = tmp_path / "out" / "idler_riser0_hole0.ply"
    shot = run("view", result, "--gt", "--screenshot", tmp_path / "gt.png", "--html", tmp_path / "gt.html")
    assert shot.returncode == 0 and (tmp_path / "gt.png").stat().st_size > 10_000, shot.stderr
    page = (tmp_path / "gt.html").read_text()  # the exported scene has no 2D annotations: ad3d adds a legend
    assert 'id="ad3d-legend"' in page and "ground truth: the true defect" in page and "normal: score under" in page
    # a scan without labels: one line saying where labels come from, no traceback
    plain = model / "data" / "pcd" / "idler_riser0" / "test" / "idler_riser0_hole0.pcd"
    assert run("score", model / "m.ad3d", plain, "--out", tmp_path / "plain", "--quiet").returncode == 0
    refused = run("view", tmp_path / "plain" / "idler_riser0_hole0.ply", "--gt", "--screenshot", tmp_path / "x.png")
    assert refused.returncode == 2 and "no per-point ground truth" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_network_detector_from_the_cli_with_a_preset_and_three_way_report(model, tmp_path):
    fitted = run(
        "fit",
        "--detector",
        "mc4ad",
        "--preset",
        "cpu",
        "--data",
        model / "data",
        "--format",
        "anomaly-shapenet",
        "--category",
        "idler_riser0",
        "--out",
        tmp_path / "mc.ad3d",
        "--quiet",
        "--param",
        "encoder=8,16,16",
        "--param",
        "decoder=16,8",
        "--param",
        "iterations=4",
        "--param",
        "batch_size=2",
        "--param",
        "num_points=1024",
        "--param",
        "device=cpu",
    )
    assert fitted.returncode == 0, fitted.stderr
    test_dir = model / "data" / "pcd" / "idler_riser0" / "test"
    scored = run("score", tmp_path / "mc.ad3d", test_dir, "--out", tmp_path / "out")
    assert scored.returncode == 0, scored.stderr
    assert all("defective /" in line and "uncertain" in line for line in scored.stdout.splitlines())
    report = json.loads((tmp_path / "out" / "idler_riser0_hole0.json").read_text())
    assert set(report["thresholds"]) == {"reject", "review", "point", "point_review"}
    assert report["thresholds"]["point_review"] < report["thresholds"]["point"]
    assert sum(report["points_by_decision"].values()) == report["points"]
    bad = run(
        "fit",
        "--detector",
        "mc4ad",
        "--preset",
        "huge",
        "--data",
        model / "data",
        "--format",
        "anomaly-shapenet",
        "--category",
        "idler_riser0",
        "--out",
        tmp_path / "x.ad3d",
    )
    assert bad.returncode == 2 and "no preset 'huge'" in bad.stderr and "Traceback" not in bad.stderr


def test_score_handles_nan_mixed_formats_and_bad_files(model, tmp_path, shared_data):
    from ad3d.io import read_scan, write_scan

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    scan = read_scan(model / "data" / "pcd" / "idler_riser0" / "test" / "idler_riser0_positive0.pcd")
    write_scan(mixed / "a.ply", scan)
    np.savetxt(mixed / "b.xyz", scan.points)
    pts = scan.points.copy()
    pts[:10] = np.nan
    from native import write_pcd

    write_pcd(mixed / "c_nan.pcd", pts)
    shutil.copy(shared_data / "meshes" / "cad" / "idler_riser.STL", mixed / "d.stl")
    ok = run("score", model / "m.ad3d", mixed, "--out", tmp_path / "ok")
    assert ok.returncode == 0, ok.stderr
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == sorted(
        f"{s}.{e}" for s in ("a", "b", "c_nan", "d") for e in ("json", "ply")
    )
    nan_report = json.loads((tmp_path / "ok" / "c_nan.json").read_text())
    assert nan_report["points"] == len(scan) - 10

    (tmp_path / "empty.pcd").write_bytes(b"")
    bad = run("score", model / "m.ad3d", tmp_path / "empty.pcd", "--out", tmp_path / "bad")
    assert bad.returncode == 2 and "empty.pcd" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_score_never_overwrites_an_input_and_keeps_same_named_results(model, tmp_path):
    import shutil

    src = model / "data" / "pcd" / "idler_riser0" / "test" / "idler_riser0_bulge0.pcd"
    from ad3d.io import read_scan, write_scan

    scans = tmp_path / "scans"
    scans.mkdir()
    write_scan(scans / "part.ply", read_scan(src))  # its result would be scans/part.ply
    before = {p.name: p.read_bytes() for p in scans.iterdir()}
    refused = run("score", model / "m.ad3d", scans, "--out", scans)
    assert refused.returncode == 2 and "would overwrite the input" in refused.stderr and "part.ply" in refused.stderr
    assert {p.name: p.read_bytes() for p in scans.iterdir()} == before  # nothing touched, nothing added

    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir()
    b.mkdir()
    shutil.copy(src, a / "part.pcd")
    np.savetxt(a / "part.txt", read_scan(src).points)
    shutil.copy(src, b / "part.pcd")
    done = run("score", model / "m.ad3d", a, b, "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    reports = sorted(p.name for p in (tmp_path / "out").glob("*.json"))
    assert len(reports) == 3, reports  # three scans, three results
    assert "part_txt.json" in reports and "A_part_pcd.json" in reports and "B_part_pcd.json" in reports


def test_outputs_of_the_wrong_kind_are_refused_before_any_work(model, tmp_path):
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "adir").mkdir()
    data = model / "data"
    fit = run(
        "fit", "--data", data, "--format", "anomaly-shapenet", "--category", "idler_riser0", "--out", tmp_path / "adir"
    )
    assert fit.returncode == 2 and "is a folder" in fit.stderr and "Nothing was fitted" in fit.stderr
    for cmd in (
        ["score", model / "m.ad3d", data],
        ["eval", "--detector", "patchcore", "--data", data, "--format", "anomaly-shapenet"],
    ):
        out = run(*cmd, "--out", tmp_path / "afile")
        assert out.returncode == 2 and "is a file, not a folder" in out.stderr, out.stderr
    assert (tmp_path / "afile").read_text() == "mine" and not any((tmp_path / "adir").iterdir())


def test_one_bad_file_of_any_kind_never_stops_the_batch(model, tmp_path):
    import shutil

    src = model / "data" / "pcd" / "idler_riser0" / "test" / "idler_riser0_bulge0.pcd"
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(src, scans / "a_good.pcd")
    shutil.copy(src, scans / "z_good.pcd")
    (scans / "m_loop.pcd").symlink_to(scans / "m_loop2.pcd")
    (scans / "m_loop2.pcd").symlink_to(scans / "m_loop.pcd")
    header = "VERSION .7\nFIELDS x y z\nSIZE 8 8 8\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 2\nHEIGHT 1\nPOINTS 2\nDATA binary\n"
    (scans / "m_huge.pcd").write_bytes(header.encode() + np.array([[1e39, 0, 0], [0, 1, 0]], "<f8").tobytes())
    done = run(
        "score",
        model / "m.ad3d",
        scans / "a_good.pcd",
        scans / "m_loop.pcd",
        scans / "m_huge.pcd",
        scans / "z_good.pcd",
        "--out",
        tmp_path / "out",
    )
    assert done.returncode == 2
    assert sorted(p.name for p in (tmp_path / "out").glob("*.json")) == ["a_good.json", "z_good.json"]
    lines = [line for line in done.stderr.splitlines() if line.startswith("ad3d:")]
    assert len(lines) == 2 and "m_loop.pcd" in lines[0] and "loop" in lines[0]
    assert "m_huge.pcd" in lines[1] and "float32 range" in lines[1]
    assert "2 of 4 scans scored, 2 failed" in done.stderr and "Traceback" not in done.stderr


def test_score_refuses_a_model_of_another_part(model, tmp_path, shared_data):
    other = run("score", model / "m.ad3d", shared_data / "pcd" / "bun0.pcd", "--out", tmp_path / "o")
    assert other.returncode == 2 and "size of the parts this model was trained on" in other.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    missing = run("score", tmp_path / "nope.ad3d", shared_data / "pcd" / "bun0.pcd", "--out", tmp_path / "o")
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_view_screenshot_highlights_the_defect_and_html_renders(model, tmp_path):
    from PIL import Image

    run(
        "score",
        model / "m.ad3d",
        model / "data" / "pcd" / "idler_riser0" / "test" / "idler_riser0_bulge0.pcd",
        "--out",
        tmp_path / "out",
    )
    ply = tmp_path / "out" / "idler_riser0_bulge0.ply"
    shot = run("view", ply, "--screenshot", tmp_path / "v.png", "--html", tmp_path / "v.html")
    assert shot.returncode == 0, shot.stderr
    img = np.asarray(Image.open(tmp_path / "v.png").convert("RGB")).astype(int)
    warm = (img[..., 0] > 150) & (img[..., 0] - img[..., 2] > 60)  # inferno's orange/yellow: high scores
    assert warm.sum() > 20
    shot = screenshot(tmp_path / "v.html", tmp_path, webgl=True)
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 50  # something was drawn, not a blank page


@pytest.mark.slow
def test_demo_prints_the_table_and_writes_images(tmp_path):
    from ad3d.demo import run_demo

    rows = run_demo(tmp_path / "demo", quiet=True, points=2500)
    assert rows[-1]["category"] == "mean" and len(rows) == 4
    assert len(list((tmp_path / "demo" / "images").glob("*.png"))) == 3
    assert (tmp_path / "demo" / "eval.md").exists()
