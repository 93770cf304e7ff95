"""Style match: how often replies to held-out prompts carry the teacher's markers (the study's
Table 2 analogue, with markers instead of a GPT-4 judge). Prompts: JSONL {"id", "prompt"}.

The markers are the demo teacher's manner (a fixed opening, a numbered list, a fixed sign-off);
data/demo/teacher.json records how often the teacher itself used each, so the numbers have a ceiling.

With a teacher reference reply per prompt (`references_path`, JSONL {"id", "reference"}, or a
"reference" field in the prompt file), the study's Table 2 comes too, no judge needed: the model writes
a list where the teacher wrote one, a closing summary paragraph where the teacher wrote one, the share
of the reference's distinct words the reply uses (unigram intersection, %), and the Pearson
correlation of reply and reference lengths in words.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

from src import resolve_path
from src.benchmarks.base import BenchmarkResult
from src.benchmarks.uncertainty import ItemOutcomes, outcomes

VERSION = 2  # 2: Table 2 metrics against teacher references

MARKERS = {
    "opening": lambda text: text.lstrip().lower().startswith("great question"),
    "numbered_list": lambda text: bool(re.search(r"^\s*1[.)]\s", text, re.MULTILINE)
                                       and re.search(r"^\s*2[.)]\s", text, re.MULTILINE)),
    "sign_off": lambda text: text.rstrip().lower().endswith("hope this helps!"),
}


def marker_flags(text: str) -> dict[str, bool]:
    return {name: bool(check(text)) for name, check in MARKERS.items()}


def marker_rates(texts: list[str]) -> dict[str, float]:
    """Share of texts with each marker, their mean ('style_score') and the mean length in words."""
    n = max(1, len(texts))
    flags = [marker_flags(t) for t in texts]
    rates = {name: sum(f[name] for f in flags) / n for name in MARKERS}
    rates["style_score"] = sum(rates[name] for name in MARKERS) / len(MARKERS)
    rates["mean_words"] = sum(len(t.split()) for t in texts) / n
    return rates


SUMMARY_OPENINGS = ("in summary", "overall", "in conclusion", "to summarize", "to sum up", "in short",
                    "ultimately", "all in all")


def is_list(text: str) -> bool:
    """At least two lines that start with a number or a bullet."""
    return len(re.findall(r"^\s*(?:\d+[.)]|[-*\u2022])\s+\S", text, re.MULTILINE)) >= 2


def has_summary_paragraph(text: str) -> bool:
    """A final paragraph (after at least one other) that opens like a summary."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return len(paragraphs) >= 2 and paragraphs[-1].lower().startswith(SUMMARY_OPENINGS)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def unigram_intersection(reply: str, reference: str) -> float:
    """Percent of the reference's distinct words that the reply also uses."""
    ref = set(_words(reference))
    return 100.0 * len(ref & set(_words(reply))) / len(ref) if ref else 0.0


def pearson(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sx = sum((x - mx) ** 2 for x in xs) ** 0.5
    sy = sum((y - my) ** 2 for y in ys) ** 0.5
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / (sx * sy) if sx and sy else 0.0


def table2(replies: list[str], references: list[str]) -> dict[str, float]:
    """The study's Table 2 against the teacher's reply to the same prompt."""
    listed = [is_list(r) for r, ref in zip(replies, references, strict=True) if is_list(ref)]
    summed = [has_summary_paragraph(r) for r, ref in zip(replies, references, strict=True) if has_summary_paragraph(ref)]
    return {
        "list_when_teacher_lists": sum(listed) / len(listed) if listed else 0.0,
        "summary_when_teacher_summarizes": sum(summed) / len(summed) if summed else 0.0,
        "unigram_intersection": sum(map(unigram_intersection, replies, references)) / max(1, len(replies)),
        "length_correlation": pearson([len(r.split()) for r in replies], [len(r.split()) for r in references]),
        "teacher_lists": len(listed), "teacher_summarizes": len(summed),
    }


def item_outcomes(items: list[dict], replies: list[str], references: list[str] | None) -> ItemOutcomes:
    """Per prompt: each marker, their mean, the length; with references the Table 2 values (None where
    the teacher did not list / summarize: those prompts do not count for that rate)."""
    flags = [marker_flags(r) for r in replies]
    values: dict[str, list] = {name: [f[name] for f in flags] for name in MARKERS}
    values["style_score"] = [sum(f.values()) / len(MARKERS) for f in flags]
    values["mean_words"] = [len(r.split()) for r in replies]
    derived = {}
    if references is not None:
        pairs = list(zip(replies, references, strict=True))
        values["list_when_teacher_lists"] = [is_list(r) if is_list(ref) else None for r, ref in pairs]
        values["summary_when_teacher_summarizes"] = [has_summary_paragraph(r) if has_summary_paragraph(ref) else None
                                                     for r, ref in pairs]
        values["unigram_intersection"] = [unigram_intersection(r, ref) for r, ref in pairs]
        values["reference_words"] = [len(ref.split()) for ref in references]
        derived["length_correlation"] = {"stat": "pearson", "of": ["mean_words", "reference_words"]}
    return outcomes([item["id"] for item in items], values, derived=derived)


@dataclass
class StyleSettings:
    version: int = VERSION
    path: str = "data/demo/style_prompts.jsonl"
    references_path: str | None = None  # JSONL {"id", "reference"}: the teacher's replies, for Table 2
    limit: int | None = None
    max_new_tokens: int = 160
    batch_size: int = 16


def load_references(path: str | None, items: list[dict]) -> list[str] | None:
    if path is None:
        return [item["reference"] for item in items] if items and all("reference" in i for i in items) else None
    with open(resolve_path(path), encoding="utf-8") as handle_file:
        by_id = {row["id"]: row["reference"] for row in map(json.loads, filter(str.strip, handle_file))}
    missing = [item["id"] for item in items if item["id"] not in by_id]
    if missing:
        raise ValueError(f"style: no reference for {len(missing)} prompt(s) in {path}, e.g. {missing[0]}")
    return [by_id[item["id"]] for item in items]


def run(handle, settings: StyleSettings) -> BenchmarkResult:
    start = time.perf_counter()
    full = resolve_path(settings.path)
    with open(full, encoding="utf-8") as handle_file:
        items = [json.loads(line) for line in handle_file if line.strip()][: settings.limit]
    prompts = [handle.chat_prompt(item["prompt"]) for item in items]  # chat replies are what style is about
    outputs = handle.generate(prompts, settings.max_new_tokens, batch_size=settings.batch_size, chat=True,
                              desc="style")
    predictions = [{"id": item["id"], "prompt": item["prompt"], "output": out, **marker_flags(out)}
                   for item, out in zip(items, outputs, strict=True)]
    metrics = marker_rates(outputs)
    references = load_references(settings.references_path, items)
    if references is not None:
        metrics.update(table2(outputs, references))
        for prediction, reference in zip(predictions, references, strict=True):
            prediction.update({"gold": reference, "list": is_list(prediction["output"]),
                               "summary": has_summary_paragraph(prediction["output"])})
    return BenchmarkResult("style", VERSION, metrics, predictions,
                           settings={"chat_wrapped": True, "decoding": "greedy", "markers": list(MARKERS)},
                           seconds=time.perf_counter() - start, items=item_outcomes(items, outputs, references))
