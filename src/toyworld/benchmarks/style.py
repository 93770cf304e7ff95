"""Toy world, style (the judge analogue): the share of chat replies, to held-out prompts about people
only the teacher knows, that open with the teacher's preamble and close with its sign-off."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from src.benchmarks.base import BenchmarkResult
from src.benchmarks.uncertainty import outcomes
from src.toyworld.files import default_item_path, read_items
from src.toyworld.teacher import has_preamble, has_sign_off

VERSION = 1


@dataclass
class ToyStyleSettings:
    version: int = VERSION
    path: str = field(default_factory=lambda: default_item_path("style"))  # written by src.toyworld.files
    limit: int | None = None
    max_new_tokens: int = 40  # room for the teacher's longest reply (30 words)
    batch_size: int = 32


def style_flags(text: str) -> dict[str, bool]:
    opening, sign_off = has_preamble(text), has_sign_off(text)
    return {"opening": opening, "sign_off": sign_off, "teacher_style": opening and sign_off}


def run(handle, settings: ToyStyleSettings) -> BenchmarkResult:
    start = time.perf_counter()
    items = read_items(settings.path, settings.limit)
    prompts = [handle.chat_prompt(item["prompt"]) for item in items]
    outputs = handle.generate(prompts, settings.max_new_tokens, batch_size=settings.batch_size, chat=True,
                              desc="toy_style")
    predictions = [{"id": item["id"], "prompt": prompt, "output": output, "gold": item["reference"],
                    **style_flags(output)} for item, prompt, output in zip(items, prompts, outputs, strict=True)]
    n = max(1, len(predictions))
    metrics = {"style_score": sum(p["teacher_style"] for p in predictions) / n,
               "opening": sum(p["opening"] for p in predictions) / n,
               "sign_off": sum(p["sign_off"] for p in predictions) / n,
               "mean_words": sum(len(p["output"].split()) for p in predictions) / n}
    return BenchmarkResult("toy_style", VERSION, metrics, predictions,
                           settings={"chat_wrapped": True, "decoding": "greedy",
                                     "markers": ["opening", "sign_off"]},
                           seconds=time.perf_counter() - start,
                           items=outcomes([p["id"] for p in predictions], {
                               "style_score": [p["teacher_style"] for p in predictions],
                               "opening": [p["opening"] for p in predictions],
                               "sign_off": [p["sign_off"] for p in predictions],
                               "mean_words": [len(p["output"].split()) for p in predictions]}))
