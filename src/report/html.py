"""A static HTML page for a grid: the study's claims first, then the tables, the figures and the
answers side by side; readable offline from disk (one small inline script filters the answers)."""

from __future__ import annotations

import html
from pathlib import Path

from src.report import answers
from src.results import Results

VERDICT_COLOURS = {"holds": "#d8f0d8", "does not hold": "#f6d5d5", "cannot tell with this data": "#eeeeee",
                   "rising": "#d8f0d8", "falling": "#f6d5d5", "flat": "#f3f3f3", "cannot tell": "#eeeeee"}


def _table(header: list[str], body: list[list[str]], verdict_column: int | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = []
    for row in body:
        cells = []
        for i, c in enumerate(row):
            colour = VERDICT_COLOURS.get(c) if i == verdict_column else None
            style = f" style='background:{colour}'" if colour else ""
            cells.append(f"<td{style}>{html.escape(c)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _claims(claims) -> str:
    items = []
    for claim in claims:
        colour = VERDICT_COLOURS.get(claim.verdict, "#fff")
        evidence = "".join(f"<li>{html.escape(e)}</li>" for e in claim.evidence)
        items.append(f"<li class='claim' style='background:{colour}'><b>{html.escape(claim.name)}: "
                     f"{html.escape(claim.verdict)}</b><ul>{evidence}</ul></li>")
    return "<ul class='claims'>" + "".join(items) + "</ul>"


def render_page(root: Path | str, rows: list[Results], results: tuple, gap: tuple, teacher: dict | None,
                figures: dict[str, str], seeds: tuple = ([], []), pairs: tuple = ([], []), claims=(),
                series=(), failed=(), answers_html: str | None = None) -> str:
    sweeps = sorted({str(r.sweep) for r in rows})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>imitation-gap report: {html.escape(', '.join(sweeps))}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
        "img{max-width:100%;border:1px solid #eee}figcaption{color:#555;margin-bottom:2em}"
        ".claims{list-style:none;padding:0}.claim{padding:6px 10px;margin:4px 0;border-radius:4px}"
        f".claim ul{{font-size:13px;margin:4px 0}}{answers.STYLE}</style></head><body>",
        f"<h1>imitation-gap: {html.escape(', '.join(sweeps))}</h1>",
        f"<p>{len(rows)} cells read from the results.json files under <code>{html.escape(str(root))}</code>. "
        "Tokens are tokens of the formatted conversations under each base model's tokenizer.</p>",
    ]
    if claims:
        parts += ["<h2>The study's claims, checked on this grid</h2>",
                  "<p>5% level, no correction for the number of series; findings.md has the details.</p>",
                  _claims(claims)]
    if failed:
        parts += ["<h2>Cells that did not finish</h2>", _table(["job folder", "state", "error"], [
            [str(f["job_dir"]), str(f.get("state", "")), str(f.get("error", ""))] for f in failed])]
    parts += ["<h2>Results</h2>", "<p>Each metric ± its standard error over items; ±? where the cell's file "
              "predates recorded uncertainty (unknown). results.csv has the 95% intervals and their method.</p>",
              _table(*results)]
    if seeds[1]:
        parts += ["<h2>Seeds as replicates</h2>", "<p>Cells that differ only in the training seed, as one point: "
                  "the sd over seeds beside one cell's item-level standard error; the larger dominates.</p>",
                  _table(*seeds, verdict_column=None)]
    if pairs[1]:
        parts += ["<h2>Each trained cell against its base, item by item</h2>",
                  "<p>Delta with a paired bootstrap 95% interval; p from McNemar's exact test for proportions, "
                  "the paired bootstrap otherwise.</p>", _table(*pairs)]
    if gap[1]:
        parts += [f"<h2>Gap closed vs {html.escape(teacher['name'])}</h2>",
                  "<p>(imitation - base) / (teacher - base) [95% interval]: 1 closes the whole gap, 0 changes "
                  "nothing, below 0 is worse than the base model.</p>", _table(*gap)]
    if series:
        body = [[s.model, s.source, s.metric, s.slope.verdict, s.slope.text()] for s in series]
        parts += ["<h2>Every series against imitation tokens</h2>",
                  _table(["model", "source", "metric", "verdict", "slope per decade of tokens [95%]"], body,
                         verdict_column=3)]
    parts.append("<h2>Figures</h2>")
    for name, caption in figures.items():
        parts.append(f"<figure><img src='{html.escape(name)}' alt='{html.escape(name)}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append(answers.render(rows) if answers_html is None else answers_html)
    parts.append("</body></html>")
    return "\n".join(parts)
