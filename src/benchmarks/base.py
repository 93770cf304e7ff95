"""Records shared by every benchmark."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.benchmarks.uncertainty import ItemOutcomes
from src.io import write_json_atomic, write_text_atomic


@dataclass
class BenchmarkResult:
    name: str
    version: int
    metrics: dict[str, float]  # higher is better unless named in lower_is_better
    predictions: list[dict[str, Any]]  # prompt, output, gold, score per example
    settings: dict[str, Any] = field(default_factory=dict)  # everything that shaped the numbers
    lower_is_better: list[str] = field(default_factory=list)
    requested: dict[str, Any] = field(default_factory=dict)  # the settings as configured (what a rerun compares)
    seconds: float = 0.0
    items: ItemOutcomes | None = None  # per-item outcomes behind the metrics (paired comparisons use them)
    uncertainty: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> stderr, ci95, n, method

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in self.predictions)
        write_text_atomic(directory / "predictions.jsonl", lines)
        write_json_atomic(directory / "metrics.json", {
            "benchmark": self.name, "version": self.version, "metrics": self.metrics,
            "lower_is_better": self.lower_is_better, "settings": self.settings,
            "requested": self.requested, "uncertainty": self.uncertainty,
            "items": self.items.to_dict() if self.items else None,
            "n": len(self.predictions), "seconds": round(self.seconds, 2),
        })


def use_chat(prompt_format: str, handle) -> bool:
    """auto: chat-wrapped prompts for imitation-trained models, plain for the base (as the study)."""
    if prompt_format == "auto":
        return handle.trained
    return prompt_format == "chat"
