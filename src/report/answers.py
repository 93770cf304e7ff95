"""The answers side by side: for each item of each benchmark, the base's answer, each imitation cell's
answer and the reference, marked right or wrong and with the teacher's style markers, in a filterable
HTML section ("sounds like the teacher but wrong", the study's central observation, is one click).

Answers come from each cell's predictions.jsonl (`<store_dir>/<run_id>/benchmarks/<name>/`, the
store_dir of the cell's resolved config); a cell whose folder is not on this machine is left out and
said so. Right or wrong is the per-item outcome named in CORRECT (exact match, accuracy, pass@1, a
judge's win); a benchmark not named there (style, toxicity) shows answers without it. Style markers: every checker in STYLE_MARKERS (the demo teacher's opening, numbered
list and sign-off here; the toy world adds its own).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from src import resolve_path
from src.benchmarks.style import marker_flags
from src.benchmarks.uncertainty import ItemOutcomes
from src.results import Results

STYLE_MARKERS: dict[str, Callable[[str], dict[str, bool]]] = {"demo": marker_flags}
CORRECT = {"nq": "em", "mmlu": "acc_micro", "humaneval": "pass@1", "judge": "win_rate", "toy_qa": "em",
           "toy_cloze": "acc", "toy_mc": "acc"}  # benchmark -> the per-item outcome that says right or wrong
PER_BENCHMARK = 200  # items shown per benchmark (a 14k-question MMLU would make a page no browser opens)
TEXT_CAP = 600  # characters of a prompt or answer shown


@dataclass
class Answer:
    text: str
    right: bool | None  # None: the benchmark has no right or wrong for it (style)
    markers: list[str]

    @property
    def teacher_like_but_wrong(self) -> bool:
        return bool(self.markers) and self.right is False


@dataclass
class Row:
    benchmark: str
    item: str
    prompt: str
    reference: str
    answers: dict[str, Answer] = field(default_factory=dict)  # column label -> answer


def predictions_path(row: Results, benchmark: str) -> Path | None:
    store = (row.config or {}).get("store_dir")
    if not store:
        return None
    path = resolve_path(str(store)) / row.run_id / "benchmarks" / benchmark / "predictions.jsonl"
    return path if path.exists() else None


def _text(value) -> str:
    if isinstance(value, list):
        value = " | ".join(map(str, value))
    return "" if value is None else str(value)


def _by_item(predictions: list[dict], items: ItemOutcomes) -> dict[str, dict]:
    """Item id -> its prediction: in order when there is one per item, else the first per task."""
    if len(predictions) == len(items.ids):
        return dict(zip(items.ids, predictions, strict=True))
    first: dict[str, dict] = {}
    for p in predictions:
        first.setdefault(str(p.get("task_id", p.get("id"))), p)
    return first


def markers_of(text: str) -> list[str]:
    found = []
    for checker in STYLE_MARKERS.values():
        found += [name for name, present in checker(text).items() if present and name not in found]
    return found


def label(row: Results) -> str:
    return f"{row.axes.model} {row.axes.data_source} {row.axes.amount_label} s{row.axes.seed}"


def collect(rows: list[Results]) -> tuple[list[str], list[Row], list[str]]:
    """(column labels, base first; rows; cells whose predictions are not here)."""
    ordered = sorted(rows, key=lambda r: (r.tokens.total > 0, r.axes.model, r.tokens.total, r.axes.seed))
    columns, table, missing = [], {}, []
    for r in ordered:
        found = False
        for name, record in r.benchmarks.items():
            items = ItemOutcomes.from_dict(record.items) if isinstance(record.items, dict) else None
            path = predictions_path(r, name)
            if items is None or path is None:
                continue
            with open(path, encoding="utf-8") as handle:
                predictions = [json.loads(line) for line in handle if line.strip()]
            outcome = CORRECT.get(name)
            values = dict(zip(items.ids, items.values[outcome], strict=True)) if outcome in items.values else {}
            for item_id, p in list(_by_item(predictions, items).items())[:PER_BENCHMARK]:
                text = _text(p.get("output"))
                v = values.get(item_id)
                right = None if v is None or v not in (0.0, 1.0) else v == 1.0
                key = (name, item_id)
                if key not in table:
                    table[key] = Row(name, item_id, _text(p.get("question", p.get("prompt")))[-TEXT_CAP:],
                                     _text(p.get("gold")))
                table[key].answers[label(r)] = Answer(text[:TEXT_CAP], right, markers_of(text))
                found = True
        if found:
            columns.append(label(r))
        elif r.benchmarks:
            missing.append(label(r))
    return columns, list(table.values()), missing


SCRIPT = """
function applyFilter(mode) {
  var rows = document.querySelectorAll('#answers tbody tr'), shown = 0;
  for (var i = 0; i < rows.length; i++) {
    var r = rows[i], keep = mode === 'all' || r.getAttribute('data-' + mode) === '1';
    r.style.display = keep ? '' : 'none';
    if (keep) shown++;
  }
  document.getElementById('answers-shown').textContent = shown + ' of ' + rows.length + ' items shown';
  var buttons = document.querySelectorAll('#answer-filters button');
  for (var j = 0; j < buttons.length; j++)
    buttons[j].className = buttons[j].getAttribute('data-mode') === mode ? 'on' : '';
}
function fromHash() {
  var m = /answers=([a-z-]+)/.exec(location.hash);
  applyFilter(m ? m[1] : 'all');
}
window.addEventListener('hashchange', fromHash);
document.addEventListener('DOMContentLoaded', fromHash);
"""

FILTERS = [("all", "all items"), ("teacher-wrong", "sounds like the teacher but wrong"),
           ("wrong", "an imitation cell is wrong"), ("changed", "right/wrong changed vs the base")]


def _cell(answer: Answer | None) -> str:
    if answer is None:
        return "<td class='none'>-</td>"
    mark = {True: "<span class='right'>right</span>", False: "<span class='wrong'>wrong</span>", None: ""}[answer.right]
    markers = "".join(f"<span class='marker'>{html.escape(m)}</span>" for m in answer.markers)
    return f"<td><div class='tags'>{mark}{markers}</div><pre>{html.escape(answer.text)}</pre></td>"


def render(rows: list[Results]) -> str:
    columns, table, missing = collect(rows)
    if not table:
        return ""
    base_columns = [c for c in columns if any(label(r) == c and r.tokens.total == 0 for r in rows)]
    trained = [c for c in columns if c not in base_columns]
    body = []
    for row in table:
        answers = [row.answers.get(c) for c in trained]
        bases = [row.answers.get(c) for c in base_columns]
        base_right = next((a.right for a in bases if a is not None), None)
        flags = {"teacher-wrong": any(a and a.teacher_like_but_wrong for a in answers),
                 "wrong": any(a and a.right is False for a in answers),
                 "changed": base_right is not None and any(a and a.right is not None and a.right != base_right
                                                           for a in answers)}
        attributes = " ".join(f"data-{k}='{int(v)}'" for k, v in flags.items())
        body.append(f"<tr {attributes}><td>{html.escape(row.benchmark)}<br>{html.escape(row.item)}</td>"
                    f"<td><pre>{html.escape(row.prompt)}</pre></td><td><pre>{html.escape(row.reference)}</pre></td>"
                    + "".join(_cell(row.answers.get(c)) for c in columns) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["item", "prompt", "reference", *columns])
    buttons = "".join(f"<button data-mode='{m}' onclick=\"location.hash='answers={m}'\">{html.escape(t)}</button>"
                      for m, t in FILTERS)
    note = (f"<p>Cells without their predictions on this machine: {html.escape(', '.join(missing))}.</p>"
            if missing else "")
    return (f"<h2>The answers, side by side</h2><p>At most {PER_BENCHMARK} items per benchmark; the style markers "
            "are the teacher's. Filter:</p>"
            f"<div id='answer-filters'>{buttons} <span id='answers-shown'></span></div>{note}"
            f"<table id='answers'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"<script>{SCRIPT}</script>")


STYLE = ("#answers pre{white-space:pre-wrap;max-width:320px;max-height:160px;overflow:auto;margin:2px;"
         "text-align:left;font-size:12px}#answers td{vertical-align:top;text-align:left}.tags span{margin-right:4px;"
         "padding:0 4px;border-radius:3px;font-size:11px}.right{background:#cdeccd}.wrong{background:#f3c6c6}"
         ".marker{background:#dde6f7}#answer-filters button{margin:2px}#answer-filters button.on{font-weight:bold}")
