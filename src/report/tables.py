"""Report a grid from its results.json files (never from W&B).

Writes, beside the cells (or to --out): results.csv (every metric with its stderr and 95% interval),
gap_closed.csv (every trained cell against its base, item by item: delta, interval, p-value, and the
gap closed with its interval), seeds.csv (cells that differ only in the seed, as one point: mean, sd
over seeds, item-level stderr and which dominates), findings.md (a verdict per series and the study's
claims: src/report/verdicts.py), scaling.png (metric vs imitation tokens with error bars, a band
over seeds; base and teacher dashed), model_size.png, style_vs_substance.png and index.html tying
them together; prints the tables and the claims.

    python -m src.report multirun/demo --teacher conf/teacher/demo.yaml
    python -m src.report multirun/a multirun/b      # several grids merged (written to --out, or beside them)

The gap closed is the study's headline quantity: (imitation - base) / (teacher - base), per metric,
with teacher scores from a file (e.g. the study's ChatGPT numbers, conf/teacher/chatgpt_paper.yaml).
A results.json written before uncertainty was recorded still reports: its intervals read "unknown".
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from src.io import write_text_atomic
from src.report.html import render_page
from src.report.plots import plot_model_size, plot_scaling, plot_style_vs_substance
from src.report.stats import comparisons, interval_text, p_text, points
from src.report.verdicts import STYLE_PREFIXES, headline, write_findings
from src.results import Results, failed_cells

STYLE_METRICS = ["judge/win_rate", "style/style_score", "toy_style/style_score"]  # the first present is the x of style-vs-substance


def load_results(root: Path | list[Path]) -> list[Results]:
    """Every results.json under root (or several roots: grids merged; a cell in two of them counts
    once), any schema version, by model size, model, source, tokens and seed. A file that is not JSON,
    or is JSON but not a results record, is skipped with a warning naming it."""
    rows = []
    roots = [root] if isinstance(root, Path) else list(root)
    for path in [p for r in roots for p in sorted(Path(r).rglob("results.json"))]:
        try:
            rows.append((path, Results.read(path)))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            print(f"warning: skipping unreadable {path}: {err}", file=sys.stderr)
        except (KeyError, TypeError, AttributeError) as err:  # valid JSON, but not the fields of a record
            print(f"warning: skipping {path}: not a results record ({type(err).__name__}: {err})", file=sys.stderr)
    copies: dict[str, list[tuple[Path, Results]]] = {}
    for path, r in rows:
        copies.setdefault(r.run_id, []).append((path, r))
    unique = [merge_copies(found) for found in copies.values()]
    unique.sort(key=lambda r: (r.model_parameters or 0, r.axes.model, r.axes.data_source, r.tokens.total, r.axes.seed))
    return unique


def merge_copies(found: list[tuple[Path, Results]]) -> Results:
    """One cell found in several grids (a shared base cell, re-scored in one of them with another
    benchmark): the copy scored on the most benchmarks, with every benchmark only another copy has
    added. A benchmark the copies disagree on keeps the fullest copy's values, with a warning."""
    def scored(r: Results) -> set[str]:
        return set(r.benchmarks) | {k.partition("/")[0] for k in r.metrics}

    def metrics_of(r: Results, name: str) -> dict[str, float]:
        return {k: v for k, v in r.metrics.items() if k.partition("/")[0] == name}

    found = sorted(found, key=lambda pr: -len(scored(pr[1])))  # stable: the first path wins a tie
    (first_path, merged), others = found[0], found[1:]
    for path, other in others:
        for name in sorted(scored(other)):
            if name not in scored(merged):
                merged.metrics.update(metrics_of(other, name))
                if name in other.benchmarks:
                    merged.benchmarks[name] = other.benchmarks[name]
            elif metrics_of(other, name) != metrics_of(merged, name):
                print(f"warning: {path} and {first_path} (run_id {merged.run_id}) differ on {name}: "
                      f"keeping {first_path}'s", file=sys.stderr)
    return merged


def load_teacher(path: Path | None) -> dict | None:
    """A teacher's reference scores: YAML or JSON {"name": str, "metrics": {"nq/em": 0.31, ...}}."""
    if path is None:
        return None
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise SystemExit(f"error: {path}: a teacher file needs 'name' and a 'metrics' mapping")
    return {"name": str(data.get("name", path.stem)), "metrics": {k: float(v) for k, v in data["metrics"].items()}}


def metric_names(rows: list[Results]) -> list[str]:
    names: list[str] = []
    for row in rows:
        names += [k for k in row.metrics if k not in names]
    return names


def with_stderr(r: Results, metric: str) -> str:
    """'0.717±0.058'; '0.717±?' when the cell's file predates uncertainty (unknown, not zero)."""
    if metric not in r.metrics:
        return "-"
    entry = r.uncertainty(metric)
    se = entry.get("stderr") if entry else None
    return f"{r.metrics[metric]:.3f}±{se:.3f}" if se is not None else f"{r.metrics[metric]:.3f}±?"


def table(rows: list[Results], metrics: list[str] | None = None,
          intervals: bool = False) -> tuple[list[str], list[list[str]]]:
    """A row per cell. `intervals`: each metric's stderr next to it (console), else the plain value
    (the CSV, which has the stderr and interval in their own columns)."""
    metrics = metrics or metric_names(rows)
    header = ["model", "source", "amount", "seed", "tokens", "loss_tokens", "train_s", *metrics]
    body = []
    for r in rows:
        if intervals:
            values = [with_stderr(r, m) for m in metrics]
        else:
            values = [f"{r.metrics[m]:.3f}" if m in r.metrics else "-" for m in metrics]
        train_s = (r.timings_s or {}).get("train_s")
        body.append([r.axes.model, r.axes.data_source, r.axes.amount_label, str(r.axes.seed), str(r.tokens.total),
                     str(r.tokens.loss_bearing), f"{train_s:.0f}" if train_s is not None else "-", *values])
    return header, body


def csv_table(rows: list[Results]) -> tuple[list[str], list[list[str]]]:
    """results.csv: each metric, then its stderr, interval and method ('unknown' for an older file)."""
    metrics = metric_names(rows)
    header, body = table(rows, metrics)
    extra_header = [f"{m} {part}" for m in metrics for part in ("stderr", "ci95_low", "ci95_high", "method")]
    for r, line in zip(rows, body, strict=True):
        for m in metrics:
            entry = r.uncertainty(m) if m in r.metrics else None
            if m not in r.metrics:
                line += ["-"] * 4
            elif entry is None:
                line += ["unknown"] * 4
            else:
                ci = entry.get("ci95") or ["", ""]
                se = entry.get("stderr")
                line += ["" if se is None else f"{se:.4f}", *(("" if c == "" else f"{c:.4f}") for c in ci),
                         str(entry.get("method", ""))]
    return header + extra_header, body


def seeds_table(rows: list[Results], metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    """Cells that differ only in the seed, as one point: mean +- sd over seeds beside the item-level
    stderr of one cell, and which spread dominates. Empty when no point has two seeds."""
    groups = [p for p in points(rows) if len(p.cells) > 1]
    header = ["model", "source", "amount", "seeds", "metric", "mean±sd", "mean", "sd_over_seeds", "item_stderr",
              "item_ci95", "dominates"]
    body = []
    for p in groups:
        for m in metrics:
            if len(p.values(m)) < 2:
                continue
            se, sd = p.item_stderr(m), p.seed_sd(m)
            body.append([p.model, p.source, p.amount_label, ",".join(map(str, p.seeds)), m,
                         f"{p.mean(m):.3f}±{sd:.3f}", f"{p.mean(m):.3f}", f"{sd:.3f}",
                         "unknown" if se is None else f"{se:.3f}", interval_text(p.item_ci95(m)),
                         p.dominant(m) or "unknown"])
    return header, body


def paired_table(rows: list[Results], metrics: list[str], teacher: dict | None) -> tuple[list[str], list[list[str]]]:
    """gap_closed.csv: each trained cell against its base (same model, same seed where there is one),
    item by item: delta with its paired 95% interval and p-value; the gap closed with its interval."""
    header = ["model", "source", "amount", "seed", "metric", "base", "cell", "delta", "delta_ci95", "p", "test",
              "gap_closed", "gap_closed_ci95"]
    body = []
    for c in comparisons(rows, metrics, teacher):
        body.append([c.cell.axes.model, c.cell.axes.data_source, c.cell.axes.amount_label, str(c.cell.axes.seed),
                     c.metric, f"{c.base.metrics[c.metric]:.3f}", f"{c.cell.metrics[c.metric]:.3f}",
                     f"{c.delta:+.3f}", interval_text(c.ci95, signed=True),
                     p_text(c.p), c.method,
                     "n/a" if c.gap is None else f"{c.gap:+.2f}",
                     "n/a" if c.gap is None else interval_text(c.gap_ci95, signed=True)])
    return header, body


def gap_closed(rows: list[Results], teacher: dict | None) -> tuple[list[str], list[list[str]]]:
    """(imitation - base) / (teacher - base) for every trained cell and every metric the teacher has,
    with its 95% interval from the paired bootstrap ('[?]' when the cells have no per-item outcomes).
    1 = the whole gap closed, 0 = no change, < 0 = imitation made it worse."""
    if not teacher:
        return [], []
    metrics = [m for m in metric_names(rows) if m in teacher["metrics"]]
    header = ["model", "source", "amount", "seed", *metrics]
    found = {(id(c.cell), c.metric): c for c in comparisons(rows, metrics, teacher)}
    body = []
    for r in rows:
        if r.tokens.total == 0:
            continue
        values = []
        for m in metrics:
            c = found.get((id(r), m))
            if c is None:
                values.append("-")
            elif c.gap is None:
                values.append("n/a")
            else:
                ci = f" [{c.gap_ci95[0]:+.2f}, {c.gap_ci95[1]:+.2f}]" if c.gap_ci95 else " [?]"
                values.append(f"{c.gap:+.2f}{ci}")
        body.append([r.axes.model, r.axes.data_source, r.axes.amount_label, str(r.axes.seed), *values])
    return header, body


def format_table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    return "\n".join(lines)


def _csv(header: list[str], body: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *body])
    return buffer.getvalue()


def default_out(roots: list[Path]) -> Path:
    """One grid: its own folder. Several: a folder beside the first, named for all of them."""
    if len(roots) == 1:
        return roots[0]
    return roots[0].parent / ("merged_" + "+".join(r.name for r in roots))


def report(root: Path | list[Path], out: Path | None = None, teacher_path: Path | None = None) -> str:
    roots = [root] if isinstance(root, Path) else [Path(r) for r in root]
    where = ", ".join(map(str, roots))
    rows = load_results(roots)
    if not rows:
        raise SystemExit(f"error: no results.json under {where}")
    out = out or default_out(roots)
    out.mkdir(parents=True, exist_ok=True)
    teacher = load_teacher(teacher_path)
    metrics = metric_names(rows)
    main_metrics = [m for m in metrics if headline(m)]
    header, body = table(rows, main_metrics, intervals=True)
    write_text_atomic(out / "results.csv", _csv(*csv_table(rows)))
    gap_header, gap_body = gap_closed(rows, teacher)
    pair_header, pair_body = paired_table(rows, metrics, teacher)
    if pair_body:
        write_text_atomic(out / "gap_closed.csv", _csv(pair_header, pair_body))
    seed_header, seed_body = seeds_table(rows, metrics)
    if seed_body:
        write_text_atomic(out / "seeds.csv", _csv(seed_header, seed_body))
    series, sizes, claims, _ = write_findings(out, rows, metrics, teacher)
    failed = [f for r in roots for f in failed_cells(r)]

    figures = {"scaling.png": "Each metric against imitation tokens, with 95% intervals over items (a band: "
                              "mean +- sd over seeds, where there are several). Dashed: the base model (0 tokens), "
                              "shaded by its interval; dotted: the teacher."}
    plot_scaling(rows, main_metrics, out / "scaling.png", teacher)
    if len({r.axes.model for r in rows}) > 1:
        plot_model_size(rows, [m for m in main_metrics if not m.startswith(STYLE_PREFIXES)], out / "model_size.png")
        figures["model_size.png"] = "Each capability metric against base-model size."
    style = next((m for m in STYLE_METRICS if m in metrics), None)
    substance = [m for m in main_metrics if not m.startswith(STYLE_PREFIXES)]
    if style and substance:
        plot_style_vs_substance(rows, style, substance, out / "style_vs_substance.png")
        figures["style_vs_substance.png"] = (f"Every cell as a point: {style} (how much it sounds like the teacher) "
                                             "against capability. Labels are token budgets.")
    headline_pairs = [row for row in pair_body if headline(row[4])]
    write_text_atomic(out / "index.html", render_page(
        where, rows, (header, body), (gap_header, gap_body), teacher, figures,
        seeds=(seed_header, [row for row in seed_body if headline(row[4])]),
        pairs=(pair_header, headline_pairs), claims=claims, series=series, failed=failed))
    text = "each metric ± its stderr over items (±?: unknown, a file from before uncertainty was recorded)\n"
    text += format_table(header, body)
    if seed_body:
        text += "\n\nseeds as replicates: mean, sd over seeds, item-level stderr of one cell, which dominates\n"
        keep = [0, 1, 2, 3, 4, 5, 8, 9, 10]  # mean±sd, item stderr and interval, which dominates
        text += format_table([seed_header[i] for i in keep],
                             [[row[i] for i in keep] for row in seed_body if headline(row[4])])
    if headline_pairs:
        text += "\n\neach trained cell vs its base, item by item (delta, paired 95% interval, p)\n"
        text += format_table(pair_header[:11], [row[:11] for row in headline_pairs])
    if gap_body:
        text += f"\n\ngap closed vs teacher '{teacher['name']}': (imitation - base) / (teacher - base) [95%]\n"
        text += format_table(gap_header, gap_body)
    text += "\n\nthe study's claims (findings.md has every series):\n"
    text += "\n".join(f"  {c.name}: {c.verdict}" for c in claims)
    if failed:
        text += f"\n\n{len(failed)} cell(s) did not finish: " + ", ".join(f["job_dir"] for f in failed)
    written = ", ".join(["results.csv", *(["gap_closed.csv"] if pair_body else []),
                         *(["seeds.csv"] if seed_body else []), "findings.md", *figures, "index.html"])
    return f"{text}\n\n{len(rows)} cells from {where}\nwrote {written} in {out}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", type=Path, nargs="+",
                        help="sweep directories (multirun/<sweep>) or any folders of cells; several are merged")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the files go (default: the root; for several, merged_<a>+<b> beside the first)")
    parser.add_argument("--teacher", type=Path, default=None, help="YAML/JSON of the teacher's scores")
    args = parser.parse_args()
    missing = [str(r) for r in args.roots if not r.is_dir()]
    if missing:
        raise SystemExit(f"error: no such sweep folder: {', '.join(missing)}")
    print(report(args.roots, args.out, args.teacher))


if __name__ == "__main__":
    main()
