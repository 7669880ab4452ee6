"""A sweep's results on disk: `results.jsonl` (one JSON row per finished job, appended and flushed as each
job ends) and `details/<key>.npz` (curves and thumbnails). Only the process that runs the sweep writes."""

from __future__ import annotations

import json
import os
import warnings
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
        """Every row on disk, the latest per job key. A line cut short by a kill (the last one) is skipped
        with a warning; a damaged line elsewhere is an error naming the line, since rows would be lost."""
        if not self.table.exists():
            return []
        lines = self.table.read_text().split("\n")
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
            latest[row["key"]] = row
        return list(latest.values())

    def finished(self, *, retry_failed: bool = False) -> set[str]:
        """Keys of the jobs not to run again: every row's, or only the successful ones with retry_failed."""
        return {r["key"] for r in self.rows() if r.get("status") == "ok" or not retry_failed}

    def append(self, row: dict, details: dict) -> None:
        """Write the job's details, then its row (the row is what marks the job done)."""
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
        path = self.details / f"{key}.npz"
        if not path.exists():
            return {}
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def _drop_cut_line(self) -> None:
        """Cut off a last line left without its newline by a kill, so the next row starts on its own line."""
        if not self.table.exists() or self.table.stat().st_size == 0:
            return
        data = self.table.read_bytes()
        if not data.endswith(b"\n"):
            with open(self.table, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)


def _plain(value):
    """JSON for numpy scalars and arrays, tuples of parameters."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to the results table")
