"""The `ad3d` command. Library errors become one line on stderr and exit code 2 (--debug: traceback)."""

from __future__ import annotations

import argparse
import importlib.metadata
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
            module = importlib.import_module(mod)
            rows.append((mod, getattr(module, "__version__", None) or importlib.metadata.version(mod)))
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
    from ad3d.errors import DatasetError

    if args.format is None:
        args.format = datasets.guess_format(args.root)
        print(f"format: {args.format} (from the folders; --format chooses)", file=sys.stderr)
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
            counts = " ".join(f"{r.get(split, 0):>6}" for split in ("train", "validation", "test"))
            print(f"{r['category']:<20} {counts}  {defects}")
        return 0
    rows = datasets.verify(args.format, args.root, progress=not args.quiet)
    if not rows:
        raise DatasetError(
            f"no {args.format} categories found in '{args.root}': nothing to verify "
            f"(is it the dataset's root folder? `ad3d datasets list` shows what is found)"
        )
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
    from ad3d.io import SCAN_SUFFIXES
    from ad3d.synth import DEFECTS, make_dataset
    from ad3d.synth.acquisition import Acquisition
    from ad3d.synth.dataset import MESH_SUFFIXES

    src = Path(args.source)
    if src.is_dir():
        sources = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in MESH_SUFFIXES + SCAN_SUFFIXES)
    elif src.is_file():
        sources = [src]
    else:
        raise ConfigError(f"synth source '{src}' does not exist")
    defects = tuple(args.defects.split(",")) if args.defects else None
    unknown = set(defects or ()) - set(DEFECTS)
    if unknown:
        raise ConfigError(f"unknown defect(s) {', '.join(sorted(unknown))}; expected {', '.join(DEFECTS)}")
    acquisition = Acquisition(
        pose_degrees=args.pose_degrees,
        pose_shift=args.pose_shift,
        noise=args.noise,
        density=args.density,
        partial=args.partial,
    )
    summary = make_dataset(
        sources,
        args.format,
        Path(args.out),
        points=args.points,
        train=args.train,
        good=args.good,
        per_defect=args.per_defect,
        defects=defects,
        seed=args.seed,
        image_size=args.image_size,
        acquisition=acquisition,
        defect_size=args.defect_size,
        defect_height=args.defect_height,
        progress=not args.quiet,
    )
    total = sum(v["train"] + v["good"] + v["anomalous"] for v in summary.values())
    print(f"wrote {len(summary)} categories, {total} scans ({args.format} layout) to {args.out}")
    return 0


def _params(detector: str, args) -> dict:
    """--preset's parameters overridden by each --param."""
    from ad3d.detectors import preset
    from ad3d.pipeline import parse_params

    return {**(preset(detector, args.preset) if args.preset else {}), **parse_params(args.param)}


def _check_out(path: str, want: str) -> None:
    """Refuse, before any work, an --out that names a folder where a file goes, or the reverse."""
    from pathlib import Path

    from ad3d.errors import ConfigError

    p = Path(path)
    if want == "file" and p.is_dir():
        raise ConfigError(
            f"--out '{p}' is a folder; name the model file to write (e.g. {p / 'model.ad3d'}). Nothing was fitted"
        )
    if want == "folder" and p.exists() and not p.is_dir():
        raise ConfigError(f"--out '{p}' is a file, not a folder; nothing was done")


def _cmd_fit(args) -> int:
    from ad3d.errors import ConfigError
    from ad3d.pipeline import describe_calibration, fit_category

    params = _params(args.detector, args)
    if args.seed is not None:
        params.setdefault("seed", args.seed)
    if args.data is None:
        return _fit_without_scans(args, params)
    if args.format is None:
        raise ConfigError("--format is required with --data (mvtec3d | real3d | anomaly-shapenet | folder)")
    if args.joint:
        return _fit_joint(args, params)
    if not args.category:
        raise ConfigError("--category is required (or --joint to fit every category at once)")
    _check_out(args.out, "file")
    det, info = fit_category(
        args.detector,
        params,
        args.data,
        args.format,
        args.category,
        fpr=args.fpr,
        progress=not args.quiet,
        load_options=_load_options(args),
    )
    det.save(args.out)
    calibrated = describe_calibration(det)
    print(
        f"{args.detector} fitted on {info['train_scans']} scans of '{args.category}' in {info['fit_s']:.1f} s; "
        f"{calibrated}; saved to {args.out}"
    )
    return 0


def _fit_without_scans(args, params: dict) -> int:
    """`ad3d fit` with no --data: a detector that measures against a given reference (deviation with a CAD mesh
    and a tolerance) is fitted on nothing else."""
    from ad3d.detectors import create
    from ad3d.errors import ConfigError
    from ad3d.pipeline import describe_calibration

    det = create(args.detector, **params)
    if not det.fits_without_scans():
        raise ConfigError(
            "--data is required: only a detector that measures against a given reference fits without good scans "
            "(--detector deviation --param reference=part.stl --param tolerance=...)"
        )
    _check_out(args.out, "file")
    det.fit([])
    det.save(args.out)
    print(
        f"{args.detector} fitted on no scans (reference {det.reference}); {describe_calibration(det)}; "
        f"saved to {args.out}"
    )
    return 0


def _fit_joint(args, params: dict) -> int:
    """`ad3d fit --joint`: one fit over the categories, one model per category in the --out folder."""
    from pathlib import Path

    from ad3d import datasets
    from ad3d.pipeline import fit_joint

    _check_out(args.out, "folder")
    cats = args.category.split(",") if args.category else datasets.categories(args.format, args.data)
    fitted, info = fit_joint(
        args.detector,
        params,
        args.data,
        args.format,
        cats,
        fpr=args.fpr,
        progress=not args.quiet,
        load_options=_load_options(args),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for cat, det in fitted.items():
        det.save(out / f"{cat}.ad3d")
    print(
        f"{args.detector} fitted jointly on {info['train_scans']} scans of {len(cats)} "
        f"{'category' if len(cats) == 1 else 'categories'} in "
        f"{info['fit_s']:.1f} s; one model per category in {out}"
    )
    return 0


def _load_options(args) -> dict:
    """Dataset-loader options from the command line (--preprocess plane: MVTec 3D-AD background removal),
    checked against the format before any work."""
    from ad3d.errors import ConfigError

    if args.preprocess == "none":
        return {}
    if args.format != "mvtec3d":
        raise ConfigError(
            f"--preprocess {args.preprocess} is for organised scans (mvtec3d); the {args.format} "
            "loader takes no option preprocess"
        )
    return {"preprocess": args.preprocess}


def _cmd_score(args) -> int:
    from ad3d.detectors import load
    from ad3d.errors import ConfigError
    from ad3d.report import summary_line
    from ad3d.score_files import score_files

    _check_out(args.out, "folder")
    if args.detector:  # a zero-shot detector needs no model: the inputs score each other
        from ad3d.detectors import create

        det = create(args.detector, **_params(args.detector, args))
        if det.learning_type != "zero-shot":
            raise ConfigError(f"--detector {args.detector} needs training: fit a model with `ad3d fit` and pass it")
        inputs = [args.model, *args.scans]
    else:
        det, inputs = load(args.model), args.scans
    if not inputs:
        raise ConfigError("no scans given: ad3d score MODEL SCAN... (or --detector musc SCAN...)")

    def said(path, stem, result) -> None:
        if not args.quiet:
            print(summary_line(path.name, result) + (f" -> {stem}.json" if stem != path.stem else ""))

    summary = score_files(
        det,
        inputs,
        args.out,
        force=args.force,
        preprocess=args.preprocess,
        on_result=said,
        on_error=lambda path, line: print(f"ad3d: {line}", file=sys.stderr),
        raise_errors=args.debug,
    )
    if summary.batch_note and not args.quiet:
        print(summary.batch_note)
    if summary.failed:
        total = len(summary.failed) + len(summary.scored)
        print(
            f"{len(summary.scored)} of {total} scans scored, {len(summary.failed)} failed (see the lines above); "
            f"results in {args.out}",
            file=sys.stderr,
        )
        return 2
    return 1 if args.fail_on_anomaly and summary.rejected else 0


def _cmd_eval(args) -> int:
    import json
    from pathlib import Path

    from ad3d.detectors import load
    from ad3d.errors import ConfigError
    from ad3d.pipeline import EVAL_COLUMNS, evaluate_category, evaluate_dataset, with_mean
    from ad3d.report import format_table, markdown_table

    if args.out:
        _check_out(args.out, "folder")
    if args.model:
        det = load(args.model)
        category = args.category or det.category_
        if not category:
            raise ConfigError("the model does not record its category: pass --category")
        rows = [
            evaluate_category(
                det, args.data, args.format, category, progress=not args.quiet, load_options=_load_options(args)
            )
        ]
        name = det.name
    else:
        if not args.detector:
            raise ConfigError("pass a saved MODEL or --detector NAME to fit per category")
        cats = args.category.split(",") if args.category else None
        from ad3d.detectors.registry import detector_class

        if detector_class(args.detector).learning_type == "zero-shot" and not args.quiet:
            print(
                f"{args.detector} is zero-shot: nothing is fitted, each category's test scans score each other "
                "(the train split is not read)"
            )
        rows = evaluate_dataset(
            args.detector,
            _params(args.detector, args),
            args.data,
            args.format,
            cats,
            progress=not args.quiet,
            load_options=_load_options(args),
            joint=args.joint,
        )
        name = args.detector + (" (joint fit)" if args.joint else "")
    table = with_mean(rows) if len(rows) > 1 else rows
    print(f"\n{name} on {args.data} ({args.format})")
    print(format_table(table, EVAL_COLUMNS))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps({"detector": name, "rows": table}, indent=2))
        (out / "eval.md").write_text(f"# {name} on {args.format}\n\n" + markdown_table(table, EVAL_COLUMNS))
        print(f"written: {out / 'eval.json'}, {out / 'eval.md'}")
    return 0


def _cmd_view(args) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from ad3d.detectors.regions import extract_regions
    from ad3d.errors import ConfigError
    from ad3d.io import read_scan
    from ad3d.viewers import render

    path = Path(args.input)
    scan = read_scan(path)
    report = path.with_suffix(".json")
    meta = json.loads(report.read_text()) if report.is_file() else {}
    if args.scores:
        scores = np.load(args.scores) if args.scores.endswith(".npy") else np.loadtxt(args.scores)
    else:
        scores = scan.fields.get("score")
    threshold = args.threshold if args.threshold is not None else meta.get("point_threshold")
    gt = None
    if args.gt:
        gt = scan.labels if scan.labels is not None else scan.fields.get("label")
        if gt is None:
            raise ConfigError(
                f"'{path}' has no per-point ground truth (no label property): a result keeps the labels only "
                "of a scan that carried them (a PLY with a label property, a dataset scan scored through the "
                "library); drop --gt for this one"
            )
    deviations = scan.fields.get("deviation")
    regions = (
        extract_regions(scan.points, scores, threshold, deviations=deviations)
        if scores is not None and threshold is not None
        else None
    )
    interactive = not (args.screenshot or args.html)
    render(
        scan,
        scores,
        threshold=threshold,
        gt=gt,
        regions=regions,
        deviations=deviations,
        screenshot=args.screenshot,
        html=args.html,
        show=interactive,
        title=path.name,
    )
    for out in filter(None, (args.screenshot, args.html)):
        print(f"written: {out}")
    return 0


def _cmd_demo(args) -> int:
    from ad3d.demo import run_demo

    run_demo(args.out, meshes=args.meshes, quiet=args.quiet)
    return 0


def _cmd_pretrain(args) -> int:
    from ad3d.features.pretrain import pretrain_point_mae

    done = pretrain_point_mae(
        args.folder,
        args.out,
        preset=args.preset,
        seed=args.seed,
        iterations=args.iterations,
        per_source=args.per_source,
        progress=not args.quiet,
    )
    print(
        f"point-mae ({args.preset}): {done['clouds']} clouds, {done['iterations']} steps in {done['seconds']:.0f} s, "
        f"Chamfer loss {done['loss_first']:.4f} -> {done['loss_last']:.4f}; weights: {done['out']}"
    )
    return 0


def _cmd_weights(args) -> int:
    import json

    from ad3d.features.weights import status

    rows = status()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        if row["problem"]:
            state, found = "unusable", f"{row['file']}: {row['problem']}"
        elif row["sha256"]:
            state, found = "usable ", f"{row['file']} ({row['size'] / 2**20:.1f} MiB, sha256 {row['sha256'][:16]})"
        else:
            state, found = "absent ", f"missing: {row['file']} (official: {row['source']})"
        print(f"{row['name']:<20} {state} {found}")
    return 0


def _cmd_bench(args) -> int:
    from ad3d.bench import run_sweep
    from ad3d.bench.report import write_report
    from ad3d.bench.spec import DataSource, Sweep, load_spec, parse_detector
    from ad3d.errors import ConfigError

    if args.action == "report":
        page, md = write_report(args.out)
        print(f"written: {page}, {md}")
        return 0
    if args.spec:
        sweep = load_spec(args.spec)
    else:
        if not (args.detector and args.data and args.format):
            raise ConfigError("bench run needs --spec FILE, or --detector, --data and --format")
        sweep = Sweep(
            detectors=[parse_detector(d) for d in args.detector],
            datasets=[
                DataSource(args.data, args.format, args.category.split(",") if args.category else None, args.preprocess)
            ],
        )
    if args.seeds:
        sweep.seeds = [int(s) for s in args.seeds.split(",")]
    try:
        counts = run_sweep(
            sweep, args.out, workers=args.workers, ray=args.ray, retry_failed=args.retry_failed, progress=not args.quiet
        )
    except KeyboardInterrupt:
        print(
            f"ad3d: interrupted; the finished jobs are kept in {args.out}/results.jsonl and the same command "
            "runs the rest",
            file=sys.stderr,
        )
        return 130
    print(
        f"{counts['jobs']} jobs: {counts['skipped']} finished before, {counts['ran']} run now "
        f"({counts['failed']} failed); results in {args.out}/results.jsonl"
    )
    if not args.no_report:
        page, md = write_report(args.out)
        print(f"report: {page}, {md}")
    return 2 if counts["failed"] else 0


def _add_detector_options(parser, detector_help: str, default: str | None = None) -> None:
    """--detector, --param and --preset, declared once for fit, score and eval."""
    from ad3d import available

    names = ", ".join(available())
    parser.add_argument(
        "--detector",
        default=default,
        metavar="NAME",
        help=f"{detector_help}: {names}" + (f" (default {default})" if default else ""),
    )
    parser.add_argument("--param", action="append", metavar="KEY=VALUE", help="detector parameter (repeatable)")
    parser.add_argument("--preset", help="the detector's named parameter set: cpu | paper (see the detector's docs)")


def _share_range(text: str) -> tuple[float, float]:
    """'LOW,HIGH' (two numbers) as a range; one number: that value alone."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (two numbers), got {text!r}") from None
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (two numbers), got {text!r}")
    return (values[0], values[-1])


def _add_quiet(parser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-scan lines")


def _add_preprocess(parser) -> None:
    parser.add_argument(
        "--preprocess",
        choices=("none", "plane"),
        default="none",
        help="plane: remove the background plane of organised scans (MVTec 3D-AD)",
    )


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
    ds.add_argument("--format", help="mvtec3d | real3d | anomaly-shapenet | folder (default: told by the folders)")
    ds.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ds.add_argument("--quiet", action="store_true", help="no progress bar")
    ds.set_defaults(run=_cmd_datasets)

    fit = sub.add_parser("fit", help="fit a detector on the normal scans of one category and save it")
    _add_detector_options(fit, "the detector to fit", default="patchcore")
    fit.add_argument("--data", help="dataset root (none: deviation with a reference mesh and a tolerance)")
    fit.add_argument("--format", help="mvtec3d | real3d | anomaly-shapenet | folder")
    fit.add_argument("--category", help="the category (with --joint: comma-separated, default all)")
    fit.add_argument(
        "--out", required=True, help="model file to write (with --joint: a folder, one model per category)"
    )
    fit.add_argument("--joint", action="store_true", help="one fit over all categories (lsfa: one shared adaptor)")
    fit.add_argument("--fpr", type=float, default=0.01, help="false-positive rate of the reject threshold")
    fit.add_argument("--seed", type=int, help="random seed of the detector (default: its own, 0)")
    _add_preprocess(fit)
    _add_quiet(fit)
    fit.set_defaults(run=_cmd_fit)

    score = sub.add_parser("score", help="score scans with a saved model: PLY + JSON report per scan")
    score.add_argument("model", help="a model from `ad3d fit` (or, with --detector, the first scan)")
    score.add_argument("scans", nargs="*", help="scan files or folders of them")
    _add_detector_options(score, "a zero-shot detector instead of a model, the scans scoring each other")
    score.add_argument("--out", required=True, help="output folder")
    score.add_argument("--fail-on-anomaly", action="store_true", help="exit 1 when a scan is rejected")
    score.add_argument("--force", action="store_true", help="score even scans far off the training size")
    _add_preprocess(score)
    _add_quiet(score)
    score.set_defaults(run=_cmd_score)

    ev = sub.add_parser("eval", help="metric table of a saved model, or of a detector fitted per category")
    ev.add_argument("model", nargs="?")
    _add_detector_options(ev, "fit this detector per category instead of loading a model")
    ev.add_argument("--data", required=True)
    ev.add_argument("--format", required=True)
    ev.add_argument("--category", help="category (comma-separated with --detector; default: all)")
    ev.add_argument("--out", help="folder for eval.json and eval.md")
    ev.add_argument("--joint", action="store_true", help="one fit over all categories (lsfa: one shared adaptor)")
    _add_preprocess(ev)
    _add_quiet(ev)
    ev.set_defaults(run=_cmd_eval)

    view = sub.add_parser("view", help="show a scored scan (PLY from `ad3d score`) or any scan")
    view.add_argument("input", help="scan or result PLY; a sibling .json report gives the threshold")
    view.add_argument("--scores", help="scores file (.npy or one value per line), if the scan has none")
    view.add_argument("--threshold", type=float, help="grey out points scored below this")
    view.add_argument("--gt", action="store_true", help="outline the ground-truth defect points")
    view.add_argument("--screenshot", help="write a PNG (2x2 views) off-screen instead of a window")
    view.add_argument("--html", help="write a self-contained interactive HTML page")
    view.set_defaults(run=_cmd_view)

    demo = sub.add_parser("demo", help="synthesise a small dataset, fit the baseline, print the table")
    demo.add_argument("--out", default="runs/demo", help="output folder")
    demo.add_argument("--meshes", help="folder of meshes to use instead of the shipped demo parts")
    _add_quiet(demo)
    demo.set_defaults(run=_cmd_demo)

    synth = sub.add_parser("synth", help="write a semi-synthetic dataset with planted defects")
    synth.add_argument("source", help="a mesh or scan file, or a folder of them (one category each)")
    synth.add_argument("--format", required=True, choices=("anomaly-shapenet", "real3d", "mvtec3d"))
    synth.add_argument("--image-size", type=int, default=128, help="pixels per side (mvtec3d layout)")
    synth.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    synth.add_argument("--points", type=int, default=4096, help="points per scan (the mean, see --density)")
    synth.add_argument("--train", type=int, default=4, help="normal training scans per category")
    synth.add_argument("--good", type=int, default=4, help="normal test scans per category")
    synth.add_argument("--per-defect", type=int, default=2, help="test scans per defect type")
    synth.add_argument(
        "--defects",
        help="comma-separated subset of bulge,dent,crack,hole,cut,concavity,broken,"
        "scratch,combo,contamination (contamination: mvtec3d only)",
    )
    synth.add_argument(
        "--defect-size",
        type=_share_range,
        default=(0.01, 0.08),
        metavar="LOW,HIGH",
        help="share of a scan's points each defect covers (default 0.01,0.08; subtle: 0.002,0.01)",
    )
    synth.add_argument(
        "--defect-height",
        type=_share_range,
        metavar="LOW,HIGH",
        help="bulge, dent, concavity and scratch heights as a share of the part's size (default: "
        "proportional to the defect's radius; subtle: 0.002,0.008)",
    )
    synth.add_argument("--seed", type=int, default=0)
    real = synth.add_argument_group("acquisition (realistic by default; 0 turns an effect off)")
    real.add_argument("--pose-degrees", type=float, default=5.0, help="rotation per scan, up to this many degrees")
    real.add_argument("--pose-shift", type=float, default=0.01, help="shift per scan, up to this share of the size")
    real.add_argument("--noise", type=float, default=0.001, help="sensor noise sigma, as a share of the size")
    real.add_argument("--density", type=float, default=0.2, help="point counts vary by up to +-this share")
    real.add_argument(
        "--partial",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="single-view test scans in the real3d layout",
    )
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(run=_cmd_synth)

    pretrain = sub.add_parser("pretrain", help="self-supervised pretraining of a point backbone on unlabelled scans")
    pretrain.add_argument("backbone", choices=("point-mae",))
    pretrain.add_argument("folder", help="folder of scans or meshes (searched recursively)")
    pretrain.add_argument("--out", required=True, help="weights file to write (.safetensors)")
    pretrain.add_argument("--preset", default="cpu", choices=("cpu", "paper"))
    pretrain.add_argument("--iterations", type=int, help="training steps (default: the preset's)")
    pretrain.add_argument("--per-source", type=int, default=8, help="clouds drawn from each file")
    pretrain.add_argument("--seed", type=int, default=0)
    _add_quiet(pretrain)
    pretrain.set_defaults(run=_cmd_pretrain)

    bench = sub.add_parser("bench", help="sweep detectors x categories x seeds (resumable; pool or Ray) and report")
    bench.add_argument("action", choices=("run", "report"), help="run: the sweep's unfinished jobs; report: the page")
    bench.add_argument("--out", required=True, help="the sweep's folder: results.jsonl, details/, report.html")
    bench.add_argument("--spec", help="sweep file (TOML): detectors, datasets, seeds (see ad3d.bench.spec)")
    bench.add_argument("--detector", action="append", metavar="NAME[:PRESET]", help="a detector (repeatable)")
    bench.add_argument("--data", help="dataset root")
    bench.add_argument("--format", help="dataset format")
    bench.add_argument("--category", help="comma-separated (default: all)")
    _add_preprocess(bench)
    bench.add_argument("--seeds", help="comma-separated seeds (default 0; overrides the spec's)")
    bench.add_argument("--workers", type=int, help="parallel jobs (default: one per CPU; 1: in this process)")
    bench.add_argument("--ray", metavar="local|auto|ADDRESS", help="run the jobs on Ray (pip install 'ad3d[bench]')")
    bench.add_argument("--retry-failed", action="store_true", help="run failed jobs again (finished ones never)")
    bench.add_argument("--no-report", action="store_true")
    _add_quiet(bench)
    bench.set_defaults(run=_cmd_bench)

    weights = sub.add_parser(
        "weights",
        help="which pretrained backbones are usable here (files, sizes, sha256)",
        description="Pretrained weights are never downloaded: each backbone reads its file from the folder that "
        "the AD3D_WEIGHTS environment variable names (or the path a detector's *_weights parameter gives). "
        "This lists, per backbone, the file it expects there and whether it is present.",
    )
    weights.add_argument("--json", action="store_true", help="print JSON instead of a table")
    weights.set_defaults(run=_cmd_weights)
    return parser


def _warn_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Library warnings as one `ad3d: warning:` line (with --debug, Python's own format)."""
    print(f"ad3d: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.debug:
        warnings.showwarning = _warn_line
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
        print(f"ad3d: unexpected error ({type(e).__name__}: {e}); rerun with --debug for a traceback", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
