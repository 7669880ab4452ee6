"""The `ad3d` command. Library errors become one line on stderr and exit code 2 (--debug: traceback)."""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys

from ad3d import __version__
from ad3d.errors import Ad3dError


def _cmd_doctor(args) -> int:
    """Versions of what ad3d leans on, and whether each optional piece works here."""
    rows = [("ad3d", __version__), ("python", platform.python_version())]
    for mod in ("numpy", "scipy", "sklearn", "torch", "open3d", "trimesh", "tifffile", "plyfile", "pyvista"):
        try:
            rows.append((mod, getattr(importlib.import_module(mod), "__version__", "?")))
        except Exception as e:  # report, never crash: that is the point of doctor
            rows.append((mod, f"not available ({type(e).__name__}: {str(e).splitlines()[0][:60]})"))
    try:
        import torch
        rows.append(("cuda", f"{torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU visible"))
    except Exception:
        rows.append(("cuda", "torch missing"))
    try:
        from ad3d.ops import extension_status
        rows.append(("ops", extension_status(build=args.build)))
    except ImportError:
        rows.append(("ops", "not installed"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _cmd_datasets(args) -> int:
    from ad3d import datasets

    if args.action == "list":
        for cat in datasets.categories(args.format, args.root):
            print(cat)
        return 0
    if args.action == "describe":
        rows = datasets.describe(args.format, args.root)
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'category':<20} {'train':>6} {'valid':>6} {'test':>6}  defects")
        for r in rows:
            defects = ", ".join(f"{k} {v}" for k, v in r.get("defects", {}).items())
            print(f"{r['category']:<20} {r.get('train', 0):>6} {r.get('validation', 0):>6} {r.get('test', 0):>6}  {defects}")
        return 0
    rows = datasets.verify(args.format, args.root, progress=not args.quiet)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'category':<20} {'scans':>6} {'anomalous':>9} {'problems':>8}")
        for r in rows:
            print(f"{r['category']:<20} {r['scans']:>6} {r['anomalous']:>9} {len(r['problems']):>8}")
        for r in rows:
            for p in r["problems"]:
                print(f"  {r['category']}: {p}")
    bad = sum(len(r["problems"]) for r in rows)
    print(f"{len(rows)} categories, {sum(r['scans'] for r in rows)} scans, {bad} problems", file=sys.stderr)
    return 0 if bad == 0 and rows else 2


def _cmd_synth(args) -> int:
    from pathlib import Path

    from ad3d.errors import ConfigError
    from ad3d.synth import GEOMETRIC, make_dataset
    from ad3d.synth.dataset import MESH_SUFFIXES

    from ad3d.io import SCAN_SUFFIXES

    src = Path(args.source)
    if src.is_dir():
        sources = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in MESH_SUFFIXES + SCAN_SUFFIXES)
    elif src.is_file():
        sources = [src]
    else:
        raise ConfigError(f"synth source '{src}' does not exist")
    defects = tuple(args.defects.split(",")) if args.defects else GEOMETRIC
    unknown = set(defects) - set(GEOMETRIC)
    if unknown:
        raise ConfigError(f"unknown defect(s) {', '.join(sorted(unknown))}; expected {', '.join(GEOMETRIC)}")
    summary = make_dataset(sources, args.format, Path(args.out), points=args.points, train=args.train,
                           good=args.good, per_defect=args.per_defect, defects=defects, seed=args.seed,
                           progress=not args.quiet)
    total = sum(v["train"] + v["good"] + v["anomalous"] for v in summary.values())
    print(f"wrote {len(summary)} categories, {total} scans ({args.format} layout) to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ad3d", description="Find defects in 3D scans of manufactured parts.")
    parser.add_argument("--version", action="version", version=f"ad3d {__version__}")
    parser.add_argument("--debug", action="store_true", help="show a full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    doctor = sub.add_parser("doctor", help="report versions, compiled ops and GPU")
    doctor.add_argument("--build", action="store_true", help="build the compiled ops now if needed")
    doctor.set_defaults(run=_cmd_doctor)

    ds = sub.add_parser("datasets", help="list, describe or verify a local copy of a benchmark")
    ds.add_argument("action", choices=("list", "describe", "verify"))
    ds.add_argument("root", help="dataset root folder")
    ds.add_argument("--format", required=True, help="mvtec3d | real3d | anomaly-shapenet | folder")
    ds.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ds.add_argument("--quiet", action="store_true", help="no progress bar")
    ds.set_defaults(run=_cmd_datasets)

    synth = sub.add_parser("synth", help="write a semi-synthetic dataset with planted defects")
    synth.add_argument("source", help="a mesh or scan file, or a folder of them (one category each)")
    synth.add_argument("--format", required=True, choices=("anomaly-shapenet", "real3d"))
    synth.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    synth.add_argument("--points", type=int, default=4096, help="points per scan")
    synth.add_argument("--train", type=int, default=4, help="normal training scans per category")
    synth.add_argument("--good", type=int, default=4, help="normal test scans per category")
    synth.add_argument("--per-defect", type=int, default=2, help="test scans per defect type")
    synth.add_argument("--defects", help="comma-separated subset of bulge,dent,crack,hole,cut")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(run=_cmd_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except Ad3dError as e:
        if args.debug:
            raise
        print(f"ad3d: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ad3d: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # permission denied, disk full, ...: the user's to fix
        if args.debug:
            raise
        print(f"ad3d: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug in ad3d: still no traceback unless asked for
        if args.debug:
            raise
        print(f"ad3d: unexpected error ({type(e).__name__}: {e}); rerun with --debug for a traceback",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
