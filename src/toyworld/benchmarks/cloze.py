"""Toy world, cloze knowledge probe: what the model knows, asked the way the encyclopedia says it.
"Naru lives in" -> is the right city the most likely next word among all cities? One forward per
prompt, plain text (never chat-wrapped), so base and imitation models are probed alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from src.benchmarks.base import BenchmarkResult
from src.benchmarks.uncertainty import outcomes
from src.config import ConfigError
from src.toyworld.files import default_item_path, read_items

VERSION = 1


@dataclass
class ToyClozeSettings:
    version: int = VERSION
    path: str = field(default_factory=lambda: default_item_path("cloze"))  # written by src.toyworld.files
    limit: int | None = None
    batch_size: int = 64


def value_token_ids(handle, prompt: str, values: list[str]) -> list[int]:
    """Each value must be one token right after the prompt, else the probe would compare the wrong thing."""
    base = handle.encode(prompt)
    ids = []
    for value in values:
        whole = handle.encode(f"{prompt} {value}")
        if whole[: len(base)] != base or len(whole) != len(base) + 1:
            raise ConfigError(f"benchmark.toy_cloze: {value!r} is not one token after {prompt!r}")
        ids.append(whole[-1])
    return ids


def run(handle, settings: ToyClozeSettings) -> BenchmarkResult:
    start = time.perf_counter()
    items = read_items(settings.path, settings.limit)
    predictions = []
    for attribute in sorted({item["attribute"] for item in items}):
        group = [item for item in items if item["attribute"] == attribute]
        choices = group[0]["choices"]
        ids = value_token_ids(handle, group[0]["prompt"], choices)
        rows = handle.next_token_logprobs([item["prompt"] for item in group], ids, batch_size=settings.batch_size,
                                          shared_prefix=False, desc=f"toy_cloze {attribute}")
        for item, logprobs in zip(group, rows, strict=True):
            best = max(range(len(choices)), key=lambda i, lp=logprobs: lp[i])
            predictions.append({"id": item["id"], "attribute": attribute, "prompt": item["prompt"],
                                "output": choices[best], "gold": item["answer"],
                                "correct": float(choices[best] == item["answer"])})
    n = max(1, len(predictions))
    metrics = {"acc": sum(p["correct"] for p in predictions) / n}
    for attribute in sorted({p["attribute"] for p in predictions}):
        rows = [p for p in predictions if p["attribute"] == attribute]
        metrics[f"acc/{attribute}"] = sum(p["correct"] for p in rows) / len(rows)
    return BenchmarkResult("toy_cloze", VERSION, metrics, predictions,
                           settings={"chat_wrapped": False, "scoring": "argmax next-token log-prob over the values"},
                           seconds=time.perf_counter() - start,
                           items=outcomes([p["id"] for p in predictions], {"acc": [p["correct"] for p in predictions]},
                                          [p["attribute"] for p in predictions],
                                          {f"acc/{a}": {"stat": "group", "of": "acc", "group": a}
                                           for a in sorted({p["attribute"] for p in predictions})}))
