"""A DPO step's cost against an SFT step on the same tokens; every figure the median of REPEATS (>= 3).

The tokens: PAIRS preference pairs built from the demo set (a conversation's prompt, its reply as
chosen and another conversation's reply as rejected), so 2 x PAIRS sequences, packed whole into rows
(src/training/dpo.py pack_whole) with labels on the replies only. The SFT step trains on exactly those
rows (the cross-entropy over the same reply tokens, src/training/loop.py token_loss_sum); the DPO step
computes the policy's summed reply log-probabilities of the same sequences, the DPO loss against the
reference's, backward and the same optimizer step. The reference's forward over the same sequences
(no gradient) is timed on its own: the stage computes it once per pair before training
(src/training/dpo.py), so per epoch it adds one forward per step; both ratios are printed.

Model: the embedded SmolLM2-135M (BENCH_DPO_MODEL=tiny for a seconds-long check). BENCH_DPO_PAIRS
(default 4) and BENCH_REPEATS (default 3) shrink a run on a busy machine; the row names say what ran.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from src.config import DataConfig, TrainConfig
from src.data.packing import collate
from src.data.sources import load_source, source_config_by_name
from src.data.template import chat_format
from src.models.load import load_model, load_tokenizer
from src.models.sources import model_config_by_name
from src.training.dpo import dpo_loss, pack_whole, reference_logps, render_reply, sequence_logps
from src.training.loop import token_loss_sum
from src.training.optim import make_optimizer

CACHE = "~/.cache/imitation-gap"
PAIRS = int(os.environ.get("BENCH_DPO_PAIRS", "4"))
REPEATS = max(3, int(os.environ.get("BENCH_REPEATS", "3")))
MODEL = os.environ.get("BENCH_DPO_MODEL", "smollm2_135m")
MAX_LENGTH = 256


def demo_pairs(tokenizer, fmt, n: int):
    conversations, _ = load_source(DataConfig(source=source_config_by_name("demo")).source)
    singles = [c for c in conversations if len(c.messages) >= 2 and c.messages[-1].role == "assistant"]
    out = []
    for i in range(n):
        conv, other = singles[i], singles[i + n]
        prompt = conv.messages[:-1]
        out.append((render_reply(prompt, conv.messages[-1].content, tokenizer, fmt, MAX_LENGTH),
                    render_reply(prompt, other.messages[-1].content, tokenizer, fmt, MAX_LENGTH)))
    return out


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run() -> list[dict]:
    model_cfg = model_config_by_name(MODEL)
    tokenizer = load_tokenizer(model_cfg, CACHE)
    fmt = chat_format(tokenizer, model_cfg.chat_template)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pairs = demo_pairs(tokenizer, fmt, PAIRS)
    sequences = [s for pair in pairs for s in pair]
    block = max(len(s.input_ids) for s in sequences)
    rows = [r for r, _ in pack_whole(sequences, max(block, 512))]
    batch = {k: v.to(device) for k, v in collate(rows, tokenizer.pad_token_id).items()}
    reply_tokens = int((batch["labels"][:, 1:] != -100).sum())
    tokens = sum(len(s.input_ids) for s in sequences)
    model = load_model(model_cfg, tokenizer, CACHE, device)
    optimizer = make_optimizer([p for p in model.parameters()], TrainConfig(lr=1e-6))
    reference = reference_logps(model, pairs, tokenizer.pad_token_id, device, max(block, 512))
    model.train()

    def sft_step():
        loss = token_loss_sum(model, batch) / reply_tokens
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def dpo_step():
        logps = sequence_logps(model, sequences, tokenizer.pad_token_id, device, max(block, 512))
        loss, _ = dpo_loss(logps[0::2], logps[1::2], reference[:, 0].to(device), reference[:, 1].to(device), 0.1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def reference_forward():
        reference_logps(model, pairs, tokenizer.pad_token_id, device, max(block, 512), batch_pairs=len(pairs))

    sft_step(), dpo_step()  # warm-up (allocator, kernels), not timed
    sft, dpo, ref = [], [], []
    for _ in range(REPEATS):  # interleaved, so a slower stretch of a shared machine hits both
        sft.append(timed(sft_step))
        dpo.append(timed(dpo_step))
        ref.append(timed(reference_forward))
    sft_s, dpo_s, ref_s = statistics.median(sft), statistics.median(dpo), statistics.median(ref)
    what = f"{MODEL}, {PAIRS} pairs = {len(sequences)} sequences, {tokens} tokens ({reply_tokens} reply tokens), " \
           f"{len(rows)} packed row(s), median of {REPEATS}"
    return [
        {"name": f"DPO step vs SFT step on the same tokens ({what}) (s)", "ours": dpo_s, "baseline": sft_s,
         "ratio": dpo_s / sft_s, "target": "", "unit": "s", "repeats": {"dpo": dpo, "sft": sft}},
        {"name": f"DPO step + its reference forward vs SFT step ({what}) (s)", "ours": dpo_s + ref_s,
         "baseline": sft_s, "ratio": (dpo_s + ref_s) / sft_s, "target": "", "unit": "s",
         "repeats": {"reference": ref}},
    ]


if __name__ == "__main__":
    for row in run():
        print(f"{row['name']}: {row['ours']:.3f} vs {row['baseline']:.3f} -> {row['ratio']:.2f}x")
