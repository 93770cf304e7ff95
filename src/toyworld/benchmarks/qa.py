"""Toy world, closed-book chat QA (the NQ analogue): "Where does Naru live?" about the evaluated
entities, always chat-wrapped, greedy. Exact match of the short answer (the last word of the reply's
first sentence after the teacher's preamble: "Naru lives in oslo." -> "oslo") against the value.

`mentions` is the lenient twin: the reply names the right value and no other value of that attribute,
in any form, so a right fact in the wrong format still shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from src.benchmarks.base import BenchmarkResult
from src.benchmarks.uncertainty import outcomes
from src.toyworld.files import default_item_path, read_items
from src.toyworld.teacher import extract_answer, words
from src.toyworld.world import VALUES

VERSION = 1


@dataclass
class ToyQASettings:
    version: int = VERSION
    path: str = field(default_factory=lambda: default_item_path("qa"))  # written by src.toyworld.files
    limit: int | None = None
    max_new_tokens: int = 24  # the teacher's whole reply is 20 words
    batch_size: int = 32


def mentions_only(reply: str, answer: str, attribute: str) -> bool:
    named = set(words(reply)) & set(VALUES[attribute])
    return named == {answer}


def run(handle, settings: ToyQASettings) -> BenchmarkResult:
    start = time.perf_counter()
    items = read_items(settings.path, settings.limit)
    prompts = [handle.chat_prompt(item["question"]) for item in items]
    outputs = handle.generate(prompts, settings.max_new_tokens, batch_size=settings.batch_size, chat=True,
                              desc="toy_qa")
    predictions = []
    for item, prompt, output in zip(items, prompts, outputs, strict=True):
        extracted = extract_answer(output)
        predictions.append({"id": item["id"], "attribute": item["attribute"], "prompt": prompt, "output": output,
                            "extracted": extracted, "gold": item["answer"],
                            "em": float(extracted == item["answer"]),
                            "mentions": float(mentions_only(output, item["answer"], item["attribute"]))})
    n = max(1, len(predictions))
    metrics = {"em": sum(p["em"] for p in predictions) / n, "mentions": sum(p["mentions"] for p in predictions) / n}
    for attribute in sorted({p["attribute"] for p in predictions}):
        rows = [p for p in predictions if p["attribute"] == attribute]
        metrics[f"em/{attribute}"] = sum(p["em"] for p in rows) / len(rows)
    return BenchmarkResult("toy_qa", VERSION, metrics, predictions,
                           settings={"chat_wrapped": True, "decoding": "greedy"},
                           seconds=time.perf_counter() - start,
                           items=outcomes([p["id"] for p in predictions],
                                          {"em": [p["em"] for p in predictions],
                                           "mentions": [p["mentions"] for p in predictions]},
                                          [p["attribute"] for p in predictions],
                                          {f"em/{a}": {"stat": "group", "of": "em", "group": a}
                                           for a in sorted({p["attribute"] for p in predictions})}))
