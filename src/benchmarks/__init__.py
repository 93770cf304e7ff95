"""Benchmark registry: name -> Benchmark (settings dataclass, run function).

A benchmark is data + prompt + output type + metrics + version. `run(backend, settings)` returns a
BenchmarkResult whose predictions are written to predictions.jsonl and metrics (with every setting
used) to metrics.json, so results can be audited and re-scored without regenerating. The built-in
benchmarks are listed here; plug-ins register their own (the toy world: src/toyworld/plugin.py).
Tools that are not benchmarks live beside them: human_rating (blinded A/B pairs for people) and
lm_eval_check (the MMLU cross-check against lm-evaluation-harness).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from src.benchmarks import humaneval, judge, mmlu, nq, style, toxicity
from src.benchmarks.base import BenchmarkResult
from src.benchmarks.cache import BaseScores
from src.benchmarks.uncertainty import describe
from src.config import build_dataclass
from src.registry import Registry


@dataclass(frozen=True)
class Benchmark:
    settings: type
    run: Callable[..., BenchmarkResult]
    code: tuple[Callable, ...] = ()  # other code whose edits change the scores (HumanEval's sandbox)


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")
BENCHMARKS.register("judge", Benchmark(judge.JudgeSettings, judge.run))
BENCHMARKS.register("mmlu", Benchmark(mmlu.MMLUSettings, mmlu.run))
BENCHMARKS.register("nq", Benchmark(nq.NQSettings, nq.run))
BENCHMARKS.register("humaneval", Benchmark(humaneval.HumanEvalSettings, humaneval.run,
                                           code=(humaneval.run_tests,)))
BENCHMARKS.register("style", Benchmark(style.StyleSettings, style.run))
BENCHMARKS.register("toxicity", Benchmark(toxicity.ToxicitySettings, toxicity.run))


def benchmark_settings(name: str, raw: dict[str, Any]) -> Any:
    settings = build_dataclass(BENCHMARKS.get(name).settings, dict(raw), f"benchmark.{name}")
    if hasattr(settings, "validate"):
        settings.validate()
    return settings


def validate_benchmarks(section: dict[str, dict[str, Any]]) -> None:
    for name, raw in section.items():
        benchmark_settings(name, raw)


def requested_settings(name: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The settings as configured, as metrics.json records them under "requested" (what a rerun compares)."""
    return dataclasses.asdict(benchmark_settings(name, raw))


def run_benchmark(name: str, raw: dict[str, Any], handle) -> BenchmarkResult:
    settings = benchmark_settings(name, raw)
    result = BENCHMARKS.get(name).run(handle, settings)
    result.requested = dataclasses.asdict(settings)
    result.settings = {**result.requested, **result.settings}  # a benchmark may resolve defaults (ks=None -> [1])
    if not result.uncertainty:  # every metric its items give; a benchmark without items: unknown
        result.uncertainty = describe(result.items, result.metrics)
    return result


def run_benchmark_cached(name: str, raw: dict[str, Any], handle, base_scores: BaseScores | None,
                         model_identity: dict[str, Any]) -> tuple[BenchmarkResult, bool]:
    """(result, cache hit). The base model's scores are computed once per model + benchmark + version +
    settings + data + code and reused by every cell of a grid; trained models always evaluate."""
    if base_scores is None or handle.trained:
        return run_benchmark(name, raw, handle), False
    entry = BENCHMARKS.get(name)
    key = base_scores.key(model_identity, name, benchmark_settings(name, raw), (entry.run, *entry.code))
    return base_scores.get_or_compute(key, lambda: run_benchmark(name, raw, handle))
