"""A sweep's results on disk: `results.jsonl` (one JSON row per finished job, appended and flushed as each
job ends) and `details/<key>.npz` (curves and thumbnails). Only the process that runs the sweep writes."""

from __future__ import annotations

import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ad3d.errors import ConfigError


class ResultsStore:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(f"sweep output '{self.folder}' is a file, not a folder; nothing was run")
        self.table = self.folder / "results.jsonl"
        self.details = self.folder / "details"

    def rows(self) -> list[dict]:
        """Every row on disk, the latest per job key. A last line cut short by a kill is skipped with a warning
        (a complete last row without its newline is kept); a damaged line elsewhere is an error naming the line,
        since rows would be lost. Metrics that are not finite numbers are read as missing, with a warning."""
        if not self.table.exists():
            return []
        self._check_regular()
        try:
            lines = self.table.read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as e:
            line = self.table.read_bytes()[: e.start].count(b"\n") + 1
            raise ConfigError(f"'{self.table}' line {line} is not UTF-8 text; fix or remove that line") from None
        latest: dict[str, dict] = {}
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):  # no newline after it: the write was cut short
                    warnings.warn(
                        f"'{self.table}': last line is incomplete (sweep killed mid-write); ignored", stacklevel=2
                    )
                    continue
                raise ConfigError(f"'{self.table}' line {number} is not a JSON row; fix or remove that line") from None
            latest_row = _checked_row(row, f"'{self.table}' line {number}")
            latest[latest_row["key"]] = latest_row
        return list(latest.values())

    def finished(self, *, retry_failed: bool = False) -> set[str]:
        """Keys of the jobs not to run again: every row's, or only the successful ones with retry_failed."""
        return {r["key"] for r in self.rows() if r.get("status") == "ok" or not retry_failed}

    def append(self, row: dict, details: dict) -> None:
        """Write the job's details, then its row (the row is what marks the job done)."""
        self._check_regular()
        self.details.mkdir(parents=True, exist_ok=True)
        if details:
            tmp = self.details / f".{row['key']}.tmp.npz"
            np.savez_compressed(tmp, **details)
            os.replace(tmp, self.details / f"{row['key']}.npz")
        self._drop_cut_line()
        with open(self.table, "a") as f:
            f.write(json.dumps(row, default=_plain) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def load_details(self, key: str) -> dict:
        """A job's arrays for the report; a details file that cannot be read is left out with a warning."""
        path = self.details / f"{key}.npz"
        if not path.exists():
            return {}
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as e:  # damaged, truncated, not an npz: the report goes on without its figures
            warnings.warn(f"'{path}' cannot be read ({type(e).__name__}); its curves are left out", stacklevel=2)
            return {}

    def _check_regular(self) -> None:
        """Refuse a results table that is not a regular file (a symbolic link: ad3d would write through it)."""
        if self.table.is_symlink() or (self.table.exists() and not self.table.is_file()):
            raise ConfigError(f"'{self.table}' is not a regular file (a link?); ad3d writes only its own table")

    def _drop_cut_line(self) -> None:
        """End the table on a newline before appending: a complete last row left without one gets it; a line cut
        short by a kill is cut off, so the next row starts on its own line."""
        if not self.table.exists() or self.table.stat().st_size == 0:
            return
        self._check_regular()
        data = self.table.read_bytes()
        if data.endswith(b"\n"):
            return
        last = data[data.rfind(b"\n") + 1 :]
        try:
            json.loads(last)
            complete = True
        except ValueError:
            complete = False
        with open(self.table, "r+b") as f:
            if complete:
                f.seek(0, os.SEEK_END)
                f.write(b"\n")
            else:
                f.truncate(data.rfind(b"\n") + 1)

    @contextmanager
    def driver_lock(self):
        """Held while a sweep runs in this folder: a second `ad3d bench run` on it is refused at once (two would
        run every job twice). An OS lock on `.lock`, so a driver that is killed releases it."""
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "?"
                raise ConfigError(
                    f"another `ad3d bench run` (pid {holder}) is running the sweep in '{self.folder}'; wait for it "
                    "or stop it (its finished rows are kept)"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


METRICS = ("object_auroc", "point_auroc", "aupro", "ap", "fit_s", "score_ms", "peak_mb", "wall_s", "learned")


def _checked_row(row, where: str) -> dict:
    """A row as the report can use it: a JSON object with its job's key (else a ConfigError naming the line), its
    label, category and status as text; metrics that are not finite numbers become missing, with a warning."""
    import math

    if not isinstance(row, dict) or not isinstance(row.get("key"), str):
        raise ConfigError(f"{where} is not a results row (a JSON object with its job's key); fix or remove it")
    for name, default in (("label", row.get("detector")), ("category", None), ("status", "error")):
        row[name] = str(row.get(name, default))
    for name in METRICS:
        value = row.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        ):
            warnings.warn(f"{where}: {name} is {value!r}, not a finite number; read as missing", stacklevel=3)
            row[name] = None
    return row


def _plain(value):
    """JSON for numpy scalars and arrays, tuples of parameters."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to the results table")
