"""The three findings of the study, read off a finished toy-world grid (its results.json files) and
stated in words with the numbers behind them. Nothing here is hard-coded but the thresholds below:
each finding is checked, and said not to hold when the numbers do not show it.

1. Imitation buys the style almost at once (the smallest budget already carries it).
2. Broad imitation does not unlock the knowledge the base holds (for any base); local imitation does
   (for the strongest base, as the study's local imitation closes a task's gap for a strong model).
3. A stronger base goes further (its local imitation answers more).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from src.io import write_json_atomic, write_text_atomic
from src.results import Results

QA, CLOZE, STYLE = "toy_qa/em", "toy_cloze/acc", "toy_style/style_score"
STYLE_AT_ONCE = 0.5  # style score the smallest budget must reach (the base has ~0)
BROAD_GAIN_MAX = 0.15  # broad imitation may not lift QA by more than this over the base
LOCAL_OVER_BROAD = 0.3  # local imitation's best QA must beat broad's best by this much
STRONGER_BY = 0.05  # the larger base's best local QA must beat the smaller's by this much


@dataclass
class Finding:
    name: str
    holds: bool
    text: str


@dataclass
class ModelCurve:
    """One base model's numbers: the base, and QA / style per budget for each data source."""

    model: str
    parameters: int
    base: dict[str, float]
    by_source: dict[str, list[tuple[int, dict[str, float]]]]  # source -> [(tokens, metrics)] by tokens

    def best(self, source: str, metric: str) -> float:
        return max((m.get(metric, 0.0) for _, m in self.by_source.get(source, [])), default=0.0)

    def first(self, source: str) -> tuple[int, dict[str, float]] | None:
        cells = self.by_source.get(source, [])
        return cells[0] if cells else None


def curves(rows: list[Results]) -> list[ModelCurve]:
    """Per base model, smallest first; base cells of every data source are the same model (any one)."""
    out = []
    for model in dict.fromkeys(r.axes.model for r in rows):
        cells = [r for r in rows if r.axes.model == model]
        base = next((r for r in cells if r.tokens.total == 0), None)
        if base is None:
            continue
        by_source: dict[str, list[tuple[int, dict[str, float]]]] = {}
        for r in sorted(cells, key=lambda r: r.tokens.total):
            if r.tokens.total:
                by_source.setdefault(r.axes.data_source, []).append((r.tokens.total, r.metrics))
        out.append(ModelCurve(model, base.model_parameters or 0, base.metrics, by_source))
    return sorted(out, key=lambda c: c.parameters)


def _f(x: float) -> str:
    return f"{x:.2f}"


def style_at_once(models: list[ModelCurve]) -> Finding:
    parts, holds = [], bool(models)
    for c in models:
        for source in ("toy_broad", "toy_local"):
            first = c.first(source)
            if first is None:
                holds = False
                continue
            tokens, metrics = first
            score = metrics.get(STYLE, 0.0)
            holds &= score >= STYLE_AT_ONCE and score > c.base.get(STYLE, 0.0)
            parts.append(f"{c.model} {source.removeprefix('toy_')} {_f(c.base.get(STYLE, 0.0))} -> {_f(score)} "
                         f"after {tokens:,} tokens")
    return Finding("style_at_once", holds, "Imitation buys the style almost at once: style score " + "; ".join(parts)
                   + f" (the teacher: 1.00; threshold {STYLE_AT_ONCE}).")


def broad_vs_local(models: list[ModelCurve]) -> Finding:
    parts, holds = [], bool(models)
    for c in models:
        base_qa, broad, local = c.base.get(QA, 0.0), c.best("toy_broad", QA), c.best("toy_local", QA)
        holds &= broad - base_qa <= BROAD_GAIN_MAX
        parts.append(f"{c.model} knows {_f(c.base.get(CLOZE, 0.0))} of the evaluated facts (cloze) but answers "
                     f"{_f(base_qa)} in chat; best after broad imitation {_f(broad)}, after local {_f(local)}")
    if models:
        strongest = models[-1]
        holds &= strongest.best("toy_local", QA) - strongest.best("toy_broad", QA) >= LOCAL_OVER_BROAD
    return Finding("broad_does_not_unlock_local_does", holds,
                   "Broad imitation does not unlock the knowledge the base holds; local imitation does: "
                   + "; ".join(parts) + f" (QA exact match; broad may gain at most {BROAD_GAIN_MAX} for any base, "
                   f"local must beat broad by {LOCAL_OVER_BROAD} for the strongest).")


def stronger_base(models: list[ModelCurve]) -> Finding:
    if len(models) < 2:
        return Finding("stronger_base_goes_further", False, "A stronger base goes further: needs two base models.")
    small, large = models[0], models[-1]
    gain = large.best("toy_local", QA) - small.best("toy_local", QA)
    holds = gain >= STRONGER_BY
    return Finding("stronger_base_goes_further", holds,
                   f"A stronger base goes further: best local-imitation QA {_f(small.best('toy_local', QA))} for "
                   f"{small.model} ({small.parameters:,} parameters, cloze {_f(small.base.get(CLOZE, 0.0))}) vs "
                   f"{_f(large.best('toy_local', QA))} for {large.model} ({large.parameters:,} parameters, cloze "
                   f"{_f(large.base.get(CLOZE, 0.0))}) (must gain {STRONGER_BY}).")


def findings(rows: list[Results]) -> list[Finding]:
    models = curves(rows)
    return [style_at_once(models), broad_vs_local(models), stronger_base(models)]


def render(found: list[Finding]) -> str:
    lines = ["What the toy world shows (computed from this grid's results):"]
    for i, f in enumerate(found, start=1):
        lines.append(f"{i}. [{'holds' if f.holds else 'DOES NOT HOLD'}] {f.text}")
    return "\n".join(lines)


def write_findings(root: Path) -> str:
    """findings.txt and findings.json beside the grid's report; returns the text."""
    from src.report.tables import load_results

    found = findings(load_results(root))
    text = render(found)
    write_text_atomic(root / "findings.txt", text + "\n")
    write_json_atomic(root / "findings.json", [asdict(f) for f in found])
    return text


def load(root: Path) -> list[Finding]:
    return [Finding(**f) for f in json.loads((root / "findings.json").read_text(encoding="utf-8"))]
