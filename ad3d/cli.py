"""The `ad3d` command. Library errors become one line on stderr and exit code 2 (--debug: traceback)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ad3d import __version__
from ad3d.errors import Ad3dError


def _cmd_doctor(args) -> int:
    from ad3d.doctor import doctor_rows

    rows = doctor_rows(build=args.build)
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{key:<{width}}  {value}" for key, value in rows))
    return 0


def _cmd_datasets(args) -> int:
    from ad3d import datasets
    from ad3d.errors import DatasetError
    from ad3d.report import describe_lines, verify_lines

    if args.format is None:
        args.format = datasets.guess_format(args.root)
        print(f"format: {args.format} (from the folders; --format chooses)", file=sys.stderr)
    if args.action == "list":
        print("\n".join(datasets.categories(args.format, args.root)))
        return 0
    if args.action == "describe":
        rows = datasets.describe(args.format, args.root)
        print(json.dumps(rows, indent=2) if args.json else "\n".join(describe_lines(rows)))
        return 0
    rows = datasets.verify(args.format, args.root, progress=not args.quiet)
    if not rows:
        raise DatasetError(
            f"no {args.format} categories found in '{args.root}': nothing to verify "
            f"(is it the dataset's root folder? `ad3d datasets list` shows what is found)"
        )
    print(json.dumps(rows, indent=2) if args.json else "\n".join(verify_lines(rows)))
    bad = sum(len(r["problems"]) for r in rows)
    print(f"{len(rows)} categories, {sum(r['scans'] for r in rows)} scans, {bad} problems", file=sys.stderr)
    return 0 if bad == 0 else 2


def _cmd_synth(args) -> int:
    from ad3d.synth import make_dataset
    from ad3d.synth.acquisition import Acquisition

    summary = make_dataset(
        args.source,
        args.format,
        args.out,
        defects=tuple(args.defects.split(",")) if args.defects else None,
        acquisition=Acquisition(**_pick(args, "pose_degrees", "pose_shift", "noise", "density", "partial")),
        progress=not args.quiet,
        **_pick(args, "points", "train", "good", "per_defect", "seed", "image_size", "defect_size", "defect_height"),
    )
    total = sum(v["train"] + v["good"] + v["anomalous"] for v in summary.values())
    print(f"wrote {len(summary)} categories, {total} scans ({args.format} layout) to {args.out}")
    return 0


def _pick(args, *names: str) -> dict:
    """The named options, as keyword arguments of the library function of the same names."""
    return {name: getattr(args, name) for name in names}


def _params(args) -> dict:
    """--preset's parameters overridden by each --param (and --seed, where the command has one)."""
    from ad3d.detectors.registry import parse_params, preset

    params = {**preset(args.detector, args.preset), **parse_params(args.param)}
    if getattr(args, "seed", None) is not None:
        params.setdefault("seed", args.seed)
    return params


def _cmd_fit(args) -> int:
    from ad3d.pipeline import fit_and_save

    options = _pick(args, "data", "format", "category", "joint", "fpr", "preprocess")
    print(fit_and_save(args.detector, _params(args), args.out, progress=not args.quiet, **options))
    return 0


def _cmd_score(args) -> int:
    from ad3d.pipeline import check_output, scorer
    from ad3d.report import summary_line
    from ad3d.score_files import score_files

    check_output(args.out, "folder")
    det, inputs = scorer(args.model, args.scans, args.detector, _params(args) if args.detector else None)

    def said(path, stem, result) -> None:
        if not args.quiet:
            print(summary_line(path.name, result) + (f" -> {stem}.json" if stem != path.stem else ""))

    def failed(path, line: str) -> None:
        print(f"ad3d: {line}", file=sys.stderr)

    options = {**_pick(args, "force", "preprocess", "timings"), "progress": not args.quiet}
    summary = score_files(det, inputs, args.out, on_result=said, on_error=failed, raise_errors=args.debug, **options)
    if summary.batch_note and not args.quiet:
        print(summary.batch_note)
    if summary.failed:
        print(summary.failures_line(args.out), file=sys.stderr)
        return 2
    return 1 if args.fail_on_anomaly and summary.rejected else 0


def _cmd_eval(args) -> int:
    from ad3d.detectors.registry import detector_class
    from ad3d.pipeline import EVAL_COLUMNS, evaluate
    from ad3d.report import format_table

    if args.detector and not (args.model or args.quiet) and detector_class(args.detector).learning_type == "zero-shot":
        print(f"{args.detector} is zero-shot: nothing is fitted, each category's test scans score each other")
    name, table = evaluate(
        args.data,
        args.format,
        params=_params(args) if args.detector else None,
        categories=args.category.split(",") if args.category else None,
        progress=not args.quiet,
        **_pick(args, "model", "detector", "joint", "out", "preprocess"),
    )
    print(f"\n{name} on {args.data} ({args.format})")
    print(format_table(table, EVAL_COLUMNS))
    if args.out:
        print(f"written: {Path(args.out) / 'eval.json'}, {Path(args.out) / 'eval.md'}")
    return 0


def _cmd_view(args) -> int:
    from ad3d.viewers import view_file

    for out in view_file(args.input, **_pick(args, "scores", "threshold", "gt", "screenshot", "html")):
        print(f"written: {out}")
    return 0


def _cmd_demo(args) -> int:
    from ad3d.demo import run_demo

    run_demo(args.out, meshes=args.meshes, quiet=args.quiet)
    return 0


def _cmd_pretrain(args) -> int:
    from ad3d.features.pretrain import pretrain_point_mae

    options = _pick(args, "preset", "seed", "iterations", "per_source")
    done = pretrain_point_mae(args.folder, args.out, progress=not args.quiet, **options)
    print(
        f"point-mae ({args.preset}): {done['clouds']} clouds, {done['iterations']} steps in {done['seconds']:.0f} s, "
        f"Chamfer loss {done['loss_first']:.4f} -> {done['loss_last']:.4f}; weights: {done['out']}"
    )
    return 0


def _cmd_weights(args) -> int:
    from ad3d.features.weights import status, status_lines

    rows = status()
    print(json.dumps(rows, indent=2) if args.json else "\n".join(status_lines(rows)))
    return 0


def _cmd_bench(args) -> int:
    from ad3d.bench import run_sweep
    from ad3d.bench.report import write_report
    from ad3d.bench.spec import sweep_from

    if args.action == "report":
        print("written: {}, {}".format(*write_report(args.out)))
        return 0
    sweep = sweep_from(
        args.spec,
        detectors=args.detector,
        categories=args.category,
        **_pick(args, "data", "format", "preprocess", "seeds"),
    )
    try:
        counts = run_sweep(sweep, args.out, progress=not args.quiet, **_pick(args, "workers", "ray", "retry_failed"))
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
        print("report: {}, {}".format(*write_report(args.out)))
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


def _add_data_options(parser, required: bool = False, data_help: str = "dataset root") -> None:
    """--data, --format and --category, declared once for fit, eval and bench."""
    parser.add_argument("--data", required=required, help=data_help)
    parser.add_argument("--format", required=required, help="mvtec3d | real3d | anomaly-shapenet | folder")
    parser.add_argument("--category", help="one category, or comma-separated (fit: with --joint; default: all)")


def _shared() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The options many commands share, declared once: --quiet; --preprocess (for what reads a dataset)."""
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", action="store_true", help="no progress bars or per-scan lines")
    loading = argparse.ArgumentParser(add_help=False)
    loading.add_argument(
        "--preprocess",
        choices=("none", "plane"),
        default="none",
        help="plane: remove the background plane (MVTec 3D-AD)",
    )
    return quiet, loading


WEIGHTS = (
    "Pretrained weights are never downloaded: each backbone reads its file from the folder that the AD3D_WEIGHTS "
    "environment variable names (or the path a detector's *_weights parameter gives). This lists, per backbone, "
    "the file it expects there and whether it is usable (size, sha256)."
)


def _command(sub, name: str, run, help: str, *parents, **options) -> argparse.ArgumentParser:
    """A subcommand whose parsed arguments go to `run`, with the shared options of `parents`."""
    parser = sub.add_parser(name, help=help, parents=list(parents), **options)
    parser.set_defaults(run=run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    from ad3d.synth.defects import DEFECTS

    parser = argparse.ArgumentParser(prog="ad3d", description="Find defects in 3D scans of manufactured parts.")
    parser.add_argument("--version", action="version", version=f"ad3d {__version__}")
    parser.add_argument("--debug", action="store_true", help="show a full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    quiet, loading = _shared()

    doctor = _command(sub, "doctor", _cmd_doctor, "report versions, compiled ops and GPU")
    doctor.add_argument("--build", action="store_true", help="build the compiled ops now if needed")

    ds = _command(sub, "datasets", _cmd_datasets, "list, describe or verify a local copy of a benchmark", quiet)
    ds.add_argument("action", choices=("list", "describe", "verify"))
    ds.add_argument("root", help="dataset root folder")
    ds.add_argument("--format", help="mvtec3d | real3d | anomaly-shapenet | folder (default: told by the folders)")
    ds.add_argument("--json", action="store_true", help="print JSON instead of a table")

    fit = _command(sub, "fit", _cmd_fit, "fit a detector on one category's normal scans and save it", quiet, loading)
    _add_detector_options(fit, "the detector to fit", default="patchcore")
    _add_data_options(fit, data_help="dataset root (none: deviation with a reference mesh and a tolerance)")
    fit.add_argument("--out", required=True, help="model file to write (--joint: a folder, a model per category)")
    fit.add_argument("--joint", action="store_true", help="one fit over all categories (lsfa: one shared adaptor)")
    fit.add_argument("--fpr", type=float, default=0.01, help="false-positive rate of the reject threshold")
    fit.add_argument("--seed", type=int, help="random seed of the detector (default: its own, 0)")

    score = _command(sub, "score", _cmd_score, "score scans: a PLY + JSON report per scan", quiet, loading)
    score.add_argument("model", help="a model from `ad3d fit` (or, with --detector, the first scan)")
    score.add_argument("scans", nargs="*", help="scan files or folders of them")
    _add_detector_options(score, "a zero-shot detector instead of a model, the scans scoring each other")
    score.add_argument("--out", required=True, help="output folder")
    score.add_argument("--fail-on-anomaly", action="store_true", help="exit 1 when a scan is rejected")
    score.add_argument("--force", action="store_true", help="score even scans far off the training size")
    score.add_argument("--timings", action="store_true", help="add each step's time and peak memory to the JSON")

    ev = _command(sub, "eval", _cmd_eval, "metric table of a model, or of a detector per category", quiet, loading)
    ev.add_argument("model", nargs="?")
    _add_detector_options(ev, "fit this detector per category instead of loading a model")
    _add_data_options(ev, required=True)
    ev.add_argument("--out", help="folder for eval.json and eval.md")
    ev.add_argument("--joint", action="store_true", help="one fit over all categories (lsfa: one shared adaptor)")

    view = _command(sub, "view", _cmd_view, "show a scored scan (PLY from `ad3d score`) or any scan")
    view.add_argument("input", help="scan or result PLY; a sibling .json report gives the threshold")
    view.add_argument("--scores", help="scores file (.npy or one value per line), if the scan has none")
    view.add_argument("--threshold", type=float, help="grey out points scored below this")
    view.add_argument("--gt", action="store_true", help="outline the ground-truth defect points")
    view.add_argument("--screenshot", help="write a PNG (2x2 views) off-screen instead of a window")
    view.add_argument("--html", help="write a self-contained interactive HTML page")

    demo = _command(sub, "demo", _cmd_demo, "synthesise a small dataset, fit, score and print the table", quiet)
    demo.add_argument("--out", default="runs/demo", help="output folder")
    demo.add_argument("--meshes", help="folder of meshes to use instead of the shipped demo parts")

    synth = _command(sub, "synth", _cmd_synth, "write a semi-synthetic dataset with planted defects", quiet)
    synth.add_argument("source", help="a mesh or scan file, or a folder of them (one category each)")
    synth.add_argument("--format", required=True, choices=("anomaly-shapenet", "real3d", "mvtec3d"))
    synth.add_argument("--image-size", type=int, default=128, help="pixels per side (mvtec3d layout)")
    synth.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    synth.add_argument("--points", type=int, default=4096, help="points per scan (the mean, see --density)")
    synth.add_argument("--train", type=int, default=4, help="normal training scans per category")
    synth.add_argument("--good", type=int, default=4, help="normal test scans per category")
    synth.add_argument("--per-defect", type=int, default=2, help="test scans per defect type")
    synth.add_argument("--defects", help=f"comma-separated, of {','.join(DEFECTS)} (contamination: mvtec3d only)")
    share = {"type": _share_range, "metavar": "LOW,HIGH"}
    synth.add_argument("--defect-size", default=(0.01, 0.08), help="share of the points a defect covers", **share)
    synth.add_argument("--defect-height", help="share of the part's size (default: by the defect's radius)", **share)
    synth.add_argument("--seed", type=int, default=0)
    real = synth.add_argument_group("acquisition (realistic by default; 0 turns an effect off)")
    real.add_argument("--pose-degrees", type=float, default=5.0, help="rotation per scan, up to this many degrees")
    real.add_argument("--pose-shift", type=float, default=0.01, help="shift per scan, up to this share of the size")
    real.add_argument("--noise", type=float, default=0.001, help="sensor noise sigma, as a share of the size")
    real.add_argument("--density", type=float, default=0.2, help="point counts vary by up to +-this share")
    real.add_argument("--partial", action=argparse.BooleanOptionalAction, default=True, help="real3d: one-view tests")

    pretrain = _command(sub, "pretrain", _cmd_pretrain, "self-supervised pretraining of a point backbone", quiet)
    pretrain.add_argument("backbone", choices=("point-mae",))
    pretrain.add_argument("folder", help="folder of scans or meshes (searched recursively)")
    pretrain.add_argument("--out", required=True, help="weights file to write (.safetensors)")
    pretrain.add_argument("--preset", default="cpu", choices=("cpu", "paper"))
    pretrain.add_argument("--iterations", type=int, help="training steps (default: the preset's)")
    pretrain.add_argument("--per-source", type=int, default=8, help="clouds drawn from each file")
    pretrain.add_argument("--seed", type=int, default=0)

    bench = _command(sub, "bench", _cmd_bench, "sweep detectors x categories x seeds, and report", quiet, loading)
    bench.add_argument("action", choices=("run", "report"), help="run: the sweep's unfinished jobs; report: the page")
    bench.add_argument("--out", required=True, help="the sweep's folder: results.jsonl, details/, report.html")
    bench.add_argument("--spec", help="sweep file (TOML): detectors, datasets, seeds (see ad3d.bench.spec)")
    bench.add_argument("--detector", action="append", metavar="NAME[:PRESET]", help="a detector (repeatable)")
    _add_data_options(bench)
    bench.add_argument("--seeds", help="comma-separated seeds (default 0; overrides the spec's)")
    bench.add_argument("--workers", type=int, help="parallel jobs (default: one per CPU; 1: in this process)")
    bench.add_argument("--ray", metavar="local|auto|ADDRESS", help="run the jobs on Ray (pip install 'ad3d[bench]')")
    bench.add_argument("--retry-failed", action="store_true", help="run failed jobs again (finished ones never)")
    bench.add_argument("--no-report", action="store_true")

    weights = _command(sub, "weights", _cmd_weights, "which pretrained backbones are usable here", description=WEIGHTS)
    weights.add_argument("--json", action="store_true", help="print JSON instead of a table")
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
    except KeyboardInterrupt:
        print("ad3d: interrupted", file=sys.stderr)
        return 130
    except (Ad3dError, OSError) as e:  # the input's or the machine's (permission denied, disk full): the user's to fix
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
