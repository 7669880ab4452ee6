"""The README's library example, as printed, after what `make demo` writes: a new user pastes it into Python."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_library_example_runs_as_printed_after_the_demo(tmp_path):
    from ad3d.demo import run_demo

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1, "the README shows one library example"
    run_demo(tmp_path / "runs" / "demo", quiet=True)  # what `make demo` writes, in a fresh folder
    done = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    decision, counts = done.stdout.strip().splitlines()
    assert decision.split()[0] in ("accept", "review", "reject")
    assert re.fullmatch(r"22 scans scored, \d+ rejected", counts)
    assert (tmp_path / "runs" / "idler_riser.ad3d").is_file()
    assert len(list((tmp_path / "runs" / "idler_riser_results").glob("*.json"))) == 22
