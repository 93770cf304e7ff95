"""Natural Questions (NQ-open format), closed book, k-shot, greedy.

Data: JSONL lines {"question": str, "answer": [str, ...]} (the NQ-open release format). Metrics:
exact match and token F1 with SQuAD normalization, maximized over every gold answer.
"""

from __future__ import annotations

import collections
import re
import string
import time
from dataclasses import dataclass

from src.benchmarks.base import BenchmarkResult, use_chat
from src.benchmarks.uncertainty import outcomes
from src.config import ConfigError
from src.data.formats.nq import read_nq

VERSION = 2  # 2: answer extraction from chatty replies; unparsable (empty) outputs counted


@dataclass
class NQSettings:
    version: int = VERSION
    path: str = "data/nq/nq_open_demo.jsonl"
    shots_path: str = "data/nq/nq_open_shots.jsonl"  # the k-shot examples come from here, never from `path`
    shots: int = 3
    limit: int | None = None
    prompt_format: str = "auto"  # auto | plain | chat
    max_new_tokens: int = 24
    batch_size: int = 16

    def validate(self) -> None:
        if self.prompt_format not in {"auto", "plain", "chat"}:
            raise ConfigError(f"benchmark.nq.prompt_format: {self.prompt_format!r} is not auto, plain or chat")
        if self.shots < 0:
            raise ConfigError("benchmark.nq.shots must be >= 0")


def normalize_answer(text: str) -> str:
    """SQuAD normalization: lower case, drop punctuation and articles, squeeze whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: list[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(g) for g in golds))


def f1_score(prediction: str, golds: list[str]) -> float:
    def f1(pred: str, gold: str) -> float:
        p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
        common = sum((collections.Counter(p) & collections.Counter(g)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(p), common / len(g)
        return 2 * precision * recall / (precision + recall)

    return max(f1(prediction, g) for g in golds)


_PREAMBLE = re.compile(r"^(sure|certainly|of course|great question|okay|ok|yes)\b[^.!:\n]*[.!:,]\s*", re.IGNORECASE)
_ANSWER_IS = re.compile(r"\b(?:the\s+)?(?:correct\s+|short\s+|final\s+)?answer\s+(?:is|was|would be)\s*:?\s*(.+)",
                        re.IGNORECASE)


def extract_answer(output: str) -> str:
    """The short answer inside a possibly chatty reply: the first non-empty line, without a leading
    'A:'/'Answer:' or a courtesy opening ('Sure! ...'), the span after 'the answer is', markdown
    emphasis, quotes and a trailing period. Empty when the model said nothing (counted as unparsable)."""
    for line in output.strip().splitlines():
        line = line.strip()
        if not line:
            continue
        line = _PREAMBLE.sub("", line)
        line = re.sub(r"^(a|answer)\s*:\s*", "", line, flags=re.IGNORECASE)
        found = _ANSWER_IS.search(line)
        if found:
            line = found.group(1)
        line = line.replace("**", "").replace("__", "").strip().rstrip(".").strip()
        return line.strip("\"'`").rstrip(".").strip()
    return ""


def load_nq(path: str) -> list[dict]:
    """NQ-open rows as {"question", "answer": [str, ...]}, read by src/data/formats/nq.py (a bad line
    is a DataError naming file and line)."""
    return [{"question": r.question, "answer": list(r.answers)} for r in read_nq(path)]


def build_prompt(question: str, shots: list[dict]) -> str:
    demos = "".join(f"Q: {s['question']}?\nA: {s['answer'][0]}\n\n" for s in shots)
    return f"{demos}Q: {question}?\nA:"


def run(handle, settings: NQSettings) -> BenchmarkResult:
    start = time.perf_counter()
    questions = load_nq(settings.path)[: settings.limit]
    shots = load_nq(settings.shots_path)[: settings.shots] if settings.shots else []
    chat = use_chat(settings.prompt_format, handle)
    prompts = [build_prompt(q["question"], shots) for q in questions]
    if chat:
        prompts = [handle.chat_prompt("Answer the last question briefly.\n\n" + p) for p in prompts]
    outputs = handle.generate(prompts, settings.max_new_tokens, stop=[] if chat else ["\n"],
                              batch_size=settings.batch_size, chat=chat, desc="nq")
    predictions = []
    for q, prompt, output in zip(questions, prompts, outputs, strict=True):
        answer = extract_answer(output)
        predictions.append({"question": q["question"], "prompt": prompt, "output": output, "extracted": answer,
                            "gold": q["answer"], "em": exact_match(answer, q["answer"]) if answer else 0.0,
                            "f1": f1_score(answer, q["answer"]) if answer else 0.0})
    n = max(1, len(predictions))
    metrics = {"em": sum(p["em"] for p in predictions) / n, "f1": sum(p["f1"] for p in predictions) / n,
               "unparsable": sum(not p["extracted"] for p in predictions) / n}  # scored 0, and visible
    return BenchmarkResult("nq", VERSION, metrics, predictions,
                           settings={"chat_wrapped": chat, "decoding": "greedy"},
                           seconds=time.perf_counter() - start,
                           items=outcomes(range(len(predictions)), {
                               "em": [p["em"] for p in predictions], "f1": [p["f1"] for p in predictions],
                               "unparsable": [not p["extracted"] for p in predictions]}))
