"""ad3d bench: the sweep spec, the results table, resume after a kill, pool / Ray / in-process agreement,
failed jobs as rows, and the report."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from browser import screenshot
from command import run_ad3d as cli

from ad3d.bench import Job, ResultsStore, load_spec, run_job, run_sweep
from ad3d.bench.report import summarise
from ad3d.bench.spec import DataSource, Sweep, Variant
from ad3d.errors import ConfigError
from ad3d.synth import make_dataset


def needs_ray() -> None:
    """Skip without Ray; Ray itself runs only in the CLI's own process, never in the test process."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray not installed (pip install 'ad3d[bench]')")


FAST = {"num_points": 1024, "num_groups": 256}  # patchcore small enough for a test sweep


@pytest.fixture(scope="module")
def data(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("bench") / "data"
    cad = shared_data / "meshes" / "cad"
    make_dataset(
        [cad / "idler_riser.STL", cad / "box.STL"],
        "anomaly-shapenet",
        root,
        points=2000,
        train=4,
        good=3,
        per_defect=1,
        defects=("bulge", "hole", "crack"),
        seed=3,
    )
    return root


def sweep_of(data, seeds=(0, 1), **extra) -> Sweep:
    return Sweep(
        detectors=[Variant("patchcore", params=dict(FAST, **extra), label="pc")],
        datasets=[DataSource(str(data), "anomaly-shapenet")],
        seeds=list(seeds),
    )


@pytest.fixture(scope="module")
def swept(data, tmp_path_factory):
    """One in-process sweep with a failing variant beside a working one, its report written."""
    out = tmp_path_factory.mktemp("swept") / "out"
    sweep = sweep_of(data)
    sweep.detectors.append(Variant("patchcore", params=dict(FAST, coreset_ratio=2.0), label="broken"))
    counts = run_sweep(sweep, out, workers=1, progress=False)
    # the report in its own process: VTK's off-screen rendering (Mesa's LLVM) loaded into the test process
    # made a later import of torch's compiler stack (triton, its own LLVM) segfault
    done = cli("bench", "report", "--out", out)
    assert done.returncode == 0, done.stderr
    return out, counts


def metrics(rows):
    keys = ("object_auroc", "point_auroc", "aupro", "ap", "learned", "threshold")
    return {r["key"]: tuple(r.get(k) for k in keys) for r in rows}


def test_spec_from_toml_expands_every_job_in_order(tmp_path, data):
    spec = tmp_path / "s.toml"
    spec.write_text(
        f'seeds = [0, 1, 2]\n[[detectors]]\nname = "patchcore"\nparams = {{ num_points = 1024 }}\n'
        f'[[detectors]]\nname = "musc"\nlabel = "zero"\n[[datasets]]\nroot = "{data}"\nformat = "anomaly-shapenet"\n'
        f'categories = ["box0"]\n'
    )
    jobs = load_spec(spec).jobs()
    assert [(j.name, j.category, j.seed) for j in jobs] == [
        (d, "box0", s) for s in (0, 1, 2) for d in ("patchcore", "zero")
    ]
    assert jobs[0].params == {"num_points": 1024} and len({j.key for j in jobs}) == 6


def test_spec_errors_name_the_problem(tmp_path, data):
    bad = tmp_path / "bad.toml"
    bad.write_text("seeds = [0\n")
    with pytest.raises(ConfigError, match="cannot read sweep file"):
        load_spec(bad)
    bad.write_text("colour = 1\n")
    with pytest.raises(ConfigError, match="colour"):
        load_spec(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(tmp_path / "none.toml")
    with pytest.raises(ConfigError, match="has no parameter wings"):
        Sweep([Variant("patchcore", params={"wings": 2})], [DataSource(str(data), "anomaly-shapenet")]).jobs()
    with pytest.raises(ConfigError, match="no category nope"):
        Sweep([Variant("patchcore")], [DataSource(str(data), "anomaly-shapenet", ["nope"])]).jobs()
    with pytest.raises(ConfigError, match="give each a label"):
        Sweep([Variant("patchcore"), Variant("patchcore")], [DataSource(str(data), "anomaly-shapenet")]).jobs()


def test_job_key_is_the_configuration_not_the_label():
    job = Job("patchcore", "d", "anomaly-shapenet", "box0", seed=1, params={"num_points": 10}, label="a")
    assert job.key == Job("patchcore", "d", "anomaly-shapenet", "box0", seed=1, params={"num_points": 10}).key
    assert job.key != Job("patchcore", "d", "anomaly-shapenet", "box0", seed=2, params={"num_points": 10}).key
    assert job.key != Job("patchcore", "d", "anomaly-shapenet", "box0", seed=1, params={"num_points": 11}).key


def test_a_failed_job_is_a_row_with_its_error_and_the_sweep_goes_on(swept):
    out, counts = swept
    rows = ResultsStore(out).rows()
    assert counts == {"jobs": 8, "skipped": 0, "ran": 8, "failed": 4}
    broken = [r for r in rows if r["label"] == "broken"]
    assert len(broken) == 4 and all(r["status"] == "error" for r in broken)
    assert "coreset_ratio=2.0 is out of range" in broken[0]["error"]
    good = [r for r in rows if r["label"] == "pc"]
    assert all(r["status"] == "ok" and 0 <= r["object_auroc"] <= 1 for r in good)
    assert {r["category"] for r in good} == {"box0", "idler_riser0"} and {r["seed"] for r in good} == {0, 1}
    for key in ("fit_s", "score_ms", "peak_mb", "learned", "versions", "threshold"):
        assert good[0][key] is not None


def test_stored_curves_integrate_to_the_row_metrics(swept):
    out, _ = swept
    store = ResultsStore(out)
    for row in (r for r in store.rows() if r["status"] == "ok"):
        d = store.load_details(row["key"])
        assert np.trapezoid(d["roc_tpr"], d["fpr"]) == pytest.approx(row["object_auroc"], abs=0.01)
        upto = d["fpr"] <= 0.3
        assert np.trapezoid(d["pro"][upto], d["fpr"][upto]) / 0.3 == pytest.approx(row["aupro"], abs=0.02)
        defective = d["object_scores"][d["object_labels"] == 1]
        assert float(d["best_object_score"]) == defective.max() and float(d["worst_object_score"]) == defective.min()
        assert d["best_points"].shape[1] == 3 and len(d["best_scores"]) == len(d["best_points"])


def test_report_lists_every_job_and_summarises_over_seeds(swept):
    out, _ = swept
    rows = ResultsStore(out).rows()
    page, md = out / "report.html", out / "report.md"
    text, doc = md.read_text(), page.read_text()
    for r in rows:
        assert r["key"] in text and r["key"] in doc
    assert "coreset_ratio=2.0 is out of range" in doc
    assert doc.count('<tr class="failed">') == 4  # the four failed jobs' rows are marked
    assert doc.count("<img") >= 5 + 4  # five figures, two thumbnails per (category, detector)
    pc = next(s for s in summarise(rows) if s["label"] == "pc")
    per_seed = [np.mean([r["object_auroc"] for r in rows if r["label"] == "pc" and r["seed"] == s]) for s in (0, 1)]
    assert pc["object_auroc"][0] == pytest.approx(np.mean(per_seed))
    assert pc["object_auroc"][1] == pytest.approx(np.std(per_seed, ddof=1))
    assert f"{pc['object_auroc'][0]:.3f}" in text and "0/4" in text


def test_report_page_renders_in_headless_chromium(swept, tmp_path):
    out, _ = swept
    img = screenshot(out / "report.html", tmp_path, (1200, 2400))
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200  # tables, plots and thumbnails drawn, not a blank page


def test_pool_and_in_process_give_the_same_metrics(data, tmp_path):
    run_sweep(sweep_of(data), tmp_path / "a", workers=1, progress=False)
    run_sweep(sweep_of(data), tmp_path / "b", workers=2, progress=False)
    a, b = ResultsStore(tmp_path / "a").rows(), ResultsStore(tmp_path / "b").rows()
    assert len(a) == 4 and metrics(a) == metrics(b)


def test_ray_and_pool_give_the_same_metrics(data, tmp_path):
    needs_ray()
    run_sweep(sweep_of(data), tmp_path / "pool", workers=2, progress=False)
    spec = tmp_path / "spec.toml"  # the same sweep as sweep_of(data), as a file
    spec.write_text(
        'seeds = [0, 1]\n[[detectors]]\nname = "patchcore"\nlabel = "pc"\n'
        f"params = {{ num_points = {FAST['num_points']}, num_groups = {FAST['num_groups']} }}\n"
        f'[[datasets]]\nroot = "{data}"\nformat = "anomaly-shapenet"\n'
    )
    # Ray in its own process: its threads and signal handlers stay out of pytest's
    ray_run = cli(
        "bench",
        "run",
        "--spec",
        spec,
        "--out",
        tmp_path / "ray",
        "--ray",
        "local",
        "--workers",
        "2",
        "--no-report",
        "--quiet",
        timeout=600,
    )
    assert ray_run.returncode == 0, ray_run.stderr
    pool, ray = ResultsStore(tmp_path / "pool").rows(), ResultsStore(tmp_path / "ray").rows()
    assert len(ray) == 4 and all(r["status"] == "ok" for r in ray)
    assert metrics(pool) == metrics(ray)


@pytest.mark.parametrize("how", ["in-process, killed", "ray, ctrl-c"])
def test_stopped_sweep_resumes_without_recomputing_a_finished_job(data, tmp_path, how):
    if how.startswith("ray"):
        needs_ray()
    out = tmp_path / "out"
    where = ["--ray", "local", "--workers", "2"] if how.startswith("ray") else ["--workers", "1"]
    args = [
        "bench",
        "run",
        "--detector",
        "patchcore",
        "--data",
        data,
        "--format",
        "anomaly-shapenet",
        "--seeds",
        "0,1,2,3",
        "--out",
        out,
        "--no-report",
        "--quiet",
        *where,
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ad3d.cli", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    table = out / "results.jsonl"
    deadline = time.monotonic() + 300
    while not (table.exists() and table.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL if how.endswith("killed") else signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    before = table.read_text().splitlines()
    if proc.returncode == 0 and len(before) == 8:  # on a loaded machine the sweep can end before the signal
        pytest.skip("the sweep finished before the stop reached it: nothing to resume")
    if how.endswith("ctrl-c"):
        assert proc.returncode == 130 and "the same command runs the rest" in err
    assert 1 <= len(before) < 8, "the stop came too late to test a resume"
    done = cli(*args, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"{len(before)} finished before, {8 - len(before)} run now" in done.stdout
    after = table.read_text().splitlines()
    assert after[: len(before)] == before  # the finished rows untouched
    assert len(after) == 8 and len({json.loads(line)["key"] for line in after}) == 8  # no job twice
    again = cli(*args, timeout=600)
    assert "8 finished before, 0 run now" in again.stdout and table.read_text().splitlines() == after


def test_store_skips_a_line_cut_by_a_kill_and_refuses_a_damaged_one(tmp_path):
    store = ResultsStore(tmp_path)
    store.append({"key": "a", "status": "ok"}, {})
    with open(store.table, "a") as f:
        f.write('{"key": "b", "sta')  # killed mid-write
    with pytest.warns(UserWarning, match="incomplete"):
        assert [r["key"] for r in store.rows()] == ["a"]
    store.append({"key": "c", "status": "error", "error": "x"}, {})
    assert [r["key"] for r in store.rows()] == ["a", "c"]
    assert store.finished() == {"a", "c"} and store.finished(retry_failed=True) == {"a"}
    store.table.write_text('{"key": "a"}\nnot json\n{"key": "c"}\n')
    with pytest.raises(ConfigError, match="line 2"):
        store.rows()


def test_run_job_matches_eval_rows(data):
    from ad3d.pipeline import evaluate_dataset

    row, _ = run_job(Job("patchcore", str(data), "anomaly-shapenet", "box0", params=FAST))
    (evaluated,) = evaluate_dataset("patchcore", FAST, data, "anomaly-shapenet", ["box0"])
    assert row["status"] == "ok" and metrics([row]) == metrics([{**evaluated, "key": row["key"]}])


def test_bench_cli_errors_are_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    done = cli(
        "bench",
        "run",
        "--detector",
        "patchcore",
        "--data",
        tmp_path,
        "--format",
        "anomaly-shapenet",
        "--out",
        tmp_path / "file",
    )
    assert done.returncode == 2 and "is a file, not a folder" in done.stderr and "Traceback" not in done.stderr
    report = cli("bench", "report", "--out", tmp_path / "none")
    assert report.returncode == 2 and "no results" in report.stderr and "Traceback" not in report.stderr


def test_ray_gives_a_gpu_to_the_jobs_that_train_on_one_when_the_cluster_has_some():
    from ad3d.bench.execute import ray_resources

    def job(name, **params):
        return Job(name, "d", "anomaly-shapenet", "box0", params=params, cpus=2)

    assert ray_resources(job("mc4ad"), 4) == {"num_cpus": 2, "num_gpus": 1}
    assert ray_resources(job("r3dad"), 1) == {"num_cpus": 2, "num_gpus": 1}
    assert ray_resources(job("mc4ad"), 0) == {"num_cpus": 2, "num_gpus": 0}  # a CPU-only cluster
    assert ray_resources(job("mc4ad", device="cpu"), 4)["num_gpus"] == 0  # asked to stay on the CPU
    assert ray_resources(job("patchcore"), 4)["num_gpus"] == 0  # its default device is the CPU
    assert ray_resources(job("musc"), 4)["num_gpus"] == 0  # no device parameter


def test_a_sweep_over_two_datasets_is_summarised_per_dataset():
    from ad3d.bench.report import per_dataset_labels

    rows = [
        {"label": "pc", "data": "runs/R2", "seed": 0, "status": "ok", "object_auroc": 0.9},
        {"label": "pc", "data": "runs/DENSE", "seed": 0, "status": "ok", "object_auroc": 0.5},
    ]
    split = per_dataset_labels(rows)
    assert [r["label"] for r in split] == ["pc @ R2", "pc @ DENSE"]
    assert [s["object_auroc"][0] for s in summarise(split)] == [0.9, 0.5]  # never their mean
    assert per_dataset_labels(rows[:1]) == rows[:1]  # one dataset: labels as they were
