"""The bad-input corpus (tests/bad_inputs): every broken, hostile or odd scan gives one line naming the
file and the problem, the corpus is never modified, and one batch holding all of it loses no good scan."""

import csv
import os
import re
import sys
from pathlib import Path

import pytest

import ad3d
from ad3d.errors import ScanFormatError
from ad3d.io import read_scan, write_scan

CORPUS = Path(__file__).parent / "bad_inputs"
sys.path.insert(0, str(CORPUS))
CASES = list(csv.DictReader((CORPUS / "cases.csv").open()))


def test_the_committed_corpus_is_what_its_generator_writes_and_every_file_has_a_case():
    from make_corpus import cases

    written = cases()
    assert {p.name for p in (CORPUS / "scans").iterdir()} == set(written) == {c["file"] for c in CASES}
    for name, content in written.items():
        assert (CORPUS / "scans" / name).read_bytes() == content, name


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_each_bad_scan_gives_one_line_naming_the_file_and_the_problem(case, recwarn):
    path = CORPUS / "scans" / case["file"]
    with pytest.raises(ScanFormatError) as err:
        read_scan(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert re.search(case["expect"], message), message
    assert not [w for w in recwarn if issubclass(w.category, (RuntimeWarning, UserWarning))]  # no numpy noise


@pytest.fixture
def model(tmp_path, shared_data):
    def part(seed):
        return read_scan(shared_data / "meshes" / "cad" / "idler_riser.STL", sample=1500, seed=seed)

    path = tmp_path / "m.ad3d"
    ad3d.create("patchcore", num_groups=256).fit([part(1), part(2)]).calibrate([part(3)]).save(path)
    good = tmp_path / "good"
    good.mkdir()
    for name, seed in (("a_good.ply", 4), ("z_good.pcd", 5)):
        write_scan(good / name, part(seed))
    return path, sorted(good.iterdir())


def made_at_run_time(folder: Path) -> dict[Path, str]:
    """The cases git cannot hold as files: a symlink loop, a broken link, a folder named like a scan, a
    file that is not there."""
    folder.mkdir()
    (folder / "loop.pcd").symlink_to(folder / "loop2.pcd")
    (folder / "loop2.pcd").symlink_to(folder / "loop.pcd")
    (folder / "broken_link.ply").symlink_to(folder / "gone.ply")
    (folder / "folder.pcd").mkdir()
    return {
        folder / "loop.pcd": "symbolic link loop",
        folder / "broken_link.ply": "broken symbolic link",
        folder / "folder.pcd": "is a directory",
        folder / "missing.pcd": "no such file",
    }


def test_cases_made_at_run_time_give_one_line_naming_the_file(tmp_path):
    for path, words in made_at_run_time(tmp_path / "runtime").items():
        with pytest.raises(ScanFormatError, match=re.escape(f"'{path}': {words}")):
            read_scan(path)


def test_the_whole_corpus_in_one_batch_loses_no_good_scan_and_changes_nothing(model, tmp_path, capsys, monkeypatch):
    """Through the CLI in this process, so two failures no file can cause on demand join the batch: a
    MemoryError and a permission error (root reads any file) raised by the reader for named files."""
    from conftest import tree_digest

    from ad3d import cli

    model_path, good = model
    runtime = {
        p: words for p, words in made_at_run_time(tmp_path / "runtime").items() if not p.is_dir()
    }  # a folder argument is a folder of scans to the CLI
    faults = {"out_of_memory.pcd": MemoryError(), "unreadable.pcd": PermissionError(13, "Permission denied")}
    for name in faults:
        (tmp_path / "runtime" / name).write_bytes(good[0].read_bytes())

    def read_with_faults(path, *args, **kwargs):
        if Path(path).name in faults:
            raise faults[Path(path).name]
        return read_scan(path, *args, **kwargs)

    monkeypatch.setattr("ad3d.io.read_scan", read_with_faults)  # the CLI imports it when it runs
    bad = [CORPUS / "scans" / c["file"] for c in CASES] + list(runtime) + [tmp_path / "runtime" / n for n in faults]
    before = tree_digest(CORPUS)
    code = cli.main(
        [
            "score",
            str(model_path),
            str(good[0]),
            *map(str, bad),
            str(good[1]),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("ad3d:")]
    assert len(lines) == len(bad), err
    for path, line in zip(bad, lines):  # one line per bad file, in order, naming it
        assert str(path) in line, (path, line)
    for path, words in runtime.items():
        assert words in next(line for line in lines if str(path) in line)
    assert "out of memory" in lines[-2] and "Permission denied" in lines[-1]
    assert f"2 of {len(bad) + 2} scans scored, {len(bad)} failed" in err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.json")) == ["a_good.json", "z_good.json"]
    assert tree_digest(CORPUS) == before


def test_an_unreadable_file_is_named_as_such(tmp_path, monkeypatch):
    path = tmp_path / "locked.pcd"
    content = (CORPUS / "scans" / "truncated.pcd").read_bytes()
    path.write_bytes(content)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == path else real_access(p, mode))
    with pytest.raises(ScanFormatError, match=r"locked\.pcd'.*permission denied"):
        read_scan(path)
    assert path.read_bytes() == content
