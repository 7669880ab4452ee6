"""Helpers every reader and writer shares: file checks, error wording, atomic writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from ad3d.errors import ScanFormatError


def fail(path: str | os.PathLike, problem: str) -> ScanFormatError:
    """The one error shape of the IO layer: "cannot read 'PATH': PROBLEM"."""
    return ScanFormatError(f"cannot read '{path}': {problem}")


def check_readable(path: str | os.PathLike) -> Path:
    """Return the path if it names a non-empty regular file, else raise a ScanFormatError."""
    p = Path(path)
    if p.is_symlink():
        try:
            p.resolve(strict=True)
        except RuntimeError:  # Python < 3.13 says "Symlink loop"
            raise fail(p, "symbolic link loop (the link points back to itself)") from None
        except OSError as e:
            if e.errno == 40:  # ELOOP
                raise fail(p, "symbolic link loop (the link points back to itself)") from None
            raise fail(p, f"broken symbolic link (target '{os.readlink(p)}' does not exist)") from None
    if not p.exists():
        raise fail(p, "no such file")
    if p.is_dir():
        raise fail(p, "is a directory, not a scan file")
    if not os.access(p, os.R_OK):
        raise fail(p, "permission denied (the file is not readable by this user)")
    if p.stat().st_size == 0:
        raise fail(p, "file is empty (0 bytes)")
    return p


def split_invalid(path, points: np.ndarray, remove_invalid: bool) -> np.ndarray:
    """Boolean mask of valid points: NaN marks a missing measurement; inf is always corruption."""
    inf = np.isinf(points).any(axis=1)
    if inf.any():
        raise fail(path, f"{int(inf.sum())} points hold inf coordinates (first at point {int(np.argmax(inf))})")
    with np.errstate(invalid="ignore"):
        huge = (np.abs(points) > np.finfo(np.float32).max).any(axis=1)
    if huge.any():
        first = int(np.argmax(huge))
        raise fail(
            path,
            f"{int(huge.sum())} points hold coordinates beyond the float32 range "
            f"(first at point {first}: {np.abs(points[first]).max():.3g})",
        )
    valid = ~np.isnan(points).any(axis=1)
    if not remove_invalid and not valid.all():
        raise fail(
            path, f"{int((~valid).sum())} points hold NaN coordinates; read with remove_invalid=True to drop them"
        )
    if not valid.any():
        raise fail(path, f"no valid points ({len(points)} points, all missing)" if len(points) else "holds no points")
    return valid


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """PCL packs colour as 0x(AA)RRGGBB in 4 bytes (typed F or U): unpack to (N, 3) uint8."""
    v = np.ascontiguousarray(packed).view(np.uint32)
    return np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], axis=1).astype(np.uint8)


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """Inverse of unpack_rgb, as the float32 bit pattern PCL's `rgb` field uses."""
    c = colors.astype(np.uint32)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)


def umask_mode(mode: int = 0o666) -> int:
    """`mode` as the process's umask lets it be: what open() would have given a new file or folder."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def staging_prefix(target: Path) -> str:
    """The name prefix of a temporary file or folder beside `target`: hidden, with this process's id,
    so a later run can tell its leftovers from a live writer's."""
    return f".{target.name}.{os.getpid()}."


def remove_leftovers(target: Path) -> None:
    """Delete the temporary files and folders that an earlier, killed writer of `target` left beside
    it (their process is gone); a live writer's are kept."""
    import shutil

    for entry in target.parent.glob(f".{glob_escape(target.name)}.*"):
        pid = entry.name[len(target.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike):
    """Yield a temporary path beside `path`; move it into place only if the block succeeds. The file
    gets the mode the umask allows (mkstemp alone would leave it 0600)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    fd, tmp = tempfile.mkstemp(prefix=staging_prefix(target), suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
