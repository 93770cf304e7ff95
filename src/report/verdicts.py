"""Verdicts read off any grid: per series (model x source x metric) the slope of the metric against
log10(imitation tokens) with its 95% interval, and rising / flat / falling; per amount the metric
against log10(base parameters); and the study's claims, each "holds", "does not hold" or "cannot tell
with this data" where the grid has the axes to check it. Written to findings.md beside the report.

The claims (Gudibande et al. 2023), and what decides them here (5% level, no correction for the
number of series tested, so one "rising" among many is weak evidence):

1. Broad imitation leaves capability flat or worse: no capability series of a broad source rises,
   and no trained cell beats its base significantly (paired, item by item).
2. A larger base moves capability: among the base models (amount 0), some capability metric rises
   with base size (slope against log10 parameters excluding 0) and none falls; needs two base sizes
   (at least MIN_SIZE_RATIO apart: two architectures of one size are not a size comparison).
   The same slopes at the trained amounts are listed as evidence, counted, and do not decide.
3. Style reaches the teacher while capability does not: with a teacher's scores for both, at the
   largest budget the style metric is not significantly below the teacher while every capability
   metric is significantly below; with a teacher for style only or none, the weaker form: style
   gains significantly over the base while capability does not.
4. Local imitation closes its task's gap: at some budget, a local source's task metric gains
   significantly over the base (and closes at least half the gap when the teacher's score is known);
   every budget is listed, the largest included.

Capability metrics are the headline metrics (benchmark/metric, no sub-group) outside the style
benchmarks, unparsable rates excluded. Which sources are local, and their task, is LOCAL_TASKS;
every other source counts as broad.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from src.io import write_text_atomic
from src.report.stats import Comparison, Slope, base_of, compare, interval_text, p_text, series_slope
from src.results import Results

STYLE_PREFIXES = ("style/", "judge/", "toxicity/", "toy_style/")
LOCAL_TASKS = {"toy_local": ["toy_qa/em"], "nq_synthetic": ["nq/em"]}  # local imitation -> the task it targets
HOLDS, FAILS, UNKNOWN = "holds", "does not hold", "cannot tell with this data"


def headline(metric: str) -> bool:
    return metric.count("/") == 1


def capability(metric: str) -> bool:
    return headline(metric) and not metric.startswith(STYLE_PREFIXES) and not metric.endswith("unparsable")


def style_metric(metric: str) -> bool:
    return headline(metric) and metric.startswith(("style/", "toy_style/")) and "words" not in metric


@dataclass
class Series:
    model: str
    source: str
    metric: str
    slope: Slope
    last: Comparison | None  # the largest budget against the base


@dataclass
class Claim:
    name: str
    verdict: str
    evidence: list[str] = field(default_factory=list)


def _log10(x: float) -> float:
    return math.log10(x) if x > 0 else float("nan")


def token_series(rows: list[Results], metrics: list[str], teacher: dict | None) -> list[Series]:
    out = []
    lines: dict[tuple[str, str], list[Results]] = {}
    for r in rows:
        lines.setdefault((r.axes.model, r.axes.data_source), []).append(r)
    for (model, source), cells in lines.items():
        trained = [c for c in cells if c.tokens.total > 0]
        if not trained:
            continue  # a base-only line: no imitation series
        largest = max(c.tokens.total for c in trained)
        for metric in metrics:
            if not headline(metric) or not any(metric in c.metrics for c in trained):
                continue
            slope = series_slope(trained, metric, lambda c: _log10(c.tokens.total))
            # the largest budget against its own base (same seed where there is one; the first seed shown)
            top = [c for c in trained if c.tokens.total == largest and metric in c.metrics]
            base = base_of(top[0], rows) if top else None
            last = compare(top[0], base, metric, teacher) if base is not None else None
            out.append(Series(model, source, metric, slope, last))
    return out


MIN_SIZE_RATIO = 1.25  # bases closer than this in parameters are one size (the study's are 1.9x apart or more)


def size_series(rows: list[Results], metrics: list[str]) -> list[tuple[str, str, str, Slope]]:
    """(source, amount, metric, slope against log10 parameters) wherever two base sizes meet. Bases
    within MIN_SIZE_RATIO of each other are one size: a grid comparing two architectures of one size
    (the toy world's toy_l and toy_t5, 896 parameters apart) would otherwise read their difference as
    a slope over a thousandth of a decade."""
    out = []
    groups: dict[tuple[str, str], list[Results]] = {}
    for r in rows:
        key = ("base", "0") if r.tokens.total == 0 else (r.axes.data_source, r.axes.amount_label)
        groups.setdefault(key, []).append(r)
    for (source, amount), cells in groups.items():
        sizes = {c.model_parameters for c in cells if c.model_parameters}
        if len(sizes) < 2 or max(sizes) < MIN_SIZE_RATIO * min(sizes):
            continue
        if amount == "0":  # a base model is one model whatever grid line it sits on: once per model and seed
            cells = list({(c.axes.model, c.axes.seed): c for c in reversed(cells)}.values())
        for metric in metrics:
            if capability(metric):
                slope = series_slope([c for c in cells if c.model_parameters], metric,
                                     lambda c: _log10(c.model_parameters))
                out.append((source, amount, metric, slope))
    return out


def _delta_text(c: Comparison | None) -> str:
    if c is None:
        return "no base to compare"
    p = f"p={p_text(c.p)}"
    gap_ci = f" [{c.gap_ci95[0]:+.2f}, {c.gap_ci95[1]:+.2f}]" if c.gap_ci95 else " [unknown]"
    gap = f"; gap closed {c.gap:+.2f}{gap_ci}" if c.gap is not None else ""
    return f"{c.delta:+.3f} {interval_text(c.ci95, signed=True)} vs base at {c.cell.axes.amount_label}, {p}{gap}"


def claim_broad(series: list[Series]) -> Claim:
    broad = [s for s in series if capability(s.metric) and s.source not in LOCAL_TASKS]
    evidence = [f"{s.model} + {s.source}, {s.metric}: {s.slope.verdict} ({s.slope.text()}); {_delta_text(s.last)}"
                for s in broad]
    rising = [s for s in broad if s.slope.verdict == "rising"
              or (s.last is not None and s.last.significant and s.last.delta > 0)]
    tested = [s for s in broad if s.slope.verdict != "cannot tell" or (s.last is not None and s.last.p is not None)]
    verdict = FAILS if rising else HOLDS if tested else UNKNOWN
    if not broad:
        evidence = ["no capability series of a broad source in this grid"]
    return Claim("Broad imitation leaves capability flat or worse", verdict, evidence)


def claim_size(sizes: list[tuple[str, str, str, Slope]]) -> Claim:
    if not sizes:
        return Claim("A larger base moves capability", UNKNOWN,
                     [f"needs two base-model sizes at one amount (at least {MIN_SIZE_RATIO:g}x apart in parameters)"])
    deciding = [entry for entry in sizes if entry[1] == "0"] or sizes
    evidence = [f"{metric} at {amount} ({source}): {s.verdict}, {s.text('per decade of parameters')}"
                + ("" if (source, amount, metric, s) in deciding else " (not deciding)")
                for source, amount, metric, s in sizes]
    others = [s.verdict for entry in sizes if entry not in deciding for s in [entry[3]]]
    if others:
        evidence.append(f"at the trained amounts: {others.count('rising')} rising, {others.count('flat')} flat, "
                        f"{others.count('falling')} falling")
    verdicts = [s.verdict for *_, s in deciding]
    if "falling" in verdicts:
        verdict = FAILS
    elif "rising" in verdicts:
        verdict = HOLDS
    elif all(v == "cannot tell" for v in verdicts):
        verdict = UNKNOWN
    else:
        verdict = FAILS
    return Claim("A larger base moves capability", verdict, evidence)


def claim_style(series: list[Series], rows: list[Results], teacher: dict | None) -> Claim:
    name = "Style reaches the teacher while capability does not"
    style = [s for s in series if style_metric(s.metric) and s.last is not None]
    capable = [s for s in series if capability(s.metric) and s.last is not None]
    if not style or not capable:
        return Claim(name, UNKNOWN, ["needs a style benchmark and a capability benchmark, with a base and trained cells"])
    t = teacher["metrics"] if teacher else {}
    if any(s.metric in t for s in style) and any(s.metric in t for s in capable):
        evidence, reached, below = [], [], []
        for s in style + capable:
            if s.metric not in t:
                continue
            ci = _cell_ci(s.last.cell, s.metric)
            status = "unknown" if ci is None else ("below" if ci[1] < t[s.metric] else "reaches")
            evidence.append(f"{s.model} + {s.source}, {s.metric} at {s.last.cell.axes.amount_label}: "
                            f"{interval_text(ci)} vs teacher {t[s.metric]:.3f} ({status})")
            (reached if s in style else below).append(status)
        if "unknown" in reached + below:
            return Claim(name, UNKNOWN, evidence)
        holds = "reaches" in reached and all(b == "below" for b in below)
        return Claim(name, HOLDS if holds else FAILS, evidence)
    evidence = ["(weaker form: the teacher's scores do not cover both kinds, so: style gains over the base "
                "while capability does not)"]
    evidence += [f"{s.model} + {s.source}, {s.metric}: {_delta_text(s.last)}" for s in style + capable]
    if any(s.last.p is None for s in style + capable):
        return Claim(name, UNKNOWN, evidence)
    style_moves = any(s.last.significant and s.last.delta > 0 for s in style)
    capability_moves = any(s.last.significant and s.last.delta > 0 for s in capable)
    return Claim(name, HOLDS if style_moves and not capability_moves else FAILS, evidence)


def _cell_ci(row: Results, metric: str):
    entry = row.uncertainty(metric)
    return tuple(entry["ci95"]) if entry and entry.get("ci95") else None


def claim_local(series: list[Series], rows: list[Results], teacher: dict | None) -> Claim:
    name = "Local imitation closes its task's gap"
    local = [s for s in series if s.metric in LOCAL_TASKS.get(s.source, [])]
    if not local:
        return Claim(name, UNKNOWN, [f"no local imitation source ({', '.join(LOCAL_TASKS)}) with its task "
                                    "metric in this grid"])
    evidence, found = [], []
    for s in local:
        cells = sorted((c for c in rows if c.axes.model == s.model and c.axes.data_source == s.source
                        and c.tokens.total > 0 and s.metric in c.metrics), key=lambda c: (c.tokens.total, c.axes.seed))
        for c in cells:
            base = base_of(c, rows)
            comparison = compare(c, base, s.metric, teacher) if base is not None else None
            found.append(comparison)
            evidence.append(f"{s.model} + {s.source}, {s.metric}: {_delta_text(comparison)}")
    known = [c for c in found if c is not None and c.p is not None]
    closes = [c.significant and c.delta > 0 and (c.gap is None or c.gap >= 0.5) for c in known]
    if any(closes):
        return Claim(name, HOLDS, evidence)
    return Claim(name, FAILS if known and len(known) == len(found) else UNKNOWN, evidence)


def verdicts(rows: list[Results], metrics: list[str], teacher: dict | None = None):
    series = token_series(rows, metrics, teacher)
    sizes = size_series(rows, metrics)
    claims = [claim_broad(series), claim_size(sizes), claim_style(series, rows, teacher),
              claim_local(series, rows, teacher)]
    return series, sizes, claims


def render(series: list[Series], sizes, claims: list[Claim]) -> str:
    lines = ["# Findings", "", "Computed from this grid's results.json files (src/report/verdicts.py says how).",
             "", "## The study's claims", ""]
    for claim in claims:
        lines.append(f"- **{claim.name}: {claim.verdict}**")
        lines += [f"  - {e}" for e in claim.evidence]
    lines += ["", "## Every series against imitation tokens",
              "", "Slope of the metric per decade of imitation tokens (trained cells; every seed a point), its 95% "
              "interval, and the largest budget against the base item by item.", "",
              "| model | source | metric | verdict | slope per decade [95%] | largest budget vs base |",
              "| --- | --- | --- | --- | --- | --- |"]
    for s in series:
        lines.append(f"| {s.model} | {s.source} | {s.metric} | {s.slope.verdict} | {s.slope.text()} | "
                     f"{_delta_text(s.last)} |")
    if sizes:
        lines += ["", "## Against base-model size", "", "| source | amount | metric | verdict | slope per decade of "
                  "parameters [95%] |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {source} | {amount} | {metric} | {s.verdict} | {s.text('per decade')} |"
                  for source, amount, metric, s in sizes]
    return "\n".join(lines) + "\n"


def write_findings(out: Path, rows: list[Results], metrics: list[str], teacher: dict | None = None):
    series, sizes, claims = verdicts(rows, metrics, teacher)
    text = render(series, sizes, claims)
    write_text_atomic(out / "findings.md", text)
    return series, sizes, claims, text
