"""Score scan files with a detector and write a PLY + JSON result per scan: what `ad3d score` runs, callable
by metrology software. Checks before any work (inputs found, no result replacing an input), one distinct
result name per scan, one line per bad file while the others are still scored, and a summary."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ad3d.errors import Ad3dError, ConfigError, ScanFormatError
from ad3d.types import AnomalyResult


@dataclass
class ScoreSummary:
    """What `score_files` did: each scored scan (input, result name, result), each failure (input, one line)."""

    scored: list[tuple[Path, str, AnomalyResult]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    batch_note: str | None = None  # how an uncalibrated zero-shot batch was judged

    @property
    def rejected(self) -> int:
        return sum(bool(result.is_anomalous) for _, _, result in self.scored)

    def failures_line(self, out) -> str | None:
        """How many scans failed of how many (None when none did)."""
        if not self.failed:
            return None
        total, failed = len(self.failed) + len(self.scored), len(self.failed)
        return f"{len(self.scored)} of {total} scans scored, {failed} failed (see the lines above); results in {out}"


def scan_paths(inputs: list[str | os.PathLike]) -> list[Path]:
    """Scan files from files and folders (a folder: its scan files, sorted; one with none is an error)."""
    from ad3d.io import SCAN_SUFFIXES

    paths = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in SCAN_SUFFIXES)
            if not found:
                raise ScanFormatError(f"cannot read '{p}': folder holds no scan files ({' '.join(SCAN_SUFFIXES)})")
            paths += found
        else:
            paths.append(p)
    return paths


def result_names(paths: list[Path]) -> list[str]:
    """One distinct output name per scan: its stem, or, where stems collide, the stem with its suffix
    and then its parent folders' names (A/part.pcd, A/part.txt, B/part.pcd -> A_part_pcd, part_txt,
    B_part_pcd), so no result overwrites another."""

    def name(p, depth: int) -> str:  # stem_suffix, with the last depth - 1 parent folder names in front
        folders = list(p.absolute().parent.parts[1:])[-(depth - 1) :] if depth > 1 else []
        return "_".join(folders + [f"{p.stem}_{p.suffix.lstrip('.').lower()}"])

    names = [p.stem for p in paths]
    for depth in range(1, 64):
        clash = {n for n, c in Counter(names).items() if c > 1}
        if not clash:
            return names
        names = [name(p, depth) if n in clash else n for p, n in zip(paths, names)]
    return [f"{n}_{i}" for i, n in enumerate(names)]


def check_outputs(out: Path, paths: list[Path], names: list[str]) -> None:
    """Refuse, before any work, an `out` that is a file, or a result that would replace an input."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}' is a file, not a folder; nothing was done")
    inputs = {os.path.realpath(p): p for p in paths}  # realpath, unlike resolve(), takes a symlink loop
    for stem in names:
        for suffix in (".ply", ".json"):
            target = os.path.realpath(out / f"{stem}{suffix}")
            if target in inputs:
                raise ConfigError(
                    f"result '{out / (stem + suffix)}' would overwrite the input '{inputs[target]}'; "
                    "choose another --out. Nothing was scored"
                )


def per_file_error(path: Path, error: Exception) -> str:
    """The one line for a scan that could not be scored: ad3d's own message, or the file and the cause."""
    if isinstance(error, Ad3dError):
        return str(error)
    if isinstance(error, MemoryError):
        return f"cannot score '{path}': out of memory"
    if isinstance(error, OSError):
        return f"cannot score '{path}': {error.strerror or error}"
    return f"cannot score '{path}': {type(error).__name__}: {error}"


def score_files(
    detector,
    inputs: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    force: bool = False,
    preprocess: str = "none",
    on_result: Callable[[Path, str, AnomalyResult], None] | None = None,
    on_error: Callable[[Path, str], None] | None = None,
    raise_errors: bool = False,
    timings: bool = False,
    progress: bool = False,
) -> ScoreSummary:
    """Score every scan file of `inputs` (files or folders) with a fitted (or zero-shot) `detector`, writing
    `out/NAME.ply` and `out/NAME.json` per scan. A bad file is one line (`on_error`) and the others are still
    scored (raise_errors: raise it instead); `on_result` hears each scored scan. A zero-shot detector reads
    every scan first and scores them together (progress: bars while it does, when nothing else is said). The
    results are the same bytes for the same inputs; timings=True adds each step's time and peak memory to each
    JSON report."""
    if not inputs:
        raise ConfigError("no scans given")
    out = Path(out)
    paths = scan_paths(inputs)
    names = result_names(paths)
    check_outputs(out, paths, names)
    summary = ScoreSummary()

    def fail(path: Path, error: Exception) -> None:
        if raise_errors:
            raise error
        summary.failed.append((path, per_file_error(path, error)))
        if on_error:
            on_error(path, summary.failed[-1][1])

    def finish(path: Path, stem: str, scan, result: AnomalyResult, read_timings: dict) -> None:
        from ad3d.report import peak_mb, write_result

        result.timings.update(read_timings, score_peak_mb=peak_mb())
        write_result(out, stem, scan, result, detector.name, detector.thresholds(), timings)
        summary.scored.append((path, stem, result))
        if on_result:
            on_result(path, stem, result)

    if detector.learning_type == "zero-shot":
        _score_together(detector, paths, names, force, preprocess, fail, finish, summary, progress)
    else:
        for path, stem in zip(paths, names):
            try:
                scan, read_timings = _read(path, preprocess)
                finish(path, stem, scan, detector.score(scan, force=force), read_timings)
            except Exception as e:  # one bad file never stops the batch: say which file and why, go on
                fail(path, e)
    return summary


def _read(path: Path, preprocess: str):
    from ad3d.io import read_scan
    from ad3d.report import peak_mb

    started = time.perf_counter()
    scan = read_scan(path)
    if preprocess == "plane":
        from ad3d.preprocess import remove_background_plane

        scan = remove_background_plane(scan)
    return scan, {"read_s": time.perf_counter() - started, "read_peak_mb": peak_mb()}


def _score_together(
    detector, paths, names, force, preprocess, fail, finish, summary: ScoreSummary, progress: bool
) -> None:
    """A zero-shot batch: every scan read (a corrupt one left out here, not found inside the joint scoring),
    then all scored together; progress: a bar for each of the two (nothing else shows before the results)."""
    from tqdm import tqdm

    from ad3d.detectors.base import check_geometry

    batch = []
    for path, stem in tqdm(list(zip(paths, names)), desc="reading", unit="scan", disable=not progress, leave=False):
        try:
            scan, read_timings = _read(path, preprocess)
            check_geometry(scan)
            batch.append((path, stem, scan, read_timings))
        except Exception as e:
            fail(path, e)
    scans = [scan for _, _, scan, _ in batch]
    results = detector.score_many(scans, progress=progress, force=force) if batch else []
    if results and detector.threshold_ is None:
        summary.batch_note = (
            f"{detector.name}: decisions from the batch's own scores ({len(results)} scans, most assumed good)"
            if results[0].decision
            else f"{detector.name}: fewer than 3 scans, too few to judge each other: scores only"
        )
    for (path, stem, scan, read_timings), result in zip(batch, results):
        try:
            finish(path, stem, scan, result, read_timings)
        except Exception as e:
            fail(path, e)
