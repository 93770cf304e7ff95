"""The SFT recipe, top to bottom: set up -> train one pass over the packed rows -> save.

The loss is the mean cross-entropy over loss-bearing tokens of a whole optimizer step (summed over
its micro-batches, divided once), so gradient accumulation does not change the objective.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from src.config import TrainConfig
from src.data.packing import PackedRow, collate
from src.data.template import IGNORE
from src.progress import progress

log = logging.getLogger(__name__)


@dataclass
class TrainStats:
    steps: int = 0
    tokens_seen: int = 0  # real (non-pad) tokens processed
    loss_tokens_seen: int = 0
    final_loss: float = float("nan")
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    history: list[dict] = field(default_factory=list)  # one record per logged step


def lr_multiplier(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Linear warm-up from 0, then constant, linear or cosine decay to 0."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    frac = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    if cfg.schedule == "linear":
        return max(0.0, 1.0 - frac)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def step_batches(rows: list[PackedRow], cfg: TrainConfig) -> list[list[PackedRow]]:
    """Rows in budget order for the first epoch (so a smaller budget is a prefix of a larger one);
    later epochs are reshuffled with the seed."""
    order: list[PackedRow] = []
    for epoch in range(cfg.epochs):
        epoch_rows = list(rows)
        if epoch:
            random.Random(cfg.seed + epoch).shuffle(epoch_rows)
        order += epoch_rows
    return [order[i:i + cfg.rows_per_step] for i in range(0, len(order), cfg.rows_per_step)]


def token_loss_sum(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"]).logits
    # logits at position t predict the token at t+1
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(),
                           ignore_index=IGNORE, reduction="sum")


def train(model: torch.nn.Module, rows: list[PackedRow], cfg: TrainConfig, pad_id: int,
          device: torch.device, on_step=None) -> TrainStats:
    torch.manual_seed(cfg.seed)
    steps = step_batches(rows, cfg)
    n_params = sum(p.numel() for p in model.parameters())
    real_tokens = sum(len(r.input_ids) for r in rows) * cfg.epochs
    log.info("train: %d rows x %d tokens, %d rows/step (%d micro-batches) -> %d steps; %d real tokens; "
             "%.2g tokens per parameter", len(rows), cfg.block_length, cfg.rows_per_step, cfg.grad_accum,
             len(steps), real_tokens, real_tokens / n_params)

    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(s, len(steps), cfg))
    model.train()
    stats = TrainStats()
    start = time.perf_counter()
    bar = progress(steps, "train")
    for step, step_rows in enumerate(bar):
        micro = [step_rows[i::cfg.grad_accum] for i in range(cfg.grad_accum)]
        micro = [m for m in micro if m]
        step_loss_tokens = sum(sum(label != IGNORE for label in r.labels[1:]) for r in step_rows)
        loss_sum = 0.0
        for micro_rows in micro:
            batch = {k: v.to(device) for k, v in collate(micro_rows, pad_id).items()}
            loss = token_loss_sum(model, batch) / max(1, step_loss_tokens)
            loss.backward()
            loss_sum += loss.item()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm).item()
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        stats.steps = step + 1
        stats.tokens_seen += sum(len(r.input_ids) for r in step_rows)
        stats.loss_tokens_seen += step_loss_tokens
        stats.final_loss = loss_sum
        elapsed = time.perf_counter() - start
        record = {"step": step + 1, "loss": loss_sum, "lr": lr, "grad_norm": grad_norm,
                  "tokens_seen": stats.tokens_seen, "tokens_per_s": stats.tokens_seen / elapsed}
        if (step + 1) % cfg.log_every == 0 or step + 1 == len(steps):
            stats.history.append(record)
            if on_step:
                on_step(record)
        bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)
    stats.seconds = time.perf_counter() - start
    stats.tokens_per_s = stats.tokens_seen / stats.seconds if stats.seconds else 0.0
    model.eval()
    return stats
