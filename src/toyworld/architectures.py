"""The architecture comparison, read off a toy grid run with bases of one size and different
architectures (`model=toy_l,toy_t5`: decoder-only against encoder-decoder, 763K parameters each).

findings.py's third finding compares sizes (its smallest base against its largest), which two bases
of the same size do not have, so this report states findings 1 and 2 for each base on its own (the
base is then its own "strongest" for finding 2) and sets the bases' numbers side by side: what each
knows (cloze), answers before imitation, and answers at best after broad and local imitation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from src.io import write_json_atomic, write_text_atomic
from src.results import Results
from src.toyworld.findings import CLOZE, QA, STYLE, Finding, ModelCurve, broad_vs_local, curves, style_at_once


@dataclass
class BaseComparison:
    """One base's row of the comparison and its own findings 1 and 2."""

    model: str
    parameters: int
    cloze: float  # the base's cloze accuracy: what it knows
    qa_before: float  # chat QA of the base
    best_broad_qa: float
    best_local_qa: float
    style_first_budget: dict[str, float]  # data source -> style score after its smallest budget
    findings: list[Finding]


def compare(models: list[ModelCurve]) -> list[BaseComparison]:
    out = []
    for c in models:
        style = {source: first[1].get(STYLE, 0.0) for source in ("toy_broad", "toy_local")
                 if (first := c.first(source)) is not None}
        out.append(BaseComparison(c.model, c.parameters, c.base.get(CLOZE, 0.0), c.base.get(QA, 0.0),
                                  c.best("toy_broad", QA), c.best("toy_local", QA), style,
                                  [style_at_once([c]), broad_vs_local([c])]))
    return out


def render(rows: list[BaseComparison]) -> str:
    lines = ["The bases side by side (computed from this grid's results):",
             "| base (parameters) | cloze | chat QA before | best broad QA | best local QA | style after the "
             "first budget (broad, local) |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        style = ", ".join(f"{r.style_first_budget[s]:.2f}" if s in r.style_first_budget else "-"
                          for s in ("toy_broad", "toy_local"))
        lines.append(f"| {r.model} ({r.parameters:,}) | {r.cloze:.2f} | {r.qa_before:.2f} | {r.best_broad_qa:.2f} "
                     f"| {r.best_local_qa:.2f} | {style} |")
    if len(rows) > 1:
        ahead = max(rows, key=lambda r: r.best_local_qa)
        others = ", ".join(f"{r.model} {r.best_local_qa:.2f}" for r in rows if r is not ahead)
        lines.append(f"Local imitation goes furthest with {ahead.model}: best QA {ahead.best_local_qa:.2f} "
                     f"against {others}.")
    for r in rows:
        lines.append(f"{r.model}:")
        lines += [f"  {i}. [{'holds' if f.holds else 'DOES NOT HOLD'}] {f.text}" for i, f in enumerate(r.findings, 1)]
    return "\n".join(lines)


def write_comparison(root: Path) -> str:
    """architectures.txt and architectures.json beside the grid's report; returns the text."""
    from src.report.tables import load_results

    rows = comparison_of(load_results(root))
    text = render(rows)
    write_text_atomic(root / "architectures.txt", text + "\n")
    write_json_atomic(root / "architectures.json", [asdict(r) for r in rows])
    return text


def comparison_of(rows: list[Results]) -> list[BaseComparison]:
    """The comparison of results already in memory (tests, notebooks)."""
    return compare(curves(rows))
