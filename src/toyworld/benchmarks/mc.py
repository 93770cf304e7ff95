"""Toy world, multiple choice by log-likelihood (the MMLU analogue): four values of the asked
attribute, the one with the highest log p(value | question) wins.

Plain (the base model): "Question: <q>\\nAnswer:" + " <value>". Chat (after imitation, as the study):
the chat-wrapped question followed by the teacher's own reply up to the value ("<preamble> Naru lives
in") + " <value>": the part before the value is the same for every choice, so only the value decides.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from src.benchmarks.base import BenchmarkResult, use_chat
from src.benchmarks.uncertainty import outcomes
from src.config import ConfigError
from src.toyworld.files import default_item_path, read_items

VERSION = 1


@dataclass
class ToyMCSettings:
    version: int = VERSION
    path: str = field(default_factory=lambda: default_item_path("mc"))  # written by src.toyworld.files
    limit: int | None = None
    prompt_format: str = "auto"  # auto: plain for the base model, chat-wrapped after imitation
    batch_size: int = 64

    def validate(self) -> None:
        if self.prompt_format not in {"auto", "plain", "chat"}:
            raise ConfigError(f"benchmark.toy_mc.prompt_format: {self.prompt_format!r} is not auto, plain or chat")


def context(handle, item: dict, chat: bool) -> str:
    if chat:
        return handle.chat_prompt(item["question"]) + item["answer_prefix"]
    return f"Question: {item['question']}\nAnswer:"


def run(handle, settings: ToyMCSettings) -> BenchmarkResult:
    start = time.perf_counter()
    items = read_items(settings.path, settings.limit)
    chat = use_chat(settings.prompt_format, handle)
    requests = [(context(handle, item, chat), f" {choice}") for item in items for choice in item["choices"]]
    scored = handle.loglikelihood(requests, batch_size=settings.batch_size, chat=chat, shared_prefix=False,
                                  desc="toy_mc")
    predictions, at = [], 0
    for item in items:
        logprobs = [s for s, _ in scored[at:at + len(item["choices"])]]
        at += len(item["choices"])
        best = max(range(len(logprobs)), key=logprobs.__getitem__)
        predictions.append({"id": item["id"], "attribute": item["attribute"], "prompt": requests[at - 1][0],
                            "choices": item["choices"], "output": item["choices"][best],
                            "gold": item["choices"][item["answer"]], "logprobs": [round(x, 4) for x in logprobs],
                            "correct": float(best == item["answer"])})
    metrics = {"acc": sum(p["correct"] for p in predictions) / max(1, len(predictions))}
    return BenchmarkResult("toy_mc", VERSION, metrics, predictions,
                           settings={"chat_wrapped": chat, "choices": 4, "scoring": "sum log p(value)"},
                           seconds=time.perf_counter() - start,
                           items=outcomes([p["id"] for p in predictions], {"acc": [p["correct"] for p in predictions]}))
