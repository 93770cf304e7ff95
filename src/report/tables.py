"""Report a grid from its results.json files (never from W&B).

Writes, beside the cells (or to --out): results.csv, gap_closed.csv, scaling.png (metric vs imitation
tokens, a line per base model, base and teacher dashed), model_size.png, style_vs_substance.png and
index.html tying them together; prints the table and the gap-closed table.

    python -m src.report multirun/demo --teacher conf/teacher/demo.yaml

The gap closed is the study's headline quantity: (imitation - base) / (teacher - base), per metric,
with teacher scores from a file (e.g. the study's ChatGPT numbers, conf/teacher/chatgpt_paper.yaml).
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
from src.results import Results

STYLE_METRICS = ["judge/win_rate", "style/style_score", "toy_style/style_score"]  # the first present is the x of style-vs-substance
STYLE_PREFIXES = ("style/", "judge/", "toxicity/", "toy_style/")


def load_results(root: Path) -> list[Results]:
    """Every results.json under root (any schema version), by model size, model, source and tokens. A file
    that is not JSON, or is JSON but not a results record, is skipped with a warning naming it."""
    rows = []
    for path in sorted(root.rglob("results.json")):
        try:
            rows.append(Results.read(path))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            print(f"warning: skipping unreadable {path}: {err}", file=sys.stderr)
        except (KeyError, TypeError, AttributeError) as err:  # valid JSON, but not the fields of a record
            print(f"warning: skipping {path}: not a results record ({type(err).__name__}: {err})", file=sys.stderr)
    rows.sort(key=lambda r: (r.model_parameters or 0, r.axes.model, r.axes.data_source, r.tokens.total))
    return rows


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


def table(rows: list[Results]) -> tuple[list[str], list[list[str]]]:
    metrics = metric_names(rows)
    header = ["model", "source", "amount", "tokens", "loss_tokens", "train_s", *metrics]
    body = []
    for r in rows:
        values = [f"{r.metrics[m]:.3f}" if m in r.metrics else "-" for m in metrics]
        train_s = (r.timings_s or {}).get("train_s")
        body.append([r.axes.model, r.axes.data_source, r.axes.amount_label, str(r.tokens.total),
                     str(r.tokens.loss_bearing), f"{train_s:.0f}" if train_s is not None else "-", *values])
    return header, body


def gap_closed(rows: list[Results], teacher: dict | None) -> tuple[list[str], list[list[str]]]:
    """(imitation - base) / (teacher - base) for every trained cell and every metric the teacher has.
    1 = the whole gap closed, 0 = no change, < 0 = imitation made it worse."""
    if not teacher:
        return [], []
    metrics = [m for m in metric_names(rows) if m in teacher["metrics"]]
    header = ["model", "source", "amount", *metrics]
    body = []
    for r in rows:
        if r.tokens.total == 0:
            continue
        base = next((b for b in rows if b.tokens.total == 0 and b.axes.model == r.axes.model), None)
        values = []
        for m in metrics:
            if base is None or m not in base.metrics or m not in r.metrics:
                values.append("-")
                continue
            gap = teacher["metrics"][m] - base.metrics[m]
            values.append(f"{(r.metrics[m] - base.metrics[m]) / gap:+.2f}" if abs(gap) > 1e-12 else "n/a")
        body.append([r.axes.model, r.axes.data_source, r.axes.amount_label, *values])
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


def report(root: Path, out: Path | None = None, teacher_path: Path | None = None) -> str:
    rows = load_results(root)
    if not rows:
        raise SystemExit(f"error: no results.json under {root}")
    out = out or root
    teacher = load_teacher(teacher_path)
    metrics = metric_names(rows)
    header, body = table(rows)
    write_text_atomic(out / "results.csv", _csv(header, body))
    gap_header, gap_body = gap_closed(rows, teacher)
    if gap_body:
        write_text_atomic(out / "gap_closed.csv", _csv(gap_header, gap_body))

    figures = {"scaling.png": "Each metric against imitation tokens. Dashed: the base model (0 tokens); "
                              "dotted: the teacher."}
    plot_scaling(rows, metrics, out / "scaling.png", teacher)
    if len({r.axes.model for r in rows}) > 1:
        plot_model_size(rows, [m for m in metrics if not m.startswith(STYLE_PREFIXES)], out / "model_size.png")
        figures["model_size.png"] = "Each capability metric against base-model size."
    style = next((m for m in STYLE_METRICS if m in metrics), None)
    substance = [m for m in metrics if not m.startswith(STYLE_PREFIXES)]
    if style and substance:
        plot_style_vs_substance(rows, style, substance, out / "style_vs_substance.png")
        figures["style_vs_substance.png"] = (f"Every cell as a point: {style} (how much it sounds like the teacher) "
                                             "against capability. Labels are token budgets.")
    write_text_atomic(out / "index.html", render_page(root, rows, (header, body), (gap_header, gap_body),
                                                      teacher, figures))
    text = format_table(header, body)
    if gap_body:
        text += f"\n\ngap closed vs teacher '{teacher['name']}': (imitation - base) / (teacher - base)\n"
        text += format_table(gap_header, gap_body)
    written = ", ".join(["results.csv", *(["gap_closed.csv"] if gap_body else []), *figures, "index.html"])
    return f"{text}\n\n{len(rows)} cells from {root}\nwrote {written} in {out}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="a sweep directory (multirun/<sweep>) or any folder of cells")
    parser.add_argument("--out", type=Path, default=None, help="where the files go (default: root)")
    parser.add_argument("--teacher", type=Path, default=None, help="YAML/JSON of the teacher's scores")
    args = parser.parse_args()
    print(report(args.root, args.out, args.teacher))


if __name__ == "__main__":
    main()
