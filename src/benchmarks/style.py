"""Style match: how often replies to held-out prompts carry the teacher's markers (the study's
Table 2 analogue, with markers instead of a GPT-4 judge). Prompts: JSONL {"id", "prompt"}.

The markers are the demo teacher's manner (a fixed opening, a numbered list, a fixed sign-off);
data/demo/teacher.json records how often the teacher itself used each, so the numbers have a ceiling.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

from src import resolve_path
from src.benchmarks.base import BenchmarkResult

VERSION = 1

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


@dataclass
class StyleSettings:
    version: int = VERSION
    path: str = "data/demo/style_prompts.jsonl"
    limit: int | None = None
    max_new_tokens: int = 160
    batch_size: int = 16


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
    return BenchmarkResult("style", VERSION, metrics, predictions,
                           settings={"chat_wrapped": True, "decoding": "greedy", "markers": list(MARKERS)},
                           seconds=time.perf_counter() - start)
