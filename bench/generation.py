"""Batched greedy generation (ModelHandle.generate: left padding, length-sorted batches) vs one prompt
at a time with plain HF generate, on SmolLM2-135M (target >= 3x tokens/s)."""

from __future__ import annotations

import time

import torch

from src.models import load_handle, model_config_by_name

PROMPTS = [f"Q: What is a good way to {task}?\nA:" for task in (
    "learn to cook", "sleep better", "save money", "start running", "read more", "learn chess", "bake bread",
    "write an essay", "plant a tree", "paint a wall", "fix a bike", "learn to swim", "make tea", "study math",
    "clean a room", "plan a trip")]
NEW_TOKENS = 32


def run() -> list[dict]:
    handle = load_handle(model_config_by_name("smollm2_135m"), "~/.cache/imitation-gap", torch.device("cpu"),
                         trained=False)
    tok, model = handle.tokenizer, handle.model
    start = time.perf_counter()
    single_tokens = 0
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = tok(prompt, return_tensors="pt")
            out = model.generate(**ids, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tok.pad_token_id)
            single_tokens += out.shape[1] - ids["input_ids"].shape[1]
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    outputs = handle.generate(PROMPTS, NEW_TOKENS, batch_size=16)
    batched_s = time.perf_counter() - start
    batched_tokens = sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in outputs)
    ours, baseline = batched_tokens / batched_s, single_tokens / single_s
    return [{"name": f"generation, {len(PROMPTS)} prompts x {NEW_TOKENS} tokens: batched vs one at a time (tok/s)",
             "ours": ours, "baseline": baseline, "ratio": ours / baseline, "target": ">= 3x", "unit": "tokens/s"}]
