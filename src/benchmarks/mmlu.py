"""MMLU: k-shot multiple choice from the dev split, scored by log-likelihood (no generation).

Data: a directory in the hendrycks layout (`dev/<subject>_dev.csv`, `test/<subject>_test.csv`, rows
question,A,B,C,D,answer without a header), or a hub id in the `cais/mmlu` layout (one config per
subject; fields question, choices, answer as an index). The prompt is lm-evaluation-harness's:

    The following are multiple choice questions (with answers) about <subject>.\\n\\n
    <question>\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: <letter>\\n\\n   (k dev examples)
    <question>\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:

Modes: `letter` compares the next-token log-probs of " A".." D" after each question; the subject's
shared k-shot prefix runs once and its KV cache is shared by every question of the subject, whose
suffixes run `batch_size` at a time packed end to end in one row against it (src/models/hf.py; the
same predictions as one whole forward per question, and as lm-evaluation-harness); `loglikelihood` scores each choice
as a continuation (" A" or the answer text, `choice_text`), four sequences per question. An
encoder-decoder model reads the whole prompt in its encoder and scores the letter as its decoder's
first token (src/models/seq2seq.py; no prefix is shared there). Metrics: macro accuracy (unweighted
mean over subjects, the study's number) and micro accuracy (over questions).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

from src import resolve_path
from src.benchmarks.base import BenchmarkResult, use_chat
from src.benchmarks.uncertainty import ItemOutcomes, outcomes
from src.config import ConfigError

VERSION = 1
LETTERS = ("A", "B", "C", "D")


@dataclass
class MMLUSettings:
    version: int = VERSION
    path: str = "data/mmlu"             # local hendrycks-layout directory, or a hub id (cais/mmlu)
    subjects: list[str] | None = None   # None: every subject the test split holds
    shots: int = 5                      # from the dev split, in file order (as lm-eval and hendrycks)
    limit: int | None = None            # first N test questions per subject
    mode: str = "letter"                # letter | loglikelihood
    choice_text: str = "letter"         # loglikelihood mode: score " A" (letter) or " <answer text>" (answer)
    prompt_format: str = "auto"         # auto: plain for the base model, chat-wrapped after imitation
    shared_prefix: bool = True          # reuse the k-shot prefix's KV cache (same predictions, faster)
    batch_size: int = 16

    def validate(self) -> None:
        if self.mode not in {"letter", "loglikelihood"}:
            raise ConfigError(f"benchmark.mmlu.mode: {self.mode!r} is not letter or loglikelihood")
        if self.choice_text not in {"letter", "answer"}:
            raise ConfigError(f"benchmark.mmlu.choice_text: {self.choice_text!r} is not letter or answer")
        if self.prompt_format not in {"auto", "plain", "chat"}:
            raise ConfigError(f"benchmark.mmlu.prompt_format: {self.prompt_format!r} is not auto, plain or chat")
        if not 0 <= self.shots <= 5:
            raise ConfigError("benchmark.mmlu.shots must be between 0 and 5 (the dev split has 5 per subject)")


@dataclass
class Question:
    subject: str
    question: str
    choices: list[str]
    answer: int  # index into LETTERS


def _read_csv(path: Path, subject: str) -> list[Question]:
    rows = []
    with open(path, encoding="utf-8", newline="") as handle:
        for lineno, row in enumerate(csv.reader(handle), start=1):
            if not row:
                continue
            if len(row) != 6:
                raise ValueError(f"{path}:{lineno}: expected question,A,B,C,D,answer; got {len(row)} columns")
            key = row[5].strip()
            if key not in LETTERS:
                raise ValueError(f"{path}:{lineno}: answer key {key!r} is not one of A, B, C, D")
            rows.append(Question(subject, row[0], row[1:5], LETTERS.index(key)))
    return rows


def list_subjects(path: str) -> list[str]:
    test = resolve_path(path) / "test"
    if not test.is_dir():
        raise ValueError(f"MMLU: {test} does not exist (a hendrycks-layout directory needs test/ and dev/)")
    return sorted(p.name.removesuffix("_test.csv") for p in test.glob("*_test.csv"))


def load_split(path: str, subject: str, split: str) -> list[Question]:
    local = resolve_path(path)
    if local.is_dir():
        file = local / split / f"{subject}_{split}.csv"
        if not file.exists():
            raise ValueError(f"MMLU: no {split} split for subject '{subject}' ({file} is missing)")
        return _read_csv(file, subject)
    from datasets import load_dataset  # hub layout: cais/mmlu, one config per subject

    rows = load_dataset(path, subject, split=split)
    out = []
    for row in rows:
        if row["answer"] not in range(4) or len(row["choices"]) != 4:
            raise ValueError(f"MMLU {path}/{subject}/{split}: answer {row['answer']} or choices outside A-D")
        out.append(Question(subject, row["question"], list(row["choices"]), int(row["answer"])))
    return out


def format_question(q: Question) -> str:
    options = "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices, strict=True))
    return f"{q.question.strip()}{options}\nAnswer:"


def build_prompt(q: Question, shots: list[Question]) -> str:
    header = f"The following are multiple choice questions (with answers) about {q.subject.replace('_', ' ')}.\n\n"
    demos = "".join(f"{format_question(s)} {LETTERS[s.answer]}\n\n" for s in shots)
    return header + demos + format_question(q)


def letter_token_ids(handle, prompt: str, chat: bool, delimiter: str) -> list[int]:
    """The token each answer letter becomes right after this prompt; each must be a single token that
    extends the prompt's tokens (else the letter mode would compare the wrong thing).

    An encoder-decoder model (src/models/seq2seq.py) scores the letter as its decoder's first token,
    so there each letter is the delimiter and letter tokenized alone (its `decoder_tokens`), the tokens
    its loglikelihood mode scores too."""
    decoder_tokens = getattr(handle, "decoder_tokens", None)
    if decoder_tokens is not None:
        ids = [decoder_tokens(delimiter + letter) for letter in LETTERS]
        if any(len(tokens) != 1 for tokens in ids):
            raise ConfigError(f"benchmark.mmlu: {delimiter + 'A'!r}..{delimiter + 'D'!r} are not one token each as "
                              "the decoder's first token under this tokenizer; use mode=loglikelihood")
        return [tokens[0] for tokens in ids]
    base = handle.encode(prompt, chat)
    ids = []
    for letter in LETTERS:
        whole = handle.encode(prompt + delimiter + letter, chat)
        if whole[:len(base)] != base or len(whole) != len(base) + 1:
            raise ConfigError(f"benchmark.mmlu: {delimiter + letter!r} is not one token after the prompt under "
                              "this tokenizer; use mode=loglikelihood")
        ids.append(whole[-1])
    return ids


def run(handle, settings: MMLUSettings) -> BenchmarkResult:
    start = time.perf_counter()
    local = resolve_path(settings.path).is_dir()
    subjects = settings.subjects or (list_subjects(settings.path) if local else None)
    if not subjects:
        raise ConfigError("benchmark.mmlu.subjects: name the subjects when loading from a hub id")
    chat = use_chat(settings.prompt_format, handle)
    delimiter = " "
    predictions = []
    per_subject: dict[str, float] = {}
    for subject in subjects:
        shots = load_split(settings.path, subject, "dev")[: settings.shots]
        if len(shots) < settings.shots:
            raise ValueError(f"MMLU: subject '{subject}' has {len(shots)} dev examples; {settings.shots} shots asked")
        questions = load_split(settings.path, subject, "test")[: settings.limit]
        if not questions:
            raise ValueError(f"MMLU: subject '{subject}' has no test questions")
        prompts = [build_prompt(q, shots) for q in questions]
        if chat:
            prompts = [handle.chat_prompt(p) for p in prompts]
            delimiter = "" if prompts[0][-1:].isspace() else " "  # the reply starts right after the turn marker
        scores = _score(handle, settings, prompts, questions, chat, delimiter, subject)
        correct = 0
        for q, prompt, row in zip(questions, prompts, scores, strict=True):
            pred = max(range(4), key=lambda i, row=row: row[i])
            correct += pred == q.answer
            predictions.append({"subject": subject, "question": q.question, "prompt": prompt,
                                "output": LETTERS[pred], "gold": LETTERS[q.answer],
                                "logprobs": [round(x, 4) for x in row], "correct": pred == q.answer})
        per_subject[subject] = correct / len(questions)
    metrics = {"acc_macro": sum(per_subject.values()) / len(per_subject),
               "acc_micro": sum(p["correct"] for p in predictions) / len(predictions)}
    metrics.update({f"acc/{s}": acc for s, acc in per_subject.items()})
    return BenchmarkResult("mmlu", VERSION, metrics, predictions,
                           settings={"chat_wrapped": chat, "subjects": subjects, "target_delimiter": delimiter,
                                     "fewshot_split": "dev", "n_subjects": len(subjects)},
                           seconds=time.perf_counter() - start, items=item_outcomes(predictions, subjects))


def item_outcomes(predictions: list[dict], subjects: list[str]) -> ItemOutcomes:
    """Per question: correct or not, with its subject (acc_macro is the mean of the subjects' means)."""
    seen: dict[str, int] = {}
    ids = []
    for p in predictions:
        ids.append(f"{p['subject']}/{seen.setdefault(p['subject'], 0)}")
        seen[p["subject"]] += 1
    return outcomes(ids, {"acc_micro": [p["correct"] for p in predictions]}, [p["subject"] for p in predictions],
                    {"acc_macro": {"stat": "macro", "of": "acc_micro"},
                     **{f"acc/{s}": {"stat": "group", "of": "acc_micro", "group": s} for s in subjects}})


def _score(handle, settings: MMLUSettings, prompts: list[str], questions: list[Question], chat: bool,
           delimiter: str, subject: str) -> list[list[float]]:
    if settings.mode == "letter":
        ids = letter_token_ids(handle, prompts[0], chat, delimiter)
        return handle.next_token_logprobs(prompts, ids, batch_size=settings.batch_size, chat=chat,
                                          shared_prefix=settings.shared_prefix, desc=f"mmlu {subject}")
    requests = []
    for prompt, q in zip(prompts, questions, strict=True):
        texts = LETTERS if settings.choice_text == "letter" else q.choices
        requests += [(prompt, delimiter + text) for text in texts]
    scored = handle.loglikelihood(requests, batch_size=settings.batch_size, chat=chat,
                                  shared_prefix=settings.shared_prefix, desc=f"mmlu {subject}")
    return [[s for s, _ in scored[i:i + 4]] for i in range(0, len(scored), 4)]
