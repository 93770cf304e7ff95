"""Benchmark registry: name -> (settings dataclass, run function).

A benchmark is data + prompt + output type + metrics + version. `run(handle, settings)` returns a
BenchmarkResult whose predictions are written to predictions.jsonl and metrics (with every setting
used) to metrics.json, so results can be audited and re-scored without regenerating.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from src.benchmarks import (
    cache,
    humaneval,
    judge,
    mmlu,
    nq,
    style,
    toxicity,
    toy_cloze,
    toy_mc,
    toy_qa,
    toy_style,
)
from src.benchmarks.base import BenchmarkResult
from src.config import ConfigError, build_dataclass

BENCHMARKS: dict[str, tuple[type, Callable[..., BenchmarkResult]]] = {
    "judge": (judge.JudgeSettings, judge.run),
    "mmlu": (mmlu.MMLUSettings, mmlu.run),
    "nq": (nq.NQSettings, nq.run),
    "humaneval": (humaneval.HumanEvalSettings, humaneval.run),
    "style": (style.StyleSettings, style.run),
    "toxicity": (toxicity.ToxicitySettings, toxicity.run),
    # the toy world (src/toyworld): the same study on a synthetic world small enough for a laptop
    "toy_qa": (toy_qa.ToyQASettings, toy_qa.run),
    "toy_cloze": (toy_cloze.ToyClozeSettings, toy_cloze.run),
    "toy_mc": (toy_mc.ToyMCSettings, toy_mc.run),
    "toy_style": (toy_style.ToyStyleSettings, toy_style.run),
}


def benchmark_settings(name: str, raw: dict[str, Any]) -> Any:
    if name not in BENCHMARKS:
        raise ConfigError(f"benchmark '{name}' is not known (known: {', '.join(BENCHMARKS)})")
    settings = build_dataclass(BENCHMARKS[name][0], dict(raw), f"benchmark.{name}")
    if hasattr(settings, "validate"):
        settings.validate()
    return settings


def validate_benchmarks(section: dict[str, dict[str, Any]]) -> None:
    for name, raw in section.items():
        benchmark_settings(name, raw)


def run_benchmark(name: str, raw: dict[str, Any], handle) -> BenchmarkResult:
    settings = benchmark_settings(name, raw)
    result = BENCHMARKS[name][1](handle, settings)
    result.requested = dataclasses.asdict(settings)
    result.settings = {**result.requested, **result.settings}  # a benchmark may resolve defaults (ks=None -> [1])
    return result


def run_benchmark_cached(name: str, raw: dict[str, Any], handle, cache_root: Path | None,
                         model_identity: dict[str, Any]) -> tuple[BenchmarkResult, bool]:
    """(result, cache hit). The base model's scores are computed once per model + benchmark + version +
    settings + data and reused by every cell of a grid; trained models always evaluate."""
    if cache_root is None or handle.trained:
        return run_benchmark(name, raw, handle), False
    key = cache.cache_key(model_identity, name, benchmark_settings(name, raw))

    def compute() -> BenchmarkResult:
        result = run_benchmark(name, raw, handle)
        result.settings["base_cache_key"] = key
        return result

    return cache.cached(cache_root, key, compute)
