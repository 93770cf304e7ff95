"""Training speed, against baselines measured in the same run.

1. Real (non-pad) tokens/s of our SFT loop (rows of 512 packed tokens, block-diagonal mask) vs a plain
   HF Trainer over pad-to-longest batches of the same examples (target >= 1.5x). The examples have a
   ShareGPT-like length mix: log-normal lengths (median ~200 tokens) capped at 512, cut from the demo
   set's rendered token stream. Model: the embedded SmolLM2-135M (BENCH_TRAIN_MODEL=tiny for a
   seconds-long check). Two things make ours faster: packing (no pads processed) and the vocabulary
   projection run only where a label is (src/train.py token_loss_sum).
2. Milestone mode: one run over the largest of 4 budgets, saving all 4, vs 4 separate runs (the grid's
   amount axis without it) and vs the largest run alone (target <= 1.2x it). Tiny model: the ratio is
   about the bookkeeping (prepare, checkpoints), not the model.
"""

from __future__ import annotations

import os
import random
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
BLOCK = 512
REAL_TOKENS = 4_000  # per side of the loop comparison (SmolLM2 trains ~50-100 real tokens/s on 2 cores)
BUDGETS = [1_000, 2_000, 3_000, 4_000]


def sharegpt_like(tokenizer, fmt, total: int, seed: int = 0) -> list[Rendered]:
    data = prepare(DataConfig(source=source_config_by_name("demo"), amount=None), tokenizer, fmt, 10**6, 10**6, CACHE)
    ids = [t for r in data.rows for t in r.input_ids]
    labels = [t for r in data.rows for t in r.labels]
    rng = random.Random(seed)
    examples, at = [], 0
    while sum(len(e.input_ids) for e in examples) < total:
        length = min(BLOCK, max(16, int(rng.lognormvariate(5.3, 0.8))))
        examples.append(Rendered(ids[at:at + length], labels[at:at + length]))
        at = (at + length) % (len(ids) - BLOCK)
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
    examples = sharegpt_like(tokenizer, fmt, REAL_TOKENS)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    rows = pack(examples, BLOCK)
    ours = train(load_model(model_cfg, tokenizer, CACHE, device), rows,
                 TrainConfig(lr=5e-5, rows_per_step=2, block_length=BLOCK, warmup_steps=0), tokenizer.pad_token_id,
                 device)
    baseline, baseline_fill = hf_trainer_tokens_per_s(load_model(model_cfg, tokenizer, CACHE, device), examples,
                                                      tokenizer, batch=4)
    return [{"name": f"SFT real tokens/s, {name}, {len(examples)} ShareGPT-like examples: packed {BLOCK} "
                     f"(fill {packing_efficiency(rows, BLOCK):.2f}) vs HF Trainer pad-to-longest x4 "
                     f"(fill {baseline_fill:.2f})",
             "ours": ours.tokens_per_s, "baseline": baseline, "ratio": ours.tokens_per_s / baseline,
             "target": ">= 1.5x", "unit": "real tokens/s"}]


def compose_config(overrides: list[str]) -> dict:
    """The composed config as src.main sees it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name="config", overrides=overrides), resolve=True)


def milestones_vs_separate() -> list[dict]:
    def cell(store: str, amount: int, *overrides: str) -> Cell:
        return Cell.of(load_config(compose_config([
            "model=tiny", "data_source=demo", f"data.amount={amount}", f"store_dir={store}", "output_dir=/tmp/x",
            "train.block_length=128", "train.rows_per_step=2", "tracker.mode=disabled",
            f"train.milestones=[{','.join(map(str, BUDGETS))}]", *overrides])))

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    cpu = torch.device("cpu")
    tokenizer = load_tokenizer(model_config_by_name("tiny"), CACHE)
    fmt = chat_format(tokenizer, "auto")

    def trained(store: str, amount: int, *overrides: str) -> None:
        train_cell(cell(store, amount, *overrides), cpu, tokenizer, fmt)

    with tempfile.TemporaryDirectory() as store:
        trained(f"{store}/warm", BUDGETS[0])  # fill the prepare cache and the page cache first
        separate = sum(timed(lambda a=a: trained(f"{store}/separate", a)) for a in BUDGETS)
        largest = timed(lambda: trained(f"{store}/largest", BUDGETS[-1]))
        milestone = timed(lambda: trained(f"{store}/milestone", BUDGETS[0], "train.mode=milestone"))
    label = "/".join(f"{b // 1000}K" for b in BUDGETS)
    return [
        {"name": f"milestone mode, {label} tokens (tiny): 1 run vs 4 separate runs (s)", "ours": milestone,
         "baseline": separate, "ratio": separate / milestone, "unit": "seconds (lower is better)"},
        {"name": f"milestone mode, {label} tokens (tiny): 1 run vs the {label.split('/')[-1]} run alone (s)",
         "ours": milestone, "baseline": largest, "ratio": milestone / largest, "target": "<= 1.2x",
         "unit": "seconds; ratio = ours / baseline"},
    ]


def run() -> list[dict]:
    return loop_vs_trainer() + milestones_vs_separate()
