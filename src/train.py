"""The SFT recipe, top to bottom: set up -> train one pass over the packed rows -> save.

The loss is the mean cross-entropy over loss-bearing tokens of a whole optimizer step (summed over
its micro-batches and processes, divided once by the step's loss-token count), so gradient
accumulation and the number of processes do not change the objective: 2 processes with the same
rows per step give the same model as 1, up to floating-point summation order.

One code path serves 1 CPU, 1 GPU and N processes (torchrun; src/launch.py starts them): each
process takes rows_per_step / N rows of every step, gradients are summed across processes with one
all-reduce per step, and the optimizer steps identically everywhere. With `train.deepspeed` the
DeepSpeed engine (ZeRO-2/3, optional CPU offload) does the reduction and partitioning instead.

MFU (model FLOPs utilization), reported at the end:

    flops per real token = 6 * N + 12 * n_layer * d_model * L_eff
    MFU = real tokens/s * flops per real token / (peak FLOP/s per device * processes)

N = all parameters; L_eff = the packed row length (train.block_length): a dense attention kernel
computes every query-key pair of the row, the block-diagonal mask only zeroes some (the PaLM
appendix formula with T = L_eff). Peak FLOP/s comes from `train.peak_flops`, else a table of GPU
bf16 dense peaks by name; on CPU it is unknown unless given.
"""

from __future__ import annotations

import json
import logging
import math
import random
import resource
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from src import PROJECT_ROOT
from src import checkpoint as ckpt
from src.config import ConfigError, TrainConfig
from src.data.packing import PackedRow, collate
from src.data.template import IGNORE
from src.optim import lr_multiplier, make_optimizer, make_scheduler  # noqa: F401  (lr_multiplier: re-exported)
from src.progress import progress

log = logging.getLogger(__name__)

# bf16 dense peak FLOP/s per device, by a substring of torch.cuda.get_device_name()
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12}


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient: stopped before the optimizer writes it into the weights (the last
    saved state, if any, is intact and a rerun resumes from it)."""

    def __init__(self, step: int, loss: float, grad_norm: float, cfg: TrainConfig):
        super().__init__(
            f"training diverged at step {step}: loss {loss}, gradient norm {grad_norm} (train.precision="
            f"{cfg.precision}, train.lr={cfg.lr}); the weights were not updated with it. Try a lower train.lr, "
            "train.precision=fp32, or look at that step's rows (a huge gradient from one position is a model "
            "or data problem, not noise)")
        self.step, self.loss, self.grad_norm = step, loss, grad_norm


@dataclass
class TrainStats:
    steps: int = 0
    tokens_seen: int = 0  # real (non-pad) tokens processed
    loss_tokens_seen: int = 0
    final_loss: float = float("nan")
    seconds: float = 0.0
    tokens_per_s: float = 0.0  # real tokens per second of this process's training time, all processes together
    world_size: int = 1
    precision: str = "fp32"
    resumed_from_step: int = 0
    flops_per_token: float = 0.0
    peak_flops: float | None = None  # per device
    mfu: float | None = None  # None: peak unknown (CPU without train.peak_flops)
    peak_memory_bytes: int = 0
    peak_memory_source: str = ""
    history: list[dict] = field(default_factory=list)  # one record per logged step


@dataclass
class Dist:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Dist:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return cls(torch.distributed.get_rank(), torch.distributed.get_world_size())
        return cls()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def sum(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return t.item()


# Writes the trained model (HF format, consolidated over processes) into a folder; every rank calls it.
Export = Callable[[Path], None]


@dataclass
class SavePoint:
    """A place in the run where the model is saved: after the step that ends at `rows` rows of the
    first epoch (a milestone), or at the end of the run (rows None)."""

    rows: int | None
    save: Callable[[TrainStats, Export], None]


def step_batches(rows: list[PackedRow], cfg: TrainConfig, boundaries: Sequence[int] = ()) -> list[list[PackedRow]]:
    """Rows in budget order for the first epoch (so a smaller budget is a prefix of a larger one),
    rows_per_step at a time; a step never crosses a boundary (a row count where a milestone is
    saved), so the step that ends there may be short. Later epochs are reshuffled with the seed."""
    steps: list[list[PackedRow]] = []
    for epoch in range(cfg.epochs):
        epoch_rows = list(rows)
        if epoch:
            random.Random(cfg.seed + epoch).shuffle(epoch_rows)
            edges = [len(rows)]
        else:
            edges = sorted({b for b in boundaries if 0 < b < len(rows)} | {len(rows)})
        start = 0
        for end in edges:
            steps += [epoch_rows[i:min(i + cfg.rows_per_step, end)] for i in range(start, end, cfg.rows_per_step)]
            start = end
    return steps


def token_loss_sum(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed cross-entropy over the loss-bearing tokens of a batch.

    A plain HF model gets the vocabulary projection only at positions whose next token carries a label:
    prompts, pads and system turns are about half of SFT data, and the head plus the loss over a
    50K-token vocabulary are a large share of a small model's step (the HF Trainer projects every
    position). Wrapped models (DeepSpeed engines) take the ordinary full forward."""
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids")}
    targets = batch["labels"][:, 1:]  # logits at position t predict the token at t+1
    head = model.get_output_embeddings() if _plain_head(model) else None
    if head is None:
        logits = model(**inputs).logits[:, :-1]
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum")
    hidden = model.base_model(**inputs).last_hidden_state[:, :-1]
    keep = targets != IGNORE
    return F.cross_entropy(head(hidden[keep]).float(), targets[keep], reduction="sum")


def _plain_head(model) -> bool:
    """Whether logits are exactly head(last hidden state): no logit scaling or soft-capping."""
    if not isinstance(model, PreTrainedModel) or model.get_output_embeddings() is None:
        return False
    config = model.config
    return all(getattr(config, key, None) in (None, 1.0) for key in ("final_logit_softcapping", "logit_scale"))


def loss_tokens(rows: list[PackedRow]) -> int:
    return sum(sum(label != IGNORE for label in r.labels[1:]) for r in rows)


def flops_per_token(model: torch.nn.Module, block_length: int) -> float:
    """6N + 12 * n_layer * d_model * L_eff (see the module docstring)."""
    config = model.config
    n_layer = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 0)
    d_model = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0)
    n_params = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in model.parameters())
    return 6 * n_params + 12 * n_layer * d_model * block_length


def peak_flops(cfg: TrainConfig, device: torch.device) -> float | None:
    if cfg.peak_flops:
        return cfg.peak_flops
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((value for key, value in PEAK_FLOPS.items() if key in name), None)
    return None


def peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss (whole process)"


def check_inputs(model: torch.nn.Module, rows: list[PackedRow], cfg: TrainConfig, pad_id: int | None,
                 dist: Dist) -> None:
    """Bad input stops here, with one line, before the first step."""
    if pad_id is None:
        raise ConfigError("the tokenizer has no pad token: set one (load_tokenizer uses EOS) before training")
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    longest = max((len(r.input_ids) for r in rows), default=0)
    if limit is not None and longest > limit:
        raise ConfigError(f"train.block_length: rows of {longest} tokens exceed the model's context of {limit} "
                          "positions; lower train.block_length (or model.context_length)")
    if cfg.rows_per_step % (cfg.grad_accum * dist.world):
        raise ConfigError(f"train.rows_per_step ({cfg.rows_per_step}) must be a multiple of train.grad_accum "
                          f"({cfg.grad_accum}) x processes ({dist.world})")
    if not rows:
        raise ConfigError("no training rows: the data budget is empty")


def deepspeed_config(cfg: TrainConfig, world: int) -> dict:
    """conf/train/deepspeed/<name>.json plus the batch, clipping and precision of the recipe."""
    config = json.loads((PROJECT_ROOT / "conf" / "train" / "deepspeed" / f"{cfg.deepspeed}.json").read_text())
    config.update({
        "train_batch_size": cfg.rows_per_step,
        "train_micro_batch_size_per_gpu": cfg.rows_per_step // (world * cfg.grad_accum),
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.max_grad_norm,
        "bf16": {"enabled": cfg.precision == "bf16"},
        "steps_per_print": 10**9,
    })
    return config


def train(model: torch.nn.Module, rows: list[PackedRow], cfg: TrainConfig, pad_id: int,
          device: torch.device, on_step=None, *, save_points: Sequence[SavePoint] = (),
          boundaries: Sequence[int] = (), state_dir: Path | None = None) -> TrainStats:
    """Train `model` in place on `rows`. `save_points` save models mid-run (milestones) and at the end;
    `boundaries` are row counts no step crosses (budget increments: a separate run steps exactly as
    the milestone run does); `state_dir` holds resumable states every train.checkpoint_every steps
    (and a rerun resumes from the newest one)."""
    # --- set up --------------------------------------------------------------------------------
    dist = Dist.current()
    check_inputs(model, rows, cfg, pad_id, dist)
    torch.manual_seed(cfg.seed)
    steps = step_batches(rows, cfg, [*boundaries, *(p.rows for p in save_points if p.rows is not None)])
    ends, seen = {}, 0  # rows of the first epoch seen -> the step that ends there
    for i, step_rows in enumerate(steps):
        if seen == len(rows):
            break
        seen += len(step_rows)
        ends[seen] = i
    saves_at: dict[int, list[SavePoint]] = {}
    for point in save_points:
        saves_at.setdefault(len(steps) - 1 if point.rows is None else ends[point.rows], []).append(point)
    n_params = sum(p.numel() for p in model.parameters())
    real_tokens = sum(len(r.input_ids) for r in rows) * cfg.epochs
    if dist.main:
        log.info("train: %d rows x %d tokens, %d rows/step over %d process(es) x %d micro-batches -> %d steps; "
                 "%d real tokens; %.2g tokens per parameter; %s", len(rows), cfg.block_length, cfg.rows_per_step,
                 dist.world, cfg.grad_accum, len(steps), real_tokens, real_tokens / n_params, cfg.precision)

    if cfg.gradient_checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable({"use_reentrant": False})  # the kwargs dict is the first argument under both names
    fpt = flops_per_token(model, cfg.block_length)
    params = [p for p in model.parameters() if p.requires_grad]
    if dist.world > 1 and not cfg.deepspeed:  # every process starts from rank 0's weights
        for p in model.parameters():
            torch.distributed.broadcast(p.data, src=0)
    optimizer = make_optimizer(params, cfg)
    scheduler = make_scheduler(optimizer, len(steps), cfg)
    engine = None
    if cfg.deepspeed:
        import deepspeed

        engine, optimizer, _, scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(cfg, dist.world))
    forward = engine if engine is not None else model

    def export(folder: Path) -> None:
        """The whole model in HF format, written by rank 0 (ZeRO-3 gathers the shards first)."""
        state = None
        if engine is not None and engine.zero_optimization_stage() == 3:
            state = engine._zero3_consolidated_16bit_state_dict()
        if dist.main:
            shutil.rmtree(folder, ignore_errors=True)
            model.save_pretrained(folder, state_dict=state)
        dist.barrier()

    stats = TrainStats(world_size=dist.world, precision=cfg.precision, flops_per_token=fpt)
    first_step = 0
    if (resume := ckpt.latest(state_dir)) is not None:
        first_step = _load_state(resume, model, optimizer, scheduler, engine, stats, dist)
        log.info("resuming from %s: step %d of %d", resume, first_step, len(steps))

    # --- train ---------------------------------------------------------------------------------
    model.train()
    start = time.perf_counter()
    tokens_this_run = 0
    bar = progress(range(first_step, len(steps)), "train", disable=not dist.main)
    for step in bar:
        step_rows = steps[step]
        step_loss_tokens = loss_tokens(step_rows)
        local = step_rows[dist.rank::dist.world]
        micro = [local[i::cfg.grad_accum] for i in range(cfg.grad_accum)]
        loss_sum = 0.0
        for micro_rows in micro:
            if not micro_rows and engine is None:
                continue  # a short step (a milestone's last) leaves this process less to do
            # DeepSpeed and ZeRO-3's parameter gathering need every process in every forward: an
            # empty share runs a real row with weight 0
            weight = 1.0 if micro_rows else 0.0
            batch = {k: v.to(device) for k, v in collate(micro_rows or step_rows[:1], pad_id).items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16" and engine is None):
                loss = weight * token_loss_sum(forward, batch) / max(1, step_loss_tokens)
            loss_sum += loss.item()
            if engine is not None:
                # the engine divides by the accumulation steps and averages over processes; we want sums
                engine.backward(loss * cfg.grad_accum * dist.world)
                engine.step()
            else:
                loss.backward()
        if engine is not None:
            grad_norm = engine.get_global_grad_norm()
            grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
            lr = scheduler.get_last_lr()[0] if hasattr(scheduler, "get_last_lr") else optimizer.param_groups[0]["lr"]
        else:
            if dist.world > 1:
                _all_reduce_grads(params)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm).item()
            if not math.isfinite(grad_norm):  # every process holds the same reduced gradients: all stop here
                raise TrainingDiverged(step + 1, dist.sum(loss_sum), grad_norm, cfg)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        loss_sum = dist.sum(loss_sum)
        if not math.isfinite(loss_sum):  # the DeepSpeed path's check (its step is already taken)
            raise TrainingDiverged(step + 1, loss_sum, grad_norm, cfg)

        step_tokens = sum(len(r.input_ids) for r in step_rows)
        stats.steps = step + 1
        stats.tokens_seen += step_tokens
        stats.loss_tokens_seen += step_loss_tokens
        stats.final_loss = loss_sum
        tokens_this_run += step_tokens
        elapsed = time.perf_counter() - start
        record = {"step": step + 1, "loss": loss_sum, "lr": lr, "grad_norm": grad_norm,
                  "tokens_seen": stats.tokens_seen, "tokens_per_s": tokens_this_run / elapsed}
        if (step + 1) % cfg.log_every == 0 or step + 1 == len(steps):
            stats.history.append(record)
            if on_step and dist.main:
                on_step(record)
        bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)

        for point in saves_at.get(step, []):
            point.save(_finish(stats, tokens_this_run, time.perf_counter() - start, device, cfg, dist), export)
        if state_dir is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 \
                and step + 1 < len(steps):
            _save_state(state_dir, step + 1, model, optimizer, scheduler, engine, stats, dist)

    _finish(stats, tokens_this_run, time.perf_counter() - start, device, cfg, dist)
    model.eval()
    if state_dir is not None and dist.main:
        shutil.rmtree(state_dir, ignore_errors=True)  # the run is complete: its resumable states are spent
    dist.barrier()
    return stats


def _finish(stats: TrainStats, tokens: int, seconds: float, device: torch.device, cfg: TrainConfig,
            dist: Dist) -> TrainStats:
    """Throughput, MFU and peak memory so far (this process's run: a resumed run counts from resume)."""
    stats.seconds = seconds
    stats.tokens_per_s = tokens / seconds if seconds else 0.0
    stats.peak_flops = peak_flops(cfg, device)
    if stats.peak_flops:
        stats.mfu = stats.tokens_per_s * stats.flops_per_token / (stats.peak_flops * dist.world)
    stats.peak_memory_bytes, stats.peak_memory_source = peak_memory(device)
    return stats


def _all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Sum gradients over processes in one flat buffer (a process with no rows contributes zeros)."""
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = torch._utils._flatten_dense_tensors(grads)
    torch.distributed.all_reduce(flat)
    for grad, reduced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
        grad.copy_(reduced)


def _save_state(state_dir: Path, step: int, model, optimizer, scheduler, engine, stats: TrainStats,
                dist: Dist) -> None:
    def rank0(folder: Path) -> None:
        state = {"step": step, "stats": stats.__dict__ | {"history": list(stats.history)}}
        if engine is None:
            state |= {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict()}
        torch.save(state, folder / "state.pt")

    collective = (lambda folder: engine.save_checkpoint(str(folder), tag="engine")) if engine is not None else None
    ckpt.save(state_dir, step, dist, rank0, collective)


def _load_state(folder: Path, model, optimizer, scheduler, engine, stats: TrainStats, dist: Dist) -> int:
    state = torch.load(folder / "state.pt", weights_only=False, map_location="cpu")
    if engine is None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    else:
        engine.load_checkpoint(str(folder), tag="engine")
    for key, value in state["stats"].items():
        setattr(stats, key, value)
    stats.resumed_from_step = state["step"]
    ckpt.load_rng(folder, dist.rank)
    return state["step"]
