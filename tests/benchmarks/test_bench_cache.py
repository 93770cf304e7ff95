"""Base-model scores: computed once per model + benchmark + settings + data, reused across a grid."""

from src.benchmarks import run_benchmark_cached
from src.benchmarks.base import BenchmarkResult
from src.benchmarks.cache import BaseScores
from tests.benchmarks.test_bench_mmlu import ScriptedHandle, write_mmlu

IDENTITY = {"name": "scripted", "dtype": "float32", "device_type": "cpu"}


class CountingHandle(ScriptedHandle):
    def __init__(self, trained=False):
        super().__init__()
        self.trained = trained
        self.calls = 0

    def next_token_logprobs(self, prompts, token_ids, **kwargs):
        self.calls += 1
        return super().next_token_logprobs(prompts, token_ids, **kwargs)


def test_base_scores_are_reused_and_keys_separate(tmp_path):
    data = tmp_path / "mmlu"
    write_mmlu(data, {"x": "A", "y": "AB"})
    raw = {"path": str(data), "shots": 1}
    cache = BaseScores(tmp_path / "cache")
    handle = CountingHandle()
    first, hit1 = run_benchmark_cached("mmlu", raw, handle, cache, IDENTITY)
    second, hit2 = run_benchmark_cached("mmlu", raw, handle, cache, IDENTITY)
    assert (hit1, hit2) == (False, True) and handle.calls == 2  # one call per subject, once
    assert isinstance(second, BenchmarkResult)
    assert second.metrics == first.metrics and second.predictions == first.predictions
    assert second.settings["base_cache_key"] == first.settings["base_cache_key"]

    _, hit = run_benchmark_cached("mmlu", {**raw, "shots": 0}, handle, cache, IDENTITY)  # other settings
    assert not hit
    _, hit = run_benchmark_cached("mmlu", raw, handle, cache, {**IDENTITY, "name": "other"})  # other model
    assert not hit
    (data / "test" / "y_test.csv").write_text("Q?,w,x,y,z,C\n")  # edited data
    changed, hit = run_benchmark_cached("mmlu", raw, handle, cache, IDENTITY)
    assert not hit and changed.metrics["acc/y"] == 0.0


def test_trained_models_always_evaluate(tmp_path):
    write_mmlu(tmp_path / "mmlu", {"x": "A"})
    handle = CountingHandle(trained=True)
    for _ in range(2):
        _, hit = run_benchmark_cached("mmlu", {"path": str(tmp_path / "mmlu"), "shots": 1, "prompt_format": "plain"}, handle,
                                      BaseScores(tmp_path / "cache"), IDENTITY)
        assert not hit
    assert handle.calls == 2 and not (tmp_path / "cache").exists()
