"""Evaluation speed on the embedded SmolLM2-135M, each against a baseline run alongside:
MMLU questions/s (our letter mode with the shared k-shot KV cache) vs lm-evaluation-harness's HF
backend on the same model object and the same local data, with both predictions compared; and batched
generation vs one-prompt-at-a-time HF generate on the NQ demo prompts."""

from __future__ import annotations

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


def _mmlu(handle) -> dict:
    from src.benchmarks.lm_eval_check import run_lm_eval

    start = time.perf_counter()
    ours = run_benchmark("mmlu", {"shots": 5}, handle)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    theirs = run_lm_eval(handle.model, handle.tokenizer, "data/mmlu", Path(tempfile.mkdtemp()), shots=5)
    theirs_s = time.perf_counter() - start
    n = len(ours.predictions)
    theirs_letters = ["ABCD"[i] for s in theirs["acc"] for i in theirs["predictions"][s]]
    same = sum(p["output"] == t for p, t in zip(ours.predictions, theirs_letters, strict=True))
    macro = sum(theirs["acc"].values()) / len(theirs["acc"])
    return {"name": f"MMLU questions/s, {n} q 5-shot (same predictions {same}/{n}; macro acc "
                    f"{ours.metrics['acc_macro']:.3f} vs {macro:.3f}) vs lm-eval HF",
            "ours": n / ours_s, "baseline": n / theirs_s, "ratio": theirs_s / ours_s, "unit": "questions/s",
            "target": ">= 3x"}


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
