"""The sweep report: one self-contained HTML page (tables, figures and thumbnails inlined) and the same
tables in Markdown, from the results table and the job details alone."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from ad3d.bench.store import ResultsStore
from ad3d.errors import ConfigError

METRICS = [("object_auroc", "O-AUROC"), ("point_auroc", "P-AUROC"), ("aupro", "AUPRO"), ("ap", "P-AP")]
COSTS = [("fit_s", "fit s", ".1f"), ("score_ms", "score ms", ".0f"), ("peak_mb", "peak MB", ".0f")]


def summarise(rows: list[dict]) -> list[dict]:
    """Per detector: each metric averaged over categories within a seed, then mean and spread (sample
    standard deviation) over seeds; costs averaged over jobs. Failed jobs are counted, not averaged."""
    out = []
    for label in labels_in_order(rows):
        mine = [r for r in rows if r["label"] == label]
        ok = [r for r in mine if r["status"] == "ok"]
        seeds = sorted({r["seed"] for r in ok})
        entry = {"label": label, "jobs": len(mine), "failed": len(mine) - len(ok), "seeds": seeds}
        for key, _ in METRICS:
            per_seed = [_mean([r.get(key) for r in ok if r["seed"] == s]) for s in seeds]
            entry[key] = spread([v for v in per_seed if v is not None])
        for key, _, _ in COSTS:
            entry[key] = _mean([r.get(key) for r in ok])
        entry["learned"] = _mean([r.get("learned") for r in ok])
        out.append(entry)
    return out


def per_category(rows: list[dict], key: str) -> dict[tuple[str, str], tuple[float, float | None]]:
    """(label, category) -> mean and spread of `key` over seeds."""
    ok = [r for r in rows if r["status"] == "ok" and r.get(key) is not None]
    cells = {}
    for label in labels_in_order(rows):
        for cat in categories_in_order(rows):
            values = [r[key] for r in ok if r["label"] == label and r["category"] == cat]
            if values:
                cells[(label, cat)] = spread(values)
    return cells


def spread(values: list[float]) -> tuple[float, float | None] | None:
    """(mean, sample standard deviation), the deviation None for a single value."""
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None


def per_dataset_labels(rows: list[dict]) -> list[dict]:
    """The rows, each label suffixed with its dataset's folder name when the sweep ran on more than one
    dataset, so that every table summarises a detector on one dataset, never averages across them."""
    if len({r.get("data") for r in rows}) < 2:
        return rows
    return [{**r, "label": f"{r['label']} @ {Path(str(r.get('data'))).name}"} for r in rows]


def labels_in_order(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["label"] for r in rows))


def categories_in_order(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["category"] for r in rows))


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _pm(cell, fmt: str = ".3f") -> str:
    if cell is None:
        return "-"
    mean, sd = cell
    return f"{mean:{fmt}}" if sd is None else f"{mean:{fmt}} ± {sd:{fmt}}"


def _num(value, fmt: str) -> str:
    return "-" if value is None else f"{value:{fmt}}"


# --- tables (Markdown and HTML from the same cells) ---------------------------------------------------------
def summary_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    head = ["detector", "seeds", *[h for _, h in METRICS], *[h for _, h, _ in COSTS], "learned", "jobs ok"]
    body = [
        [
            s["label"],
            str(len(s["seeds"])),
            *[_pm(s[k]) for k, _ in METRICS],
            *[_num(s[k], f) for k, _, f in COSTS],
            _num(s["learned"], ",.0f"),
            f"{s['jobs'] - s['failed']}/{s['jobs']}",
        ]
        for s in summarise(rows)
    ]
    return head, body


def category_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    labels = labels_in_order(rows)
    o, p = per_category(rows, "object_auroc"), per_category(rows, "point_auroc")
    head = ["category", *[f"{label} O / P" for label in labels]]
    body = [
        [cat, *[f"{_pm(o.get((label, cat)))} / {_pm(p.get((label, cat)))}" for label in labels]]
        for cat in categories_in_order(rows)
    ]
    return head, body


def jobs_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    head = [
        "detector",
        "category",
        "seed",
        "status",
        "O-AUROC",
        "P-AUROC",
        "AUPRO",
        "fit s",
        "score ms",
        "peak MB",
        "key",
        "error",
    ]
    order = {label: i for i, label in enumerate(labels_in_order(rows))}
    body = [
        [
            r["label"],
            r["category"],
            str(r["seed"]),
            r["status"],
            _num(r.get("object_auroc"), ".3f"),
            _num(r.get("point_auroc"), ".3f"),
            _num(r.get("aupro"), ".3f"),
            _num(r.get("fit_s"), ".1f"),
            _num(r.get("score_ms"), ".0f"),
            _num(r.get("peak_mb"), ".0f"),
            r["key"],
            r.get("error", ""),
        ]
        for r in sorted(rows, key=lambda r: (r["category"], order[r["label"]], r["seed"]))
    ]
    return head, body


def markdown(head: list[str], body: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in body]
    return "\n".join(lines) + "\n"


def html_table(head: list[str], body: list[list[str]]) -> str:
    """An HTML table; in a table with a status column, failed jobs' rows are marked (drawn red)."""
    status = head.index("status") if "status" in head else None
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join(
        ('<tr class="failed">' if status is not None and r[status] == "error" else "<tr>")
        + "".join(f"<td>{html.escape(c)}</td>" for c in r)
        + "</tr>"
        for r in body
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


# --- figures ------------------------------------------------------------------------------------------------
def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plt():
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("the report's figures need matplotlib: pip install 'ad3d[bench]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_bars(rows: list[dict]) -> str:
    """O-AUROC and P-AUROC per category, one bar per detector, error bars over seeds."""
    plt = _plt()
    labels, cats = labels_in_order(rows), categories_in_order(rows)
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 1.3 * len(cats) * max(1, len(labels)) / 3), 6.5), sharex=True)
    width = 0.8 / len(labels)
    for ax, (key, name) in zip(axes, METRICS[:2]):
        cells = per_category(rows, key)
        for i, label in enumerate(labels):
            got = [cells.get((label, c)) for c in cats]
            means = [g[0] if g else np.nan for g in got]
            errs = [g[1] or 0 if g else 0 for g in got]
            ax.bar(
                np.arange(len(cats)) + (i - (len(labels) - 1) / 2) * width,
                means,
                width,
                yerr=errs,
                capsize=2,
                label=label,
            )
        ax.set_ylabel(name)
        ax.set_ylim(0.3, 1.0)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=min(len(labels), 5), fontsize=8, loc="lower left")
    axes[1].set_xticks(np.arange(len(cats)), cats, rotation=20, ha="right")
    return _png(fig)


def figure_curves(rows: list[dict], store: ResultsStore, curve: str) -> str | None:
    """ROC (object level) or PRO (FPR up to 0.3) per category, one line per detector, the mean over seeds."""
    plt = _plt()
    cats, labels = categories_in_order(rows), labels_in_order(rows)
    ok = [r for r in rows if r["status"] == "ok"]
    cols = min(3, len(cats))
    fig, axes = plt.subplots(
        -(-len(cats) // cols), cols, figsize=(4 * cols, 3.4 * -(-len(cats) // cols)), squeeze=False
    )
    drawn = False
    for ax, cat in zip(axes.ravel(), cats):
        for label in labels:
            found = [store.load_details(r["key"]) for r in ok if r["label"] == label and r["category"] == cat]
            found = [d for d in found if curve in d]
            if not found:
                continue
            ax.plot(found[0]["fpr"], np.mean([d[curve] for d in found], axis=0), label=label, lw=1.3)
            drawn = True
        ax.set_title(cat, fontsize=9)
        ax.set_xlim(0, 1 if curve == "roc_tpr" else 0.3)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("FPR", fontsize=8)
        ax.set_ylabel("TPR" if curve == "roc_tpr" else "PRO", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(cats) :]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    return _png(fig) if drawn else None


def figure_histograms(rows: list[dict], store: ResultsStore) -> str | None:
    """Object scores of normal and defective test scans per detector (rows) and category (columns), at the
    lowest seed, with the calibrated accept/reject thresholds."""
    plt = _plt()
    labels, cats = labels_in_order(rows), categories_in_order(rows)
    first = {}
    for r in sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["seed"]):
        first.setdefault((r["label"], r["category"]), r)
    if not first:
        return None
    fig, axes = plt.subplots(len(labels), len(cats), figsize=(2.6 * len(cats), 2.0 * len(labels)), squeeze=False)
    for i, label in enumerate(labels):
        for j, cat in enumerate(cats):
            ax = axes[i, j]
            row = first.get((label, cat))
            d = store.load_details(row["key"]) if row else {}
            if "object_scores" in d:
                s, y = d["object_scores"], d["object_labels"]
                bins = np.histogram_bin_edges(s, bins=15)
                ax.hist(s[y == 0], bins=bins, alpha=0.6, color="tab:blue", label="normal")
                ax.hist(s[y == 1], bins=bins, alpha=0.6, color="tab:red", label="defective")
                for name, style in (("review", ":"), ("reject", "--")):
                    t = (row.get("thresholds") or {}).get(name)
                    if t is not None:
                        ax.axvline(t, color="k", ls=style, lw=1, label=name)
            ax.tick_params(labelsize=6)
            if i == 0:
                ax.set_title(cat, fontsize=8)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    axes[0, 0].legend(fontsize=6)
    return _png(fig)


def figure_costs(rows: list[dict]) -> str | None:
    """Mean O-AUROC and P-AUROC against fit time and against score latency, one point per detector."""
    plt = _plt()
    summary = [s for s in summarise(rows) if s["object_auroc"] and s["fit_s"] is not None]
    if not summary:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, (key, name) in zip(
        axes, (("fit_s", "fit time per category, s"), ("score_ms", "score latency per scan, ms"))
    ):
        for i, s in enumerate(summary):
            x = max(s[key], 1e-2)
            color = f"C{i}"
            ax.scatter(x, s["object_auroc"][0], color=color, marker="o")
            if s["point_auroc"]:
                ax.scatter(x, s["point_auroc"][0], color=color, marker="^")
            ax.annotate(s["label"], (x, s["object_auroc"][0]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean AUROC (o: object, ^: point)")
    return _png(fig)


def thumbnails(rows: list[dict], store: ResultsStore, folder: Path) -> list[tuple[str, str, str, str]]:
    """(category, detector, which, data URI) for the best- and worst-scored defective scan of each detector
    and category, at the lowest seed."""
    from ad3d.types import Scan
    from ad3d.viewers import thumbnail

    out = []
    first = {}
    for r in sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["seed"]):
        first.setdefault((r["category"], r["label"]), r)
    for (cat, label), row in first.items():
        d = store.load_details(row["key"])
        for which in ("best", "worst"):
            if f"{which}_points" not in d:
                continue
            png = folder / f"{row['key']}_{which}.png"
            if not png.exists():
                point_threshold = (row.get("thresholds") or {}).get("point")
                thumbnail(
                    Scan(points=d[f"{which}_points"]),
                    d[f"{which}_scores"],
                    png,
                    threshold=point_threshold,
                    gt=d[f"{which}_gt"],
                )
            caption = f"{which}: {d[f'{which}_name']} (object {float(d[f'{which}_object_score']):.3g})"
            out.append((cat, label, caption, "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()))
    return out


# --- the page -----------------------------------------------------------------------------------------------
STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
td:first-child,th:first-child{text-align:left}
tr.failed td{background:#fde2e2}img{max-width:100%}.thumbs{display:flex;flex-wrap:wrap;gap:8px}
.thumbs figure{margin:0;width:240px}.thumbs figcaption{font-size:11px}h2{margin-top:28px}"""


def write_report(folder) -> tuple[Path, Path]:
    """Write `report.html` and `report.md` into the sweep folder; returns their paths."""
    store = ResultsStore(folder)
    rows = per_dataset_labels(store.rows())
    if not rows:
        raise ConfigError(f"no results in '{store.table}': run the sweep first (ad3d bench run --out {folder})")
    spec_path = store.folder / "sweep.json"
    spec = json.loads(spec_path.read_text()) if spec_path.exists() else {}
    tables = {
        "Summary: mean ± spread over seeds": summary_table(rows),
        "Per category: O-AUROC / P-AUROC, mean ± spread over seeds": category_table(rows),
        "Every job": jobs_table(rows),
    }
    failed = sum(r["status"] != "ok" for r in rows)
    intro = (
        f"{len(rows)} jobs ({failed} failed), {len(labels_in_order(rows))} detectors, "
        f"{len(categories_in_order(rows))} categories, seeds {sorted({r['seed'] for r in rows})}. Metrics are "
        "averaged over categories within a seed; the spread is the sample standard deviation over seeds."
    )
    md = store.folder / "report.md"
    md.write_text(
        "# ad3d bench report\n\n"
        + intro
        + "\n\n"
        + "".join(f"## {t}\n\n{markdown(*tab)}\n" for t, tab in tables.items())
    )

    figures = [
        ("O-AUROC and P-AUROC per category", figure_bars(rows)),
        ("Object-level ROC (mean over seeds)", figure_curves(rows, store, "roc_tpr")),
        ("PRO curves up to FPR 0.3 (mean over seeds)", figure_curves(rows, store, "pro")),
        (
            "Object scores of normal and defective scans, with the calibrated thresholds (lowest seed)",
            figure_histograms(rows, store),
        ),
        ("Accuracy against fit time and score latency", figure_costs(rows)),
    ]
    parts = [f"<h1>ad3d bench report</h1><p>{html.escape(intro)}</p>"]
    for title, tab in list(tables.items())[:2]:
        parts.append(f"<h2>{html.escape(title)}</h2>{html_table(*tab)}")
    for title, uri in figures:
        if uri:
            parts.append(f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="{uri}">')
    thumbs = thumbnails(rows, store, store.folder / "thumbnails")
    if thumbs:
        parts.append("<h2>Best- and worst-scored defective scan per category and detector (lowest seed)</h2>")
        for cat in categories_in_order(rows):
            figs = "".join(
                f'<figure><img alt="{html.escape(label)} {html.escape(cap)}" src="{uri}">'
                f"<figcaption>{html.escape(label)}, {html.escape(cap)}</figcaption></figure>"
                for c, label, cap, uri in thumbs
                if c == cat
            )
            parts.append(f'<h3>{html.escape(cat)}</h3><div class="thumbs">{figs}</div>')
    title, tab = list(tables.items())[2]
    parts.append(f"<h2>{html.escape(title)}</h2>{html_table(*tab)}")
    parts.append(f"<h2>Sweep</h2><pre>{html.escape(json.dumps(spec, indent=2))}</pre>")
    page = store.folder / "report.html"
    page.write_text(
        f'<!doctype html><html><head><meta charset="utf-8"><title>ad3d bench report</title>'
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
    return page, md
