"""Report a grid from its results.json files (never from W&B): a table, results.csv, and a PNG of
each metric against imitation tokens, one line per base model, with the base model (amount 0) as a
dashed reference.

    python -m src.report multirun/demo
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path

from src.io import write_text_atomic

AXES = ["model", "data_source", "amount_label"]


def load_results(root: Path) -> list[dict]:
    rows = []
    for path in sorted(root.rglob("results.json")):
        try:
            rows.append(json.loads(path.read_text(encoding="utf-8")) | {"_path": str(path)})
        except json.JSONDecodeError as err:
            print(f"warning: skipping unreadable {path}: {err}", file=sys.stderr)
    rows.sort(key=lambda r: (r["axes"]["model"], r["axes"]["data_source"], r["tokens"]["total"]))
    return rows


def metric_names(rows: list[dict]) -> list[str]:
    names: list[str] = []
    for row in rows:
        names += [k for k in row["metrics"] if k not in names]
    return names


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    metrics = metric_names(rows)
    header = ["model", "source", "amount", "tokens", "loss_tokens", "train_s", *metrics]
    body = []
    for r in rows:
        values = [f"{r['metrics'][m]:.3f}" if m in r["metrics"] else "-" for m in metrics]
        train_s = r.get("timings_s", {}).get("train_s")
        body.append([r["axes"]["model"], r["axes"]["data_source"], r["axes"]["amount_label"],
                     str(r["tokens"]["total"]), str(r["tokens"]["loss_bearing"]),
                     f"{train_s:.0f}" if train_s is not None else "-", *values])
    return header, body


def format_table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    return "\n".join(lines)


def plot_scaling(rows: list[dict], path: Path) -> None:
    """One panel per metric: metric vs imitation tokens (log x), a line per (model, source)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = metric_names(rows)
    cols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.8 * cols, 3.6 * nrows), squeeze=False)
    lines: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        lines.setdefault((r["axes"]["model"], r["axes"]["data_source"]), []).append(r)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for index, ((model, source), cells) in enumerate(sorted(lines.items())):
            color = f"C{index}"
            trained = [c for c in cells if c["tokens"]["total"] > 0 and metric in c["metrics"]]
            base = [c for c in cells if c["tokens"]["total"] == 0 and metric in c["metrics"]]
            if trained:
                ax.plot([c["tokens"]["total"] for c in trained], [c["metrics"][metric] for c in trained],
                        marker="o", color=color, label=f"{model} + {source}")
            if base:
                ax.axhline(base[0]["metrics"][metric], color=color, linestyle="--", linewidth=1,
                           label=f"{model} base (0 tokens)")
        ax.set_xscale("log")
        ax.set_title(metric)
        ax.set_xlabel("imitation tokens (formatted conversations)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=max(1, len(labels)), frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(root: Path, out: Path | None = None) -> str:
    rows = load_results(root)
    if not rows:
        raise SystemExit(f"error: no results.json under {root}")
    out = out or root
    header, body = table(rows)
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *body])
    write_text_atomic(out / "results.csv", buffer.getvalue())
    plot_scaling(rows, out / "scaling.png")
    text = format_table(header, body)
    return f"{text}\n\n{len(rows)} cells from {root}\nwrote {out / 'results.csv'} and {out / 'scaling.png'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="a sweep directory (multirun/<sweep>) or any folder of cells")
    parser.add_argument("--out", type=Path, default=None, help="where results.csv and scaling.png go (default: root)")
    args = parser.parse_args()
    print(report(args.root, args.out))


if __name__ == "__main__":
    main()
