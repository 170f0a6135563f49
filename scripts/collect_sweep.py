#!/usr/bin/env python
"""Gather every run of a Hydra multirun directory into one report.

    python scripts/collect_sweep.py SWEEP_DIR [--out DIR] [--title TEXT]
    make report SWEEP=multirun/evaluate/2026-…

A run is any directory under SWEEP_DIR with a ``.hydra/config.yaml``. Its rows come from whichever table
it wrote: ``metrics.csv`` (evaluate.py), ``results.csv`` (benchmark.py) or ``eval_metrics.csv`` (train.py's
evaluation callback; the last evaluated step). Writes to ``--out`` (default ``SWEEP_DIR/report``):

* ``runs.csv``: one row per run × budget: run, overrides, sampler, variant, nfe_budget, nfe_used, metrics…
* ``table.md``: the same as a markdown table (metrics to 4 significant digits);
* ``<sampler>_vs_nfe.png``: one figure per sampler, one panel per metric (FID / FD / SW2 / mode-KL / MMD …,
  whatever the runs hold), one line per variant (the run's overrides other than the sampler and its NFE);
* ``report.html``: self-contained (plots and sample grids inlined as base64 PNG; no network needed): the
  table, the plots, and the sample grids / scatter plots per sampler and NFE.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import math
import re
import sys
from pathlib import Path

import yaml

from momentum_diffusion.metrics import HEADLINE_METRICS

META = {
    "run",
    "overrides",
    "sampler",
    "variant",
    "nfe_budget",
    "nfe_used",
    "step",
    "seconds",
    "gmm",
    "diffusion",
    "noise_floor",
    "mode_kl_floor",
    "tol",
    "config",
}
TABLES = ("metrics.csv", "results.csv", "eval_metrics.csv")
# one color per run (matplotlib's tab10), used for the run swatches in the HTML and the plot lines
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


def find_runs(sweep: Path) -> list[Path]:
    runs = sorted({p.parent.parent for p in sweep.rglob(".hydra/config.yaml")}, key=_natural)
    return [r for r in runs if "report" not in r.relative_to(sweep).parts]


def _natural(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def sampler_name(config: dict) -> str:
    target = ((config or {}).get("sampler") or {}).get("_target_", "")
    return {"predictor_corrector": "pc", "euler_maruyama": "em", "probability_flow": "ode"}.get(
        target.rsplit(".", 1)[-1], target.rsplit(".", 1)[-1] or "checkpoint"
    )


def read_run(run: Path, sweep: Path) -> list[dict]:
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text()) or {}
    overrides_file = run / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    overrides = [o for o in overrides or [] if not o.split("=")[0].lstrip("+~").startswith(("ckpt", "hydra."))]
    table = next((run / name for name in TABLES if (run / name).is_file()), None)
    if table is None:
        return []
    with open(table) as f:
        rows = list(csv.DictReader(f))
    if table.name == "eval_metrics.csv" and rows:  # training evaluations: the last step
        last = max(int(r["step"]) for r in rows)
        rows = [r for r in rows if int(r["step"]) == last]
    name = str(run.relative_to(sweep))
    out = []
    for r in rows:
        row = {
            "run": name,
            "overrides": " ".join(overrides),
            "sampler": r.get("sampler") or sampler_name(config),
            "_overrides": overrides,
        }
        row.update({k: _number(v) for k, v in r.items() if k != "sampler"})
        row["_images"] = preview_for(run, row)
        out.append(row)
    return out


def _number(value):
    try:
        x = float(value)
    except (TypeError, ValueError):
        return value
    return int(x) if x.is_integer() and "." not in str(value) and "e" not in str(value).lower() else x


def preview_for(run: Path, row: dict) -> Path | None:
    """The run's sample grid / scatter at this budget (train: the last step's; evaluate: samples/nfe<N>.png;
    benchmark: samples/nfe<N>.npy, drawn by ``render_arrays``)."""
    nfe = row.get("nfe_budget")
    if (run / "samples" / f"nfe{nfe}.npy").is_file() and not (run / "samples" / f"nfe{nfe}.png").is_file():
        return run / "samples" / f"nfe{nfe}.npy"
    candidates = sorted(run.glob(f"samples/step*_nfe{nfe}.png")) + [run / "samples" / f"nfe{nfe}.png"]
    candidates += [run / "grid.png", run / "scatter.png"]
    return next((p for p in reversed(candidates[:-2]) if p.is_file()), None) or next(
        (p for p in candidates[-2:] if p.is_file()), None
    )


def set_variants(rows: list[dict]) -> None:
    """variant = the overrides that differ between runs, other than the sampler and its NFE (plot lines)."""

    def key(o: str) -> str:
        return o.split("=")[0].lstrip("+~")

    seen: dict[str, set] = {}
    for r in rows:
        for o in r["_overrides"]:
            seen.setdefault(key(o), set()).add(o)
    varying = {
        k for k, v in seen.items() if len(v) > 1 or any(not any(key(o) == k for o in r["_overrides"]) for r in rows)
    }
    for r in rows:
        r["variant"] = " ".join(
            o for o in r["_overrides"] if key(o) in varying and not key(o).startswith(("sampler", "nfe"))
        )


def render_arrays(rows: list[dict], out: Path) -> None:
    """Scatter plots (first two coordinates) of the benchmark's saved samples, for the HTML report."""
    import numpy as np

    for i, r in enumerate(rows):
        src = r.get("_images")
        if src is None or src.suffix != ".npy":
            continue
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        x = np.load(src)
        fig, ax = plt.subplots(figsize=(3, 3))
        ax.scatter(x[:, 0], x[:, 1 if x.shape[1] > 1 else 0], s=1, alpha=0.5)
        ax.set_aspect("equal")
        fig.tight_layout()
        out.mkdir(parents=True, exist_ok=True)
        r["_images"] = out / f"{i:03d}_nfe{r.get('nfe_budget')}.png"
        fig.savefig(r["_images"], dpi=80)
        plt.close(fig)


def metric_columns(rows: list[dict]) -> list[str]:
    keys = list(dict.fromkeys(k for r in rows for k in r if not k.startswith("_")))
    known = [k for k in HEADLINE_METRICS if k in keys]
    other = [k for k in keys if k not in META and k not in known and all(_is_float(r.get(k)) for r in rows)]
    return known + other


def _is_float(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def write_csv(rows: list[dict], path: Path) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r if not k.startswith("_")))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def table_columns(rows: list[dict]) -> list[str]:
    base = ["run", "sampler", "variant", "nfe_budget", "nfe_used"]
    return [c for c in base if any(r.get(c) not in (None, "") for r in rows)] + metric_columns(rows)


def markdown_table(rows: list[dict]) -> str:
    cols = table_columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_per_sampler(rows: list[dict], out: Path, colors: dict) -> list[Path]:
    """<sampler>_vs_nfe.png: a panel per metric, a line per variant, markers coloured by run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    metrics = metric_columns(rows)
    paths = []
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        srows = [r for r in rows if r["sampler"] == sampler]
        if not metrics:
            break
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            for variant in dict.fromkeys(r["variant"] for r in srows):
                pts = sorted(
                    (r["nfe_budget"], r[metric], r["run"])
                    for r in srows
                    if r["variant"] == variant and _is_float(r.get(metric)) and _is_float(r.get("nfe_budget"))
                )
                if not pts:
                    continue
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", color="0.6", lw=1, label=variant or sampler)
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], c=[colors[p[2]] for p in pts], zorder=3, s=30)
            ax.set(xlabel="NFE", ylabel=metric, title=f"{sampler}: {metric}")
            if len({r["nfe_budget"] for r in srows}) > 1:
                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            if len({r["variant"] for r in srows}) > 1:
                ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{_slug(sampler)}_vs_nfe.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text) or "sampler"


def _img(path: Path, alt: str, width: int | None = None) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    size = f' width="{width}"' if width else ""
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"{size}>'


def html_report(rows: list[dict], plots: list[Path], colors: dict, title: str, sweep: Path) -> str:
    cols = table_columns(rows)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            text = html.escape(fmt(r.get(c, "")))
            if c == "run":
                text = f'<span class="swatch" style="background:{colors[r["run"]]}"></span>{text}'
            cells.append(f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    runs = "".join(
        f'<li><span class="swatch big" style="background:{color}"></span><b>{html.escape(run)}</b> '
        f"<code>{html.escape(next(r['overrides'] for r in rows if r['run'] == run))}</code></li>"
        for run, color in colors.items()
    )
    grids = []
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        cells = [
            f'<figure style="border-color:{colors[r["run"]]}">{_img(r["_images"], r["run"], 220)}'
            f"<figcaption>{html.escape(r['run'])}<br>NFE {fmt(r.get('nfe_budget'))}</figcaption></figure>"
            for r in rows
            if r["sampler"] == sampler and r.get("_images") is not None
        ]
        if cells:
            grids.append(f"<h3>{html.escape(sampler)}</h3><div class='grids'>{''.join(cells)}</div>")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; background: #fff; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #eee; }}
.swatch {{ display: inline-block; width: 12px; height: 12px; margin-right: 6px; vertical-align: middle; }}
.swatch.big {{ width: 40px; height: 24px; }}
ul.runs {{ list-style: none; padding: 0; }}
.grids {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; border: 4px solid; padding: 4px; text-align: center; font-size: 12px; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{len(colors)} runs from <code>{html.escape(str(sweep))}</code></p>
<ul class="runs">{runs}</ul>
<h2>Metrics</h2>
<table><tr>{head}</tr>{"".join(body)}</table>
<h2>Metric vs NFE</h2>
{"".join(f"<div>{_img(p, p.stem)}</div>" for p in plots)}
<h2>Samples per sampler and NFE</h2>
{"".join(grids) or "<p>(no sample images in these runs)</p>"}
</body></html>
"""


def collect(sweep: Path, out: Path | None = None, title: str | None = None) -> dict:
    sweep = Path(sweep)
    if not sweep.is_dir():
        raise SystemExit(f"error: sweep directory not found: {sweep}")
    runs = find_runs(sweep)
    rows = [r for run in runs for r in read_run(run, sweep)]
    if not rows:
        raise SystemExit(
            f"error: no runs with metrics under {sweep} (looked for */.hydra/config.yaml next to {', '.join(TABLES)})"
        )
    out = Path(out) if out is not None else sweep / "report"
    out.mkdir(parents=True, exist_ok=True)
    colors = {run: PALETTE[i % len(PALETTE)] for i, run in enumerate(dict.fromkeys(r["run"] for r in rows))}
    set_variants(rows)
    render_arrays(rows, out / "previews")
    write_csv(rows, out / "runs.csv")
    (out / "table.md").write_text(markdown_table(rows))
    plots = plot_per_sampler(rows, out, colors)
    page = html_report(rows, plots, colors, title or f"Sweep report: {sweep.name}", sweep)
    (out / "report.html").write_text(page)
    return {"rows": rows, "runs": list(colors), "colors": colors, "plots": plots, "out": out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="a Hydra multirun directory (hydra.sweep.dir)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default SWEEP/report)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    result = collect(args.sweep, args.out, args.title)
    print(f"{len(result['runs'])} runs, {len(result['rows'])} rows → {result['out'] / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
