"""The ad3d command in its own process, for the tests of the command line."""

from __future__ import annotations

import subprocess
import sys


def run_ad3d(*args, **options) -> subprocess.CompletedProcess:
    """`ad3d ARGS...` (each argument str()-ed), output captured as text; options go to subprocess.run
    (cwd, timeout)."""
    command = [sys.executable, "-m", "ad3d.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, **options)
