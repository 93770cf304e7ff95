"""Evaluation speed on the embedded SmolLM2-135M, each against a baseline run alongside.

1. MMLU: our letter mode (each subject's k-shot prefix run once, its KV cache shared by that subject's
   questions, the suffixes packed into rows) against lm-evaluation-harness's HF backend, same model
   object, same data, same 5 shots; the two must pick the same letter for every question (asserted).
   The data: BENCH_MMLU_QUESTIONS (100) questions over 4 subjects, generated at bench time in the
   hendrycks CSV layout (seeded, written to a temporary directory, never committed) with MMLU-like
   length profiles, from one-line arithmetic to history passages (the 12-question shipped sample
   says little about speed). Timed: our whole benchmark call (data loading, tokenization, scoring)
   against lm-eval's scoring alone (its HFLM.loglikelihood; its task building is reported apart),
   each the median of BENCH_REPEATS (3) runs.
2. Batched greedy generation vs one-prompt-at-a-time HF generate on the NQ demo prompts."""

from __future__ import annotations

import csv
import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from src.benchmarks import run_benchmark
from src.benchmarks.nq import build_prompt, load_nq
from src.models.hf import load_handle
from src.models.sources import model_config_by_name

PROMPTS = 16
NEW_TOKENS = 24
MMLU_QUESTIONS = int(os.environ.get("BENCH_MMLU_QUESTIONS", "100"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))

# MMLU-like length profiles (words: median and log-normal sigma of the question, of each choice), from
# a one-line sum to a history question over a quoted passage (MMLU's longest prompts are of that kind).
# Shorter than real MMLU's (5-shot prompts of ~230-570 tokens here, mean 375; ~600 on average in MMLU) so that
# lm-eval's side fits a bench on 2 CPU cores; the ratio is the suffix's share of each prompt.
MMLU_SUBJECTS = {
    "elementary_mathematics": ((8, 0.4), (2, 0.5), False),
    "high_school_biology": ((14, 0.5), (3, 0.6), False),
    "professional_law": ((26, 0.4), (5, 0.5), False),
    "high_school_european_history": ((28, 0.35), (4, 0.5), True),
}
WORDS = ("the of and to in is was for that with as by on are from at which be this an or has have it not its "
         "were their been more other these when than into only most some such many also what all would can may "
         "between over first after two three where each under both while during about through system energy "
         "cell water law court state theory value process market force population function number species rate "
         "change light history government treaty war empire church reform trade contract plaintiff defendant "
         "evidence statute liability property tenant owner damages protein enzyme membrane gene organism acid "
         "reaction equation integer fraction angle triangle circle sum product ratio percent area volume mass "
         "velocity pressure temperature heat charge king parliament revolution century colony nation author "
         "passage claim argument").split()


def write_mmlu_like(root: Path, n_questions: int = MMLU_QUESTIONS, seed: int = 0) -> list[str]:
    """A seeded MMLU-format set in the hendrycks layout (dev/<subject>_dev.csv with 5 rows, test/
    <subject>_test.csv, rows question,A,B,C,D,answer, no header); returns the subjects."""
    rng = random.Random(seed)

    def words(median: float, sigma: float) -> str:
        n = max(1, round(rng.lognormvariate(math.log(median), sigma)))
        text = " ".join(rng.choice(WORDS) for _ in range(n))
        return text[0].upper() + text[1:]

    def row(profile) -> list[str]:
        (q_median, q_sigma), (c_median, c_sigma), passage = profile
        question = words(q_median, q_sigma) + "?"
        if passage:  # as MMLU's history questions: a quoted passage, then the question on its own line
            question = ("This question refers to the following information.\n" + words(q_median, q_sigma) + ".\n"
                        + words(14, 0.3) + "?")
        if rng.random() < 0.3:
            question = question.replace(" the ", f" {rng.randint(2, 999)} ", 1)
        return [question, *(words(c_median, c_sigma) for _ in range(4)), rng.choice("ABCD")]

    subjects = list(MMLU_SUBJECTS)
    per_subject = [n_questions // len(subjects) + (i < n_questions % len(subjects)) for i in range(len(subjects))]
    for split in ("dev", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
    for subject, n in zip(subjects, per_subject, strict=True):
        for split, count in (("dev", 5), ("test", n)):
            with open(root / split / f"{subject}_{split}.csv", "w", encoding="utf-8", newline="") as handle:
                csv.writer(handle).writerows(row(MMLU_SUBJECTS[subject]) for _ in range(count))
    return subjects


def _lm_eval_timed(handle, data: Path, directory: Path) -> tuple[dict, float, float]:
    """lm-eval's MMLU over `data`: (its predictions, seconds in its HFLM.loglikelihood, whole call)."""
    from lm_eval.models.huggingface import HFLM

    from src.benchmarks.lm_eval_check import run_lm_eval

    scoring = []
    original = HFLM.loglikelihood

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            scoring.append(time.perf_counter() - start)

    HFLM.loglikelihood = timed
    try:
        start = time.perf_counter()
        out = run_lm_eval(handle.model, handle.tokenizer, str(data), directory, shots=5)
        whole = time.perf_counter() - start
    finally:
        HFLM.loglikelihood = original
    return out, sum(scoring), whole


def _mmlu(handle) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "mmlu"
        subjects = write_mmlu_like(data)
        settings = {"path": str(data), "subjects": subjects, "shots": 5, "prompt_format": "plain"}
        ours_s, theirs_s, theirs_whole = [], [], []
        for i in range(REPEATS):
            start = time.perf_counter()
            ours = run_benchmark("mmlu", settings, handle)
            ours_s.append(time.perf_counter() - start)
            theirs, scoring, whole = _lm_eval_timed(handle, data, Path(tmp) / f"tasks{i}")
            theirs_s.append(scoring)
            theirs_whole.append(whole)
            print(f"mmlu repeat {i + 1}/{REPEATS}: ours {ours_s[-1]:.1f} s, lm-eval scoring {scoring:.1f} s "
                  f"(whole call {whole:.1f} s)", flush=True)
    n = len(ours.predictions)
    theirs_letters = ["ABCD"[i] for s in subjects for i in theirs["predictions"][s]]
    mine = [p["output"] for p in ours.predictions]
    differ = [i for i, (a, b) in enumerate(zip(mine, theirs_letters, strict=True)) if a != b]
    assert not differ, f"MMLU bench: our letters differ from lm-eval's at questions {differ}"
    macro = sum(theirs["acc"].values()) / len(theirs["acc"])
    ours_m, theirs_m = statistics.median(ours_s), statistics.median(theirs_s)
    return {"name": f"MMLU, SmolLM2-135M, {n} generated MMLU-format questions over {len(subjects)} subjects, 5-shot: "
                    f"our whole benchmark call vs lm-eval's HF scoring (s, median of {REPEATS}; same {n}/{n} "
                    f"predictions, macro acc {ours.metrics['acc_macro']:.3f} vs {macro:.3f}; lm-eval's whole call "
                    f"{statistics.median(theirs_whole):.1f} s)",
            "ours": ours_m, "baseline": theirs_m, "ratio": theirs_m / ours_m, "unit": "seconds; ratio = baseline / ours",
            "target": ">= 3x", "repeats": {"ours": ours_s, "baseline": theirs_s, "baseline_whole_call": theirs_whole}}


@torch.no_grad()
def _generation(handle) -> dict:
    shots = load_nq("data/nq/nq_open_shots.jsonl")[:3]
    prompts = [build_prompt(q["question"], shots) for q in load_nq("data/nq/nq_open_demo.jsonl")[:PROMPTS]]
    start = time.perf_counter()
    batched = handle.generate(prompts, NEW_TOKENS, batch_size=PROMPTS, desc="bench batched")
    ours_s = time.perf_counter() - start
    tok = handle.tokenizer
    start = time.perf_counter()
    single = []
    for prompt in prompts:
        ids = tok(prompt, return_tensors="pt")
        out = handle.model.generate(**ids, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tok.pad_token_id)
        single.append(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    theirs_s = time.perf_counter() - start
    same = sum(a == b for a, b in zip(batched, single, strict=True))
    return {"name": f"greedy generation, {PROMPTS} NQ prompts x {NEW_TOKENS} tokens (same text {same}/{PROMPTS}) "
                    "vs one-at-a-time HF generate",
            "ours": PROMPTS / ours_s, "baseline": PROMPTS / theirs_s, "ratio": theirs_s / ours_s,
            "unit": "prompts/s", "target": ">= 3x"}


def run() -> list[dict]:
    handle = load_handle(model_config_by_name("smollm2_135m"), "~/.cache/imitation-gap", torch.device("cpu"),
                         trained=False)
    return [_mmlu(handle), _generation(handle)]
