"""Training speed, against baselines measured in the same run; every figure the median of REPEATS runs.

1. Real (non-pad) tokens/s of our SFT loop (packed rows, train.attention=auto, train.loss=auto) vs a
   plain HF Trainer over pad-to-longest batches of the same examples (goal >= 2.5x, floor 1.8x at 512),
   at rows of 512 and of the paper's 2048 tokens. The examples have a ShareGPT-like length mix:
   log-normal lengths (median ~200 tokens) capped at the block length (the Trainer's max_length), cut
   from the demo set's rendered token stream; EXAMPLES of them (200). Model: the embedded SmolLM2-135M
   (BENCH_TRAIN_MODEL=tiny for a seconds-long check). What makes ours faster: packing (no pads
   processed), the vocabulary projection only where a label is (src/training/loop.py token_loss_sum),
   and a loss that never holds all logits (src/training/loss.py).
2. Peak memory of one training step at 2048-token rows, chunked cross-entropy vs the full logits
   (train.loss=chunked vs full), each in a fresh process (CPU: the process's peak RSS over the step;
   GPU: torch.cuda.max_memory_allocated).
3. Milestone mode: one run over the largest of 4 budgets, saving all 4, vs the largest run alone
   (target <= 1.2x it) and vs 4 separate runs (once, not repeated), on SmolLM2 so that the model's time
   dominates the bookkeeping (BENCH_MILESTONE_MODEL=tiny for the bookkeeping alone).
4. One training step with bf16 weights (fp32 master weights and AdamW state) vs fp32 throughout: the
   recipe stays fp32 on CPU unless this pays.

BENCH_TRAIN_EXAMPLES, BENCH_REPEATS, BENCH_TRAIN_BLOCKS (e.g. "512,2048") and BENCH_MILESTONE_SEPARATE=0
(no separate runs) shrink a run on a busy machine; the row names say what ran.
"""

from __future__ import annotations

import functools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from src import PROJECT_ROOT
from src.cell import Cell
from src.config import DataConfig, TrainConfig
from src.data.packing import pack, packing_efficiency
from src.data.prepare import prepare
from src.data.sources import source_config_by_name
from src.data.template import Rendered, chat_format
from src.models.load import load_model, load_tokenizer
from src.models.sources import model_config_by_name
from src.plugins import load_config
from src.training.loop import train
from src.training.recipe import train_cell

CACHE = "~/.cache/imitation-gap"
EXAMPLES = int(os.environ.get("BENCH_TRAIN_EXAMPLES", "200"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
BLOCKS = [int(b) for b in os.environ.get("BENCH_TRAIN_BLOCKS", "512,2048").split(",")]
MEMORY_BLOCK = 2048
BUDGETS = [1_000, 2_000, 3_000, 4_000]
SEPARATE = os.environ.get("BENCH_MILESTONE_SEPARATE", "1") != "0"  # 0: skip the 4 separate runs (a shorter bench)


def sharegpt_like(tokenizer, fmt, n_examples: int, cap: int, seed: int = 0) -> list[Rendered]:
    data = prepare(DataConfig(source=source_config_by_name("demo"), amount=None), tokenizer, fmt, 10**6, 10**6, CACHE)
    ids = [t for r in data.rows for t in r.input_ids]
    labels = [t for r in data.rows for t in r.labels]
    rng = random.Random(seed)
    examples, at = [], 0
    while len(examples) < n_examples:
        length = min(cap, max(16, int(rng.lognormvariate(5.3, 0.8))))
        examples.append(Rendered(ids[at:at + length], labels[at:at + length]))
        at = (at + length) % (len(ids) - cap)
    return examples


def hf_trainer_tokens_per_s(model, examples: list[Rendered], tokenizer, batch: int) -> tuple[float, float]:
    """A plain HF Trainer, the usual SFT setup: pad-to-longest batches (DataCollatorForSeq2Seq), AdamW."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    dataset = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.labels}
               for e in examples]
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch, num_train_epochs=1,
                                 learning_rate=5e-5, report_to=[], save_strategy="no", logging_strategy="no",
                                 disable_tqdm=True, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
                                 seed=0)
        trainer = Trainer(model=model, args=args, train_dataset=dataset,
                          data_collator=DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100))
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    real = sum(len(e.input_ids) for e in examples)
    padded = sum(batch_len * len(chunk) for chunk, batch_len in (
        (examples[i:i + batch], max(len(e.input_ids) for e in examples[i:i + batch]))
        for i in range(0, len(examples), batch)))
    return real / seconds, real / padded


def loop_vs_trainer() -> list[dict]:
    name = os.environ.get("BENCH_TRAIN_MODEL", "smollm2_135m")
    model_cfg = model_config_by_name(name)
    tokenizer = load_tokenizer(model_cfg, CACHE)
    fmt = chat_format(tokenizer, model_cfg.chat_template)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = []
    for block in BLOCKS:
        examples = sharegpt_like(tokenizer, fmt, EXAMPLES, cap=block)
        rows = pack(examples, block)
        cfg = TrainConfig(lr=5e-5, rows_per_step=max(1, 1024 // block), block_length=block, warmup_steps=0)
        ours, baseline, used = [], [], ""
        for _ in range(REPEATS):
            stats = train(load_model(model_cfg, tokenizer, CACHE, device), rows, cfg, tokenizer.pad_token_id, device)
            ours.append(stats.tokens_per_s)
            used = f"{stats.attention}, {stats.loss} loss"
            theirs, baseline_fill = hf_trainer_tokens_per_s(load_model(model_cfg, tokenizer, CACHE, device), examples,
                                                            tokenizer, batch=4)
            baseline.append(theirs)
        ours_s, baseline_s = statistics.median(ours), statistics.median(baseline)
        out.append({"name": f"SFT real tokens/s, {name}, {len(examples)} ShareGPT-like examples (cap {block}): packed "
                            f"{block} x{cfg.rows_per_step} ({used}; fill {packing_efficiency(rows, block):.2f}) vs HF "
                            f"Trainer pad-to-longest x4 (fill {baseline_fill:.2f}), median of {REPEATS}",
                    "ours": ours_s, "baseline": baseline_s, "ratio": ours_s / baseline_s,
                    "target": ">= 1.8x" if block == 512 else "", "unit": "real tokens/s",
                    "repeats": {"ours": ours, "baseline": baseline}})
    return out


def step_peak_memory(loss_impl: str, block: int = MEMORY_BLOCK) -> dict:
    """One training step of 2 rows of `block` tokens; run in a fresh process (see peak_memory_rows)."""
    name = os.environ.get("BENCH_TRAIN_MODEL", "smollm2_135m")
    model_cfg = model_config_by_name(name)
    tokenizer = load_tokenizer(model_cfg, CACHE)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    examples = sharegpt_like(tokenizer, chat_format(tokenizer, model_cfg.chat_template), 40, cap=block)
    rows = pack(examples, block)[:2]
    model = load_model(model_cfg, tokenizer, CACHE, device)
    cfg = TrainConfig(lr=5e-5, rows_per_step=2, block_length=block, warmup_steps=0, loss=loss_impl)
    train(model, rows[:2], cfg, tokenizer.pad_token_id, device)  # allocates the optimizer state, warms up
    import resource

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train(model, rows[:2], cfg, tokenizer.pad_token_id, device)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"loss": loss_impl, "peak_bytes": peak, "model": name, "tokens": sum(len(r.input_ids) for r in rows[:2])}


def peak_memory_rows() -> list[dict]:
    """CPU peak RSS only grows, so each side runs in its own process (its peak: the model, the optimizer
    state, the libraries and the step's largest transient, the logits where they are whole)."""
    measured = {}
    for loss_impl in ("chunked", "full"):
        runs = []
        for _ in range(REPEATS):
            code = f"import json; from bench.train_speed import step_peak_memory; print(json.dumps(step_peak_memory({loss_impl!r})))"
            done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                  timeout=1800, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if done.returncode:
                raise RuntimeError(f"bench step_peak_memory({loss_impl}) failed: {done.stderr[-2000:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        measured[loss_impl] = runs
    peak = {k: statistics.median(r["peak_bytes"] for r in runs) / 2**20 for k, runs in measured.items()}
    first = measured["chunked"][0]
    label = f"{first['model']}, 2 rows of {MEMORY_BLOCK} ({first['tokens']} tokens), median of {REPEATS}"
    source = "cuda max_memory_allocated" if torch.cuda.is_available() else "process peak RSS"
    return [{"name": f"peak memory of a training step ({source}), {label}: chunked CE vs full logits (MiB)",
             "ours": peak["chunked"], "baseline": peak["full"], "ratio": peak["chunked"] / peak["full"],
             "unit": "MiB; ratio = ours / baseline"}]


def compose_config(overrides: list[str]) -> dict:
    """The composed config as src.main sees it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name="config", overrides=overrides), resolve=True)


def milestones_vs_separate() -> list[dict]:
    name = os.environ.get("BENCH_MILESTONE_MODEL", "smollm2_135m")

    def cell(store: str, amount: int, *overrides: str) -> Cell:
        return Cell.of(load_config(compose_config([
            f"model={name}", "data_source=demo", f"data.amount={amount}", f"store_dir={store}", "output_dir=/tmp/x",
            "train.block_length=128", "train.rows_per_step=2", "tracker.mode=disabled",
            f"train.milestones=[{','.join(map(str, BUDGETS))}]", *overrides])))

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    cpu = torch.device("cpu")
    model_cfg = model_config_by_name(name)
    tokenizer = load_tokenizer(model_cfg, CACHE)
    fmt = chat_format(tokenizer, model_cfg.chat_template)

    def trained(store: str, amount: int, *overrides: str) -> None:
        train_cell(cell(store, amount, *overrides), cpu, tokenizer, fmt)

    largest, milestone = [], []
    with tempfile.TemporaryDirectory() as store:
        trained(f"{store}/warm", BUDGETS[0])  # fill the prepare cache and the page cache first
        separate = sum(timed(lambda a=a: trained(f"{store}/separate", a)) for a in BUDGETS) if SEPARATE else None
        for i in range(REPEATS):
            largest.append(timed(lambda i=i: trained(f"{store}/largest{i}", BUDGETS[-1])))
            milestone.append(timed(lambda i=i: trained(f"{store}/milestone{i}", BUDGETS[0], "train.mode=milestone")))
            print(f"milestones repeat {i + 1}/{REPEATS}: milestone run {milestone[-1]:.1f} s, largest alone "
                  f"{largest[-1]:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    label = "/".join(f"{b // 1000}K" for b in BUDGETS)
    one, alone = statistics.median(milestone), statistics.median(largest)
    rows = [] if separate is None else [
        {"name": f"milestone mode, {label} tokens ({name}): 1 run vs 4 separate runs (s; separate once)", "ours": one,
         "baseline": separate, "ratio": separate / one, "unit": "seconds (lower is better)"}]
    return rows + [
        {"name": f"milestone mode, {label} tokens ({name}): 1 run vs the {label.split('/')[-1]} run alone (s), "
                 f"median of {REPEATS}", "ours": one, "baseline": alone, "ratio": one / alone, "target": "<= 1.2x",
         "unit": "seconds; ratio = ours / baseline", "repeats": {"ours": milestone, "baseline": largest}},
    ]


def _fp32_step(model, optimizer, batch) -> None:
    model(**batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _bf16_master_step(model, masters, optimizer, batch) -> None:
    """bf16 weights for forward and backward; their fp32 master copies and fp32 AdamW state take the step."""
    model(**batch).loss.backward()
    for p, master in zip(model.parameters(), masters, strict=True):
        master.grad = p.grad.float()
        p.grad = None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        for p, master in zip(model.parameters(), masters, strict=True):
            p.copy_(master)


def bf16_weights_vs_fp32(steps: int = 3, tokens: int = 256) -> list[dict]:
    """Seconds per training step (forward, backward, fused AdamW) on one row of `tokens`: bf16 weights
    with fp32 master weights and optimizer state (the usual mixed-precision recipe) vs fp32 throughout.
    On CPU it pays only where the cores have bf16 matrix units (AVX512-BF16 or AMX)."""
    name = os.environ.get("BENCH_TRAIN_MODEL", "smollm2_135m")
    model_cfg = model_config_by_name(name)
    tokenizer = load_tokenizer(model_cfg, CACHE)
    cpu = torch.device("cpu")
    ids = torch.randint(0, len(tokenizer), (1, tokens), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "labels": ids}
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(REPEATS):
        for kind in ("fp32", "bf16"):
            model = load_model(model_cfg, tokenizer, CACHE, cpu).train()
            if kind == "bf16":
                masters = [p.detach().clone().float() for p in model.parameters()]
                model.to(torch.bfloat16)
                step = functools.partial(_bf16_master_step, model, masters,
                                         torch.optim.AdamW(masters, lr=5e-5, fused=True), batch)
            else:
                step = functools.partial(_fp32_step, model, torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True),
                                         batch)
            step()  # allocates the optimizer state
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times[kind].append((time.perf_counter() - start) / steps)
            print(f"bf16 bench {kind}: {times[kind][-1]:.2f} s/step (load {os.getloadavg()[0]:.1f})", flush=True)
    ours, baseline = statistics.median(times["bf16"]), statistics.median(times["fp32"])
    return [{"name": f"training step, {name}, 1 row of {tokens}: bf16 weights + fp32 master and AdamW state vs fp32 "
                     f"(s/step, {steps} steps, median of {REPEATS})",
             "ours": ours, "baseline": baseline, "ratio": baseline / ours, "unit": "s/step; ratio = speed-up",
             "repeats": {"ours": times["bf16"], "baseline": times["fp32"]}}]


def run() -> list[dict]:
    return loop_vs_trainer() + peak_memory_rows() + milestones_vs_separate() + bf16_weights_vs_fp32()
