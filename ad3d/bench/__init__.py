"""Benchmark sweeps: detectors x categories x seeds as independent jobs, run in-process, on a local process
pool or on Ray, appended to a results table that a stopped sweep resumes from, and an HTML/Markdown report."""

from ad3d.bench.execute import run_sweep
from ad3d.bench.job import Job, run_job
from ad3d.bench.spec import Sweep, load_spec
from ad3d.bench.store import ResultsStore

__all__ = ["Job", "ResultsStore", "Sweep", "load_spec", "run_job", "run_sweep"]
