"""ad3d bench under careless and hostile use (issue 27's probes, each with what it did before): sweep files
checked before any job runs, one driver per results folder, a key that sees the data, a results table read
without losing or inventing rows, and a pool that stops at once and leaves no worker behind."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from command import run_ad3d as cli

from ad3d.bench import ResultsStore, load_spec, run_sweep
from ad3d.bench.spec import DataSource, Sweep, Variant
from ad3d.errors import ConfigError
from ad3d.synth import make_dataset

FAST = {"num_points": 1024, "num_groups": 256}
PATCHCORE = '[[detectors]]\nname = "patchcore"\n'
DATASET = '[[datasets]]\nroot = "DATA"\nformat = "anomaly-shapenet"\n'


def box_dataset(folder: Path, shared_data: Path, **options) -> Path:
    """A one-part Anomaly-ShapeNet dataset of the shipped box (options: make_dataset's)."""
    make_dataset([shared_data / "meshes" / "cad" / "box.STL"], "anomaly-shapenet", folder / "data", **options)
    return folder / "data"


@pytest.fixture(scope="module")
def data(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("robust")
    return box_dataset(
        folder, shared_data, points=1500, train=3, good=2, per_defect=1, defects=("bulge", "hole"), seed=4
    )


@pytest.fixture(scope="module")
def dense(tmp_path_factory, shared_data):
    """Scans large enough that a job's result (its report thumbnails) overflows a pipe's buffer: a worker whose
    driver is gone then blocks forever on sending it, unless it ends itself."""
    folder = tmp_path_factory.mktemp("dense")
    return box_dataset(folder, shared_data, points=12000, train=2, good=1, per_defect=1, defects=("bulge",), seed=5)


def spec_file(tmp_path, data, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text.replace("DATA", str(data)) if "[[datasets]]" in text else text + _dataset(data) + _detector())
    return path


def _dataset(data) -> str:
    return f'\n[[datasets]]\nroot = "{data}"\nformat = "anomaly-shapenet"\n'


def _detector() -> str:
    return '\n[[detectors]]\nname = "patchcore"\nparams = { num_points = 1024, num_groups = 256 }\n'


# Before: exit 3 (a traceback's last line), or error rows that a rerun then skipped; now one line, exit 2,
# and no job runs.
@pytest.mark.parametrize(
    "text, said",
    [
        ("seeds = 5\n", "seeds must be a list of whole numbers"),
        ("seeds = [-1]\n", "seeds must be a list of whole numbers"),
        ("seeds = [0.5]\n", "seeds must be a list of whole numbers"),
        ("seeds = [0, 0]\n", "name a seed twice"),
        ("cpus = 0\n", "cpus must be a whole number"),
        ("fpr = 2\n", "fpr must be a rate"),
        ('fpr = "x"\n', "fpr must be a rate"),
        (PATCHCORE + 'params = "x"\n' + DATASET, "params is 'x'"),
        (PATCHCORE + '[[datasets]]\nroot = 7\nformat = "anomaly-shapenet"\n', "root is 7"),
        (PATCHCORE + DATASET + 'categories = "box0"\n', "categories must be a list of names"),
        ('detectors = "patchcore"\n[[datasets]]\nroot = "DATA"\nformat = "anomaly-shapenet"\n', "list of tables"),
    ],
)
def test_a_sweep_file_with_a_wrong_value_runs_nothing_and_says_which(tmp_path, data, text, said):
    done = cli("bench", "run", "--spec", spec_file(tmp_path, data, text), "--out", tmp_path / "out", "--workers", "1")
    assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "out" / "results.jsonl").exists()


def test_sweep_file_and_seed_flags_that_are_not_text_or_numbers(tmp_path, data):
    path = tmp_path / "latin1.toml"
    path.write_bytes("# caf\xe9\n".encode("latin-1") + (_dataset(data) + _detector()).encode())
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_spec(path)
    done = cli("bench", "run", "--detector", "patchcore", "--data", data, "--format", "anomaly-shapenet",
               "--seeds", "a", "--out", tmp_path / "out")  # fmt: skip
    assert done.returncode == 2 and "--seeds takes whole numbers" in done.stderr  # before: exit 3


def test_one_driver_per_results_folder(data, tmp_path):
    # before: two `bench run` on one --out ran every job twice, and the second died on the other's tmp file
    store = ResultsStore(tmp_path / "out")
    sweep = Sweep([Variant("patchcore", params=FAST)], [DataSource(str(data), "anomaly-shapenet")])
    with store.driver_lock():
        with pytest.raises(ConfigError, match=rf"another `ad3d bench run` \(pid {os.getpid()}\)"):
            run_sweep(sweep, tmp_path / "out", workers=1, progress=False)
    assert run_sweep(sweep, tmp_path / "out", workers=1, progress=False)["ran"] == 1  # released: runs


def test_the_job_key_sees_the_data(data, tmp_path):
    # before: a regenerated dataset reused the old rows ("6 finished before"): the key ignored the data
    sweep = Sweep([Variant("patchcore", params=FAST)], [DataSource(str(data), "anomaly-shapenet")])
    assert run_sweep(sweep, tmp_path / "out", workers=1, progress=False)["ran"] == 1
    assert run_sweep(sweep, tmp_path / "out", workers=1, progress=False)["skipped"] == 1
    scan = next((data / "pcd" / "box0" / "train").iterdir())
    stat = scan.stat()
    os.utime(scan, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file written again
    try:
        again = run_sweep(sweep, tmp_path / "out", workers=1, progress=False)
    finally:
        os.utime(scan, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert again["skipped"] == 0 and again["ran"] == 1


def test_a_complete_last_row_without_its_newline_is_kept(tmp_path):
    # before: a valid last row without its final newline was dropped as "cut" (22 jobs, 21 rows)
    store = ResultsStore(tmp_path)
    store.table.write_text('{"key": "a", "status": "ok", "label": "x"}\n{"key": "b", "status": "ok", "label": "x"}')
    assert [r["key"] for r in store.rows()] == ["a", "b"]
    store.append({"key": "c", "status": "ok", "label": "x"}, {})
    assert [r["key"] for r in store.rows()] == ["a", "b", "c"]
    assert store.table.read_text().count("\n") == 3


def test_a_results_table_that_is_a_link_is_refused_and_its_target_untouched(tmp_path):
    # before: the target's text was deleted
    target = tmp_path / "precious.txt"
    target.write_text("somebody's notes, no newline at the end")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.jsonl").symlink_to(target)
    store = ResultsStore(tmp_path / "out")
    with pytest.raises(ConfigError, match="not a regular file"):
        store.rows()
    with pytest.raises(ConfigError, match="not a regular file"):
        store.append({"key": "a", "status": "ok"}, {})
    assert target.read_text() == "somebody's notes, no newline at the end"


@pytest.mark.parametrize(
    "content, said",
    [
        (b"42\n", "line 1 is not a results row"),  # before: exit 3
        (b'{"key": "a", "status": "ok"}\n{"key": "b", "label": "caf\xe9"}\n', "line 2 is not UTF-8"),  # exit 3
    ],
)
def test_rows_that_are_not_rows_are_named_by_line(tmp_path, content, said):
    store = ResultsStore(tmp_path)
    store.table.write_bytes(content)
    with pytest.raises(ConfigError, match=said):
        store.rows()
    done = cli("bench", "report", "--out", tmp_path)
    assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr


def test_a_nan_metric_and_a_damaged_details_file_still_give_a_report(data, tmp_path):
    # before: a NaN fit_s or a bad details file in the folder: exit 3 and no report
    sweep = Sweep([Variant("patchcore", params=FAST)], [DataSource(str(data), "anomaly-shapenet")])
    run_sweep(sweep, tmp_path, workers=1, progress=False)
    (row,) = ResultsStore(tmp_path).rows()
    store = ResultsStore(tmp_path)
    store.table.write_text(json.dumps({**row, "fit_s": float("nan")}) + "\n")
    (store.details / f"{row['key']}.npz").write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="fit_s is nan"):
        assert store.rows()[0]["fit_s"] is None
    done = cli("bench", "report", "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "cannot be read" in done.stderr and (tmp_path / "report.md").read_text().count("patchcore") >= 1


def test_a_ray_address_nothing_answers_on_is_refused_in_seconds(data, tmp_path):
    # before: Ray's log for 120 s and no error
    started = time.monotonic()
    done = cli("bench", "run", "--detector", "patchcore", "--data", data, "--format", "anomaly-shapenet",
               "--ray", "127.0.0.1:1", "--out", tmp_path / "out", timeout=60)  # fmt: skip
    assert done.returncode == 2 and "no Ray cluster answers at '127.0.0.1:1'" in done.stderr
    assert time.monotonic() - started < 30 and "Traceback" not in done.stderr


def children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill -9"])
def test_a_stopped_pool_sweep_leaves_no_worker_and_a_rerun_completes_without_duplicates(dense, tmp_path, stop):
    # before: Ctrl-C during submission waited for every queued job (3.5 min); SIGKILL of the driver left its
    # workers blocked forever (~500 MB each)
    out = tmp_path / "out"
    args = ["bench", "run", "--detector", "patchcore", "--data", dense,
            "--format", "anomaly-shapenet", "--seeds", "0,1,2,3,4,5", "--workers", "2", "--out", out,
            "--no-report", "--quiet"]  # fmt: skip
    driver = subprocess.Popen([sys.executable, "-m", "ad3d.cli", *map(str, args)], stderr=subprocess.PIPE, text=True)
    deadline, workers = time.monotonic() + 120, set()
    while time.monotonic() < deadline and len(workers) < 2:  # the pool's workers (and its resource tracker)
        assert driver.poll() is None, driver.communicate()[1]
        workers |= children(driver.pid)
        time.sleep(0.1)
    assert workers, "the pool never started"
    time.sleep(2.0)  # inside their jobs
    workers |= children(driver.pid)
    driver.send_signal(stop)
    started = time.monotonic()
    _, err = driver.communicate(timeout=60)
    if stop == signal.SIGINT:
        assert driver.returncode == 130 and "the same command runs the rest" in err, err
        assert time.monotonic() - started < 30  # stops at once, not after the queue
    deadline = time.monotonic() + 20
    while alive(workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(workers), f"workers left behind: {alive(workers)}"
    done = cli(*args, timeout=900)
    assert done.returncode == 0, done.stderr
    keys = [json.loads(line)["key"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(keys) == 6 and len(set(keys)) == 6  # every job once
