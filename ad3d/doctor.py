"""`ad3d doctor`: the versions of what ad3d leans on, and whether each optional piece works here."""

from __future__ import annotations

import importlib
import importlib.metadata
import platform

LIBRARIES = ("numpy", "scipy", "sklearn", "torch", "open3d", "trimesh", "tifffile", "plyfile", "pyvista")


def _version(module) -> str:
    name = module.__name__
    found = getattr(module, "__version__", None)
    if found:
        return str(found)
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "installed (version unknown)"


def doctor_rows(build: bool = False) -> list[tuple[str, str]]:
    """(what, state) rows: ad3d and Python, each library's version or why it does not import, the GPU torch
    sees, and the compiled ops (build=True: built now if needed). Never raises: reporting is the point."""
    from ad3d import __version__

    rows = [("ad3d", __version__), ("python", platform.python_version())]
    for name in LIBRARIES:
        try:
            rows.append((name, _version(importlib.import_module(name))))
        except Exception as e:
            rows.append((name, f"not available ({type(e).__name__}: {str(e).splitlines()[0][:60]})"))
    try:
        import torch

        rows.append(("cuda", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU visible"))
    except Exception:
        rows.append(("cuda", "torch missing"))
    try:
        from ad3d.ops import extension_status

        rows.append(("ops", extension_status(build=build)))
    except ImportError:
        rows.append(("ops", "not installed"))
    return rows
