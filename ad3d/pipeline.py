"""The work of every command, callable without the CLI: fit and calibrate (`fit_and_save`, `fit_category`),
evaluate (`evaluate`, `evaluate_dataset`), score files to result folders (`score_files`, from ad3d.score_files)."""

from __future__ import annotations

import math
import time
import warnings

from ad3d import datasets
from ad3d.detectors import Detector, create
from ad3d.errors import DatasetError
from ad3d.report import mean_row, peak_mb
from ad3d.score_files import ScoreSummary, score_files

__all__ = [
    "ScoreSummary",
    "evaluate",
    "evaluate_dataset",
    "fit_and_save",
    "fit_category",
    "fit_joint",
    "score_files",
    "scorer",
]

EVAL_COLUMNS = [
    ("category", "category", ""),
    ("object_auroc", "O-AUROC", ".3f"),
    ("point_auroc", "P-AUROC", ".3f"),
    ("aupro", "AUPRO", ".3f"),
    ("ap", "P-AP", ".3f"),
    ("fit_s", "fit s", ".1f"),
    ("score_ms", "score ms", ".0f"),
    ("peak_mb", "peak MB", ".0f"),
    ("learned", "learned", "d"),
]
MIN_HELD_OUT = 8  # held-out normal scans below which a cheap detector is calibrated out of fold
METRIC_KEYS = ["object_auroc", "point_auroc", "aupro", "ap", "fit_s", "score_ms"]


def normal_splits(root, format: str, category: str, load_options: dict | None = None) -> tuple[list, list]:
    """(training scans, held-out normal scans for calibration): the validation split when the dataset has
    one, else the last quarter of the training scans (at least one, when there are two or more)."""
    train = list(datasets.load(format, root, category, "train", **(load_options or {})))
    try:
        held_out = list(datasets.load(format, root, category, "validation", **(load_options or {})))
    except DatasetError:
        held_out = []
    if not held_out and len(train) >= 2:
        n = max(1, math.ceil(len(train) / 4))
        train, held_out = train[:-n], train[-n:]
    return train, held_out


def fit_category(
    detector: str,
    params: dict,
    root,
    format: str,
    category: str,
    *,
    fpr: float = 0.01,
    progress: bool = False,
    load_options: dict | None = None,
) -> tuple[Detector, dict]:
    """Fit on the normal training scans and calibrate thresholds on held-out normal scans (normal_splits);
    with fewer than MIN_HELD_OUT of those, a detector that refits in seconds is fitted on every normal scan and
    calibrated out of fold over them (`Detector.calibrate_out_of_fold`): no score then comes from a model that saw
    its scan, so holding scans out of the model would only leave it fewer to learn from."""
    train, held_out = normal_splits(root, format, category, load_options)
    det = create(detector, **params)
    out_of_fold = det.cheap_refit and len(held_out) < MIN_HELD_OUT and len(train) + len(held_out) >= 2
    if out_of_fold:
        train, held_out = train + held_out, []
    start = time.perf_counter()
    det.fit(train, progress=progress)
    fit_s = time.perf_counter() - start
    if out_of_fold:
        det.calibrate_out_of_fold(train, fpr=fpr)
    elif held_out:
        det.calibrate(held_out, fpr=fpr)
    scans = det.calibration_["scans"] if det.calibration_ else 0
    return det, {"fit_s": fit_s, "train_scans": len(train), "calibration_scans": scans}


def describe_calibration(det: Detector) -> str:
    """One line on what the thresholds rest on, with a warning when the normal scans are too few to estimate
    the false-reject rate asked (a 1 % rate needs about 100: below that the threshold is the largest normal
    score seen)."""
    if det.threshold_ is None or not det.calibration_:
        return "not calibrated (too few normal scans)"
    cal = det.calibration_
    line = f"thresholds from {cal['scans']} normal scans ({cal['method']}; reject {det.threshold_:.4g})"
    needed = math.ceil(1 / cal["fpr"]) if cal.get("fpr") else 0
    if cal["scans"] < needed:
        line += (
            f"; warning: a {cal['fpr']:.0%} false-reject rate needs about {needed} normal scans to be read off "
            f"their scores; from {cal['scans']} the scan thresholds are prediction bounds (Student's t), wide "
            f"on purpose: expect more scans to land in review until more good scans are added"
        )
    return line


def fit_joint(
    detector: str,
    params: dict,
    root,
    format: str,
    categories: list[str],
    *,
    fpr: float = 0.01,
    progress: bool = False,
    load_options: dict | None = None,
) -> tuple[dict[str, Detector], dict]:
    """One fit over every category at once (a detector with `fit_joint`, e.g. lsfa's shared adaptor), each
    category's detector calibrated on its own held-out normal scans. fit_s is the whole joint fit."""
    from ad3d.errors import ConfigError

    det = create(detector, **params)
    if not hasattr(det, "fit_joint"):
        raise ConfigError(f"{detector} has no joint fit over categories; fit it per category")
    splits = {cat: normal_splits(root, format, cat, load_options) for cat in categories}
    start = time.perf_counter()
    fitted = det.fit_joint({cat: train for cat, (train, _) in splits.items()}, progress=progress)
    fit_s = time.perf_counter() - start
    for cat, (_, held_out) in splits.items():
        if held_out:
            fitted[cat].calibrate(held_out, fpr=fpr)
    return fitted, {"fit_s": fit_s, "train_scans": sum(len(t) for t, _ in splits.values())}


def evaluate_category(
    det: Detector, root, format: str, category: str, progress: bool = False, load_options: dict | None = None
) -> dict:
    """The metric row for one category's test split."""
    return score_split(det, root, format, category, progress=progress, load_options=load_options)[0]


def score_split(
    det: Detector, root, format: str, category: str, progress: bool = False, load_options: dict | None = None
) -> tuple[dict, list, list]:
    """Score one category's test split: (metric row, test scans, results)."""
    from ad3d.metrics import evaluate

    test = list(datasets.load(format, root, category, "test", **(load_options or {})))
    problems = [p for s in test for p in datasets.gt_problems(s, s.meta.get("gt_path"))]
    if problems:  # the metrics below rest on this GT: say so, as `ad3d datasets verify` would
        warnings.warn(
            f"{category}: {len(problems)} ground-truth problem(s) that `ad3d datasets verify` reports; "
            f"the metrics rest on them. First: {problems[0]}",
            stacklevel=2,
        )
    start = time.perf_counter()
    results = det.score_many(test, progress=progress)
    score_ms = (time.perf_counter() - start) / len(test) * 1e3
    row = {
        "category": category,
        **evaluate(results, test),
        "score_ms": score_ms,
        "test_scans": len(test),
        "peak_mb": peak_mb(),
        "learned": det.n_learned(),
        "gt_problems": len(problems),
    }
    return row, test, results


def evaluate_dataset(
    detector: str,
    params: dict,
    root,
    format: str,
    categories: list[str] | None = None,
    progress: bool = False,
    load_options: dict | None = None,
    joint: bool = False,
) -> list[dict]:
    """Fit and evaluate per category (`fit_and_score`, as every `ad3d bench` job does); one row each. A
    zero-shot detector is not fitted: it scores each category's test scans together, as its protocol
    prescribes. joint: one fit over all the categories (fit_joint), then each category scored; fit_s is the
    joint fit's."""
    from tqdm import tqdm

    cats = categories or datasets.categories(format, root)
    if not cats:
        raise DatasetError(f"no categories found in '{root}' ({format})")
    if joint:
        fitted, info = fit_joint(detector, params, root, format, cats, progress=progress, load_options=load_options)
        return [
            {**score_split(fitted[cat], root, format, cat, load_options=load_options)[0], **info, "joint": True}
            for cat in cats
        ]
    rows = []
    for cat in tqdm(cats, desc=f"eval {detector}", unit="category", disable=not progress):
        started = time.perf_counter()
        row = fit_and_score(detector, params, root, format, cat, load_options=load_options)[0]
        rows.append({"category": cat, **row, "wall_s": time.perf_counter() - started})
    return rows


def fit_and_score(
    detector: str,
    params: dict,
    root,
    format: str,
    category: str,
    *,
    fpr: float = 0.01,
    load_options: dict | None = None,
) -> tuple[dict, Detector, list, list]:
    """One category end to end, as `ad3d eval` and every `ad3d bench` job run it: fit on the normal scans
    and calibrate (a zero-shot detector: nothing to fit), then score the test split. Returns (the metric
    row with the fit's facts and the thresholds, the detector, the test scans, their results)."""
    from ad3d.detectors.registry import detector_class

    if detector_class(detector).learning_type == "zero-shot":  # test scans score each other
        det, info = create(detector, **params).fit([]), {"fit_s": 0.0, "train_scans": 0, "calibration_scans": 0}
    else:
        det, info = fit_category(detector, params, root, format, category, fpr=fpr, load_options=load_options)
    row, test, results = score_split(det, root, format, category, load_options=load_options)
    return {**row, **info, "threshold": det.threshold_, "thresholds": det.thresholds()}, det, test, results


def with_mean(rows: list[dict]) -> list[dict]:
    """The rows plus a final `mean` row over the categories."""
    return rows + [mean_row(rows, METRIC_KEYS)]


# --- what each command does, callable without the CLI ---------------------------------------------------
def check_output(path, want: str) -> None:
    """Refuse, before any work, an output that names a folder where a file goes ("file"), or the reverse."""
    from pathlib import Path

    from ad3d.errors import ConfigError

    p = Path(path)
    if want == "file" and p.is_dir():
        raise ConfigError(
            f"'{p}' is a folder; name the model file to write (e.g. {p / 'model.ad3d'}). Nothing was fitted"
        )
    if want == "folder" and p.exists() and not p.is_dir():
        raise ConfigError(f"'{p}' is a file, not a folder; nothing was done")


def load_options(format: str | None, preprocess: str = "none") -> dict:
    """Dataset-loader options (preprocess="plane": MVTec 3D-AD background removal), checked against the
    format before any work."""
    from ad3d.errors import ConfigError

    if preprocess == "none":
        return {}
    if format != "mvtec3d":
        raise ConfigError(
            f"preprocess {preprocess} is for organised scans (mvtec3d); the {format} loader takes no option preprocess"
        )
    return {"preprocess": preprocess}


def fit_and_save(
    detector: str,
    params: dict,
    out,
    *,
    data=None,
    format: str | None = None,
    category: str | None = None,
    joint: bool = False,
    fpr: float = 0.01,
    preprocess: str = "none",
    progress: bool = False,
) -> str:
    """What `ad3d fit` does: fit one category (or, joint, one fit over several: a model per category in the
    folder `out`), calibrate, save; without data, a detector that measures against a given reference is fitted
    on nothing else. Returns the line that says what was done."""
    from pathlib import Path

    from ad3d.errors import ConfigError

    if data is None:
        det = create(detector, **params)
        if not det.fits_without_scans():
            raise ConfigError(
                "--data is required: only a detector that measures against a given reference fits without good "
                "scans (--detector deviation --param reference=part.stl --param tolerance=...)"
            )
        check_output(out, "file")
        det.fit([]).save(out)
        return f"{detector} fitted on no scans (reference {det.reference}); {describe_calibration(det)}; saved to {out}"
    if format is None:
        raise ConfigError("--format is required with --data (mvtec3d | real3d | anomaly-shapenet | folder)")
    options = load_options(format, preprocess)
    if joint:
        check_output(out, "folder")
        cats = category.split(",") if category else datasets.categories(format, data)
        fitted, info = fit_joint(detector, params, data, format, cats, fpr=fpr, progress=progress, load_options=options)
        Path(out).mkdir(parents=True, exist_ok=True)
        for cat, det in fitted.items():
            det.save(Path(out) / f"{cat}.ad3d")
        return (
            f"{detector} fitted jointly on {info['train_scans']} scans of {len(cats)} "
            f"{'category' if len(cats) == 1 else 'categories'} in {info['fit_s']:.1f} s; "
            f"one model per category in {out}"
        )
    if not category:
        raise ConfigError("--category is required (or --joint to fit every category at once)")
    check_output(out, "file")
    det, info = fit_category(detector, params, data, format, category, fpr=fpr, progress=progress, load_options=options)
    det.save(out)
    return (
        f"{detector} fitted on {info['train_scans']} scans of '{category}' in {info['fit_s']:.1f} s; "
        f"{describe_calibration(det)}; saved to {out}"
    )


def evaluate(
    data,
    format: str,
    *,
    model=None,
    detector: str | None = None,
    params: dict | None = None,
    categories: list[str] | None = None,
    joint: bool = False,
    out=None,
    preprocess: str = "none",
    progress: bool = False,
) -> tuple[str, list[dict]]:
    """What `ad3d eval` does: a saved model on its category's test split, or a detector fitted (zero-shot: not
    fitted) per category; the mean row added over several; eval.json and eval.md written to `out` if given.
    Returns (what was evaluated, the rows)."""
    import json
    from pathlib import Path

    from ad3d.detectors import load
    from ad3d.errors import ConfigError
    from ad3d.report import markdown_table

    if out is not None:
        check_output(out, "folder")
    options = load_options(format, preprocess)
    if model is not None:
        det = load(model)
        category = (categories or [det.category_])[0]
        if not category:
            raise ConfigError("the model does not record its category: pass --category")
        rows, name = [evaluate_category(det, data, format, category, progress, options)], det.name
    elif detector:
        rows = evaluate_dataset(detector, params or {}, data, format, categories, progress, options, joint)
        name = detector + (" (joint fit)" if joint else "")
    else:
        raise ConfigError("pass a saved MODEL or --detector NAME to fit per category")
    table = with_mean(rows) if len(rows) > 1 else rows
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "eval.json").write_text(json.dumps({"detector": name, "rows": table}, indent=2))
        (Path(out) / "eval.md").write_text(f"# {name} on {format}\n\n" + markdown_table(table, EVAL_COLUMNS))
    return name, table


def scorer(model_or_scan, scans: list, detector: str | None = None, params: dict | None = None) -> tuple:
    """(the detector, the inputs) for `ad3d score`: a saved model and the scans, or a zero-shot detector by
    name, the first argument then being a scan too (the scans score each other)."""
    from ad3d.detectors import load
    from ad3d.errors import ConfigError

    if detector:
        det = create(detector, **(params or {}))
        if det.learning_type != "zero-shot":
            raise ConfigError(f"--detector {detector} needs training: fit a model with `ad3d fit` and pass it")
        inputs = [model_or_scan, *scans]
    else:
        det, inputs = load(model_or_scan), list(scans)
    if not inputs:
        raise ConfigError("no scans given: ad3d score MODEL SCAN... (or --detector musc SCAN...)")
    return det, inputs
