"""A static HTML page for a grid: the tables and the figures, readable offline, no scripts."""

from __future__ import annotations

import html
from pathlib import Path

from src.results import Results


def _table(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def render_page(root: Path, rows: list[Results], results: tuple, gap: tuple, teacher: dict | None,
                figures: dict[str, str]) -> str:
    sweeps = sorted({str(r.sweep) for r in rows})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>imitation-gap report: {html.escape(', '.join(sweeps))}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
        "img{max-width:100%;border:1px solid #eee}figcaption{color:#555;margin-bottom:2em}</style></head><body>",
        f"<h1>imitation-gap: {html.escape(', '.join(sweeps))}</h1>",
        f"<p>{len(rows)} cells read from the results.json files under <code>{html.escape(str(root))}</code>. "
        "Tokens are tokens of the formatted conversations under each base model's tokenizer.</p>",
        "<h2>Results</h2>", _table(*results),
    ]
    if gap[1]:
        parts += [f"<h2>Gap closed vs {html.escape(teacher['name'])}</h2>",
                  "<p>(imitation - base) / (teacher - base): 1 closes the whole gap, 0 changes nothing, "
                  "below 0 is worse than the base model.</p>", _table(*gap)]
    parts.append("<h2>Figures</h2>")
    for name, caption in figures.items():
        parts.append(f"<figure><img src='{html.escape(name)}' alt='{html.escape(name)}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
