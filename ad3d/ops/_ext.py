"""Builds and loads the compiled kernels in cuda_ops/ (JIT, cached by source hash and torch version).

The sources are copied into the build folder and compiled from there, so two checkouts with the same
sources share one build (torch's JIT versioner keys on source paths too, and would rebuild on every
switch), and a file lock keeps two processes from building the same key at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import warnings
from pathlib import Path

SOURCE_DIR = Path(os.environ.get("AD3D_OPS_SOURCES") or Path(__file__).resolve().parents[2] / "cuda_ops")
CPU_SOURCES = ("bindings.cpp", "fps_cpu.cpp", "knn_cpu.cpp")
CUDA_SOURCES = ("fps_cuda.cu", "knn_cuda.cu")
HEADERS = ("ops.h", "kdtree.h", "cuda_math.cuh", "knn_grid.h")
CFLAGS = ["-O3", "-fopenmp", "-ffp-contract=off"]
NVCC_FLAGS = ["-O3", "-fmad=false", "-std=c++17", "-DAD3D_WITH_CUDA"]

_state: dict = {}


def _want_cuda() -> bool:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    return torch.cuda.is_available() and CUDA_HOME is not None and os.environ.get("AD3D_OPS_NO_CUDA") != "1"


def build_key(cuda: bool) -> str:
    """Hash of every source and header, the flags, the torch version and where this torch is installed (a
    second environment with the same torch gets its own build rather than rebuilding the first's every
    time it is switched to): a new key means a rebuild."""
    import torch

    h = hashlib.sha256(f"{torch.__version__}|{Path(torch.__file__).parent}|{cuda}|{CFLAGS}|{NVCC_FLAGS}".encode())
    for name in CPU_SOURCES + CUDA_SOURCES + HEADERS:
        h.update((SOURCE_DIR / name).read_bytes())
    return h.hexdigest()[:16]


def load_extension(verbose: bool = False):
    """The compiled module, building it on first use; None (with one warning) if it cannot be built.

    AD3D_OPS=fallback skips the build and uses the torch fallback (for tests and comparisons).
    """
    if "module" in _state:
        return _state["module"]
    module = None
    if os.environ.get("AD3D_OPS") == "fallback":
        _state["error"] = "disabled by AD3D_OPS=fallback"
    elif not all((SOURCE_DIR / s).exists() for s in CPU_SOURCES):
        _state["error"] = f"kernel sources not found in {SOURCE_DIR}"
    else:
        module = _build(verbose)
    if module is None:
        warnings.warn(f"ad3d.ops: using the slower torch fallback ({_state['error']})", RuntimeWarning, stacklevel=3)
    _state["module"] = module
    return module


def _build(verbose: bool):
    import fcntl

    from torch.utils.cpp_extension import load

    from ad3d.cache import cache_dir

    cuda = _want_cuda()
    key = build_key(cuda)
    build_dir = cache_dir() / "ops" / key
    build_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open(build_dir / ".lock", "w") as lock, _pinned_ninja():
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # one builder per key; the others wait, then load its result
                if not built(build_dir, key):  # (an already built library is only being loaded: no news)
                    print("ad3d.ops: waiting for another process that is building the kernels", file=sys.stderr)
                fcntl.flock(lock, fcntl.LOCK_EX)
            _clear_stale_baton(build_dir)
            if not built(build_dir, key):
                print(
                    "ad3d.ops: building the compiled kernels (first use with this torch; about a minute)",
                    file=sys.stderr,
                )
            staged = _stage(build_dir / "src")
            sources = [str(staged / s) for s in CPU_SOURCES + (CUDA_SOURCES if cuda else ())]
            module = load(
                name=f"ad3d_ops_{key}",
                sources=sources,
                build_directory=str(build_dir),
                extra_cflags=CFLAGS + (["-DAD3D_WITH_CUDA"] if cuda else []),
                extra_cuda_cflags=NVCC_FLAGS,
                extra_ldflags=["-fopenmp"],
                with_cuda=cuda,
                verbose=verbose,
            )
    except Exception as e:  # compiler missing, headers missing, ...: the fallback still works
        _state["error"] = f"build failed: {type(e).__name__}: {str(e).strip().splitlines()[-1][:200]}"
        return None
    _state["info"] = f"compiled ({'CPU + CUDA' if cuda else 'CPU'}) in {build_dir}"
    return module


def built(build_dir: Path, key: str) -> bool:
    """Whether this key's library is already in the cache (loading it then compiles nothing)."""
    return (build_dir / f"ad3d_ops_{key}.so").exists()


@contextlib.contextmanager
def _pinned_ninja():
    """The ninja installed beside this Python first on PATH while torch builds: ninja rebuilds everything
    when another version wrote the build log, so whichever ninja a shell finds first must not decide."""
    own = Path(sys.executable).parent
    saved = os.environ.get("PATH", "")
    if (own / "ninja").exists():
        os.environ["PATH"] = f"{own}{os.pathsep}{saved}"
    try:
        yield
    finally:
        os.environ["PATH"] = saved


def _clear_stale_baton(build_dir: Path) -> None:
    """Remove torch's build baton (`lock`) left by a build that was killed (SIGTERM, SIGKILL): torch would
    wait on it forever. Called under our own lock, which the system drops when its holder dies, so no
    other build of this key is running and any baton found is stale."""
    baton = build_dir / "lock"
    if baton.exists():
        print(f"ad3d.ops: removing a lock left by an interrupted build in {build_dir}", file=sys.stderr)
        baton.unlink(missing_ok=True)


def _stage(folder: Path) -> Path:
    """The sources and headers copied into `folder` (rewritten only where they differ): the build then
    sees the same paths whichever checkout asked for it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in CPU_SOURCES + CUDA_SOURCES + HEADERS:
        data = (SOURCE_DIR / name).read_bytes()
        target = folder / name
        if not target.exists() or target.read_bytes() != data:
            tmp = folder / f".{name}.{os.getpid()}"
            tmp.write_bytes(data)
            os.replace(tmp, target)
    return folder


def extension_status(build: bool = False) -> str:
    """One line for `ad3d doctor`: built, buildable, or why the fallback is in use."""
    if build or "module" in _state:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = load_extension()
        return _state["info"] if module is not None else f"torch fallback ({_state['error']})"
    from ad3d.cache import cache_dir

    key = build_key(_want_cuda())
    if built(cache_dir() / "ops" / key, key):
        return f"built, cached in {cache_dir() / 'ops' / key} (loaded on first use)"
    return "not built yet (built on first use; `ad3d doctor --build` builds now)"
