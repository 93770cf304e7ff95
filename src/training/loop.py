"""The SFT loop, top to bottom: set up -> train one pass over the packed rows -> save.

The loss is the mean cross-entropy over loss-bearing tokens of a whole optimizer step (summed over
its micro-batches and processes, divided once by the step's loss-token count), so gradient
accumulation and the number of processes do not change the objective: 2 processes with the same
rows per step give the same model as 1, up to floating-point summation order.

One code path serves 1 CPU, 1 GPU and N processes (torchrun; src/training/worker.py starts them):
each process takes rows_per_step / N rows of every step, gradients are summed across processes with
one all-reduce per step, and the optimizer steps identically everywhere. With `train.deepspeed` the
DeepSpeed engine (ZeRO-2/3, optional CPU offload) does the reduction and partitioning instead.
Throughput and MFU: src/training/throughput.py.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from src.config import ConfigError, TrainConfig
from src.data.packing import PackedRow, collate, collate_seq2seq
from src.data.template import IGNORE
from src.models.load import is_encoder_decoder
from src.progress import progress
from src.training import attention
from src.training import checkpoint as ckpt
from src.training import deepspeed as ds
from src.training import loss as cross_entropy
from src.training.compiled import compile_decoder, uncompile
from src.training.dist import Dist, all_reduce_grads
from src.training.optim import make_optimizer, make_scheduler
from src.training.throughput import TrainStats, finish, flops_per_token

log = logging.getLogger(__name__)


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



# Writes the trained model (HF format, consolidated over processes) into a folder; every rank calls it.
Export = Callable[[Path], None]


@dataclass
class SavePoint:
    """A place in the run where the model is saved: after the step that ends at `rows` rows of the
    first epoch (a milestone), or at the end of the run (rows None)."""

    rows: int | None
    save: Callable[[TrainStats, Export], None]



def step_batches(rows: Sequence[PackedRow], cfg: TrainConfig, boundaries: Sequence[int] = (),
                 bucket: bool = False) -> list[list[int]]:
    """Row indices in budget order for the first epoch (so a smaller budget is a prefix of a larger
    one), rows_per_step at a time; a step never crosses a boundary (a row count where a milestone is
    saved), so the step that ends there may be short. Later epochs are reshuffled with the seed.
    Indices, not rows: a step's rows are read (from the prepared data's memory map) when it runs.

    `bucket` (unpacked rows of uneven length: the encoder-decoder layout): within each stretch between
    boundaries the rows are sorted by length, cut into steps, and the steps put in an order drawn with
    the seed, so a step's rows pad little and a milestone still ends exactly where its budget does."""
    lengths = row_lengths(rows) if bucket else None
    steps: list[list[int]] = []
    for epoch in range(cfg.epochs):
        epoch_rows = list(range(len(rows)))
        if epoch:
            random.Random(cfg.seed + epoch).shuffle(epoch_rows)
            edges = [len(rows)]
        else:
            edges = sorted({b for b in boundaries if 0 < b < len(rows)} | {len(rows)})
        start = 0
        for end in edges:
            stretch = epoch_rows[start:end]
            if bucket:
                stretch.sort(key=lambda i: int(lengths[i]))  # stable: equal lengths keep budget order
            chunk = [stretch[i:i + cfg.rows_per_step] for i in range(0, len(stretch), cfg.rows_per_step)]
            if bucket:
                random.Random(cfg.seed * 1_000_003 + epoch * 7919 + start).shuffle(chunk)
            steps += chunk
            start = end
    return steps


def token_loss_sum(model, batch: dict[str, torch.Tensor], attention_impl: str = "sdpa_mask",
                   loss_impl: str = "chunked") -> torch.Tensor:
    """Summed cross-entropy over the loss-bearing tokens of a batch.

    A plain HF model gets the vocabulary projection only at positions whose next token carries a label:
    prompts, pads and system turns are about half of SFT data, and the head plus the loss over a
    50K-token vocabulary are a large share of a small model's step (the HF Trainer projects every
    position); the loss itself never holds all their logits (src/training/loss.py). Wrapped models
    (DeepSpeed engines) take the ordinary full forward. `attention_impl`: how packed examples are kept
    apart (src/training/attention.py)."""
    if "position_ids" not in batch:  # the encoder-decoder layout (collate_seq2seq)
        return seq2seq_loss_sum(model, batch)
    inputs, labels = attention.model_inputs(batch, attention_impl)
    targets = labels[:, 1:]  # logits at position t predict the token at t+1
    head = model.get_output_embeddings() if _plain_head(model) else None
    if head is None:
        logits = model(**inputs).logits[:, :-1]
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum")
    hidden = model.base_model(**inputs).last_hidden_state[:, :-1]
    keep = targets != IGNORE
    return cross_entropy.linear_cross_entropy_sum(hidden[keep], head, targets[keep], loss_impl)


def seq2seq_loss_sum(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed cross-entropy over an encoder-decoder batch's decoder labels: the decoder reads the labels
    shifted right behind its start token (T5's decoder_start_token_id, its pad), so every label,
    the reply's first token included, is predicted. The head runs on every decoder position, pads included
    (T5 rescales its hidden state before a tied head, so the hidden-state shortcut above does not hold)."""
    config = model.module.config if hasattr(model, "module") else model.config  # a DeepSpeed engine's is its own
    labels = batch["labels"]
    start = torch.full_like(labels[:, :1], config.decoder_start_token_id)
    decoder_input_ids = torch.cat([start, labels[:, :-1]], dim=1)
    decoder_input_ids = decoder_input_ids.masked_fill(decoder_input_ids == IGNORE, config.pad_token_id)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   decoder_input_ids=decoder_input_ids, use_cache=False).logits
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE, reduction="sum")


def _plain_head(model) -> bool:
    """Whether logits are exactly head(last hidden state): no logit scaling or soft-capping."""
    if not isinstance(model, PreTrainedModel) or model.get_output_embeddings() is None:
        return False
    config = model.config
    return all(getattr(config, key, None) in (None, 1.0) for key in ("final_logit_softcapping", "logit_scale"))


def loss_tokens(rows: list[PackedRow]) -> int:
    """Labelled tokens that are predicted: a packed row's first label never is (nothing before it in the
    row); an encoder-decoder row starts with an encoder token (never labelled), so this counts all its
    decoder's labels."""
    return sum(sum(label != IGNORE for label in r.labels[1:]) for r in rows)



def row_lengths(rows: Sequence[PackedRow]):
    """Tokens per row, without building the rows when they are memory-mapped (PreparedRows)."""
    lengths = getattr(rows, "lengths", None)
    return lengths if lengths is not None else [len(r.input_ids) for r in rows]


def check_encoder_decoder(cfg: TrainConfig) -> None:
    """What the encoder-decoder layout does not run (its rows are not packed: nothing to keep apart)."""
    if cfg.attention not in ("auto", "sdpa_mask"):
        raise ConfigError(f"train.attention={cfg.attention}: an encoder-decoder model trains on unpacked rows with "
                          "its own attention; use train.attention=auto")
    if cfg.compile:
        raise ConfigError("train.compile=true compiles a decoder-only model's decoder; an encoder-decoder model "
                          "trains uncompiled: set train.compile=false")


def check_inputs(model: torch.nn.Module, rows: list[PackedRow], cfg: TrainConfig, pad_id: int | None,
                 dist: Dist) -> None:
    """Bad input stops here, with one line, before the first step."""
    if pad_id is None:
        raise ConfigError("the tokenizer has no pad token: set one (load_tokenizer uses EOS) before training")
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    longest = int(max(row_lengths(rows), default=0))
    if limit is not None and longest > limit:
        raise ConfigError(f"train.block_length: rows of {longest} tokens exceed the model's context of {limit} "
                          "positions; lower train.block_length (or model.context_length)")
    if cfg.rows_per_step % (cfg.grad_accum * dist.world):
        raise ConfigError(f"train.rows_per_step ({cfg.rows_per_step}) must be a multiple of train.grad_accum "
                          f"({cfg.grad_accum}) x processes ({dist.world})")
    if not rows:
        raise ConfigError("no training rows: the data budget is empty")



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
    encoder_decoder = is_encoder_decoder(model)
    if encoder_decoder:
        check_encoder_decoder(cfg)
    steps = step_batches(rows, cfg, [*boundaries, *(p.rows for p in save_points if p.rows is not None)],
                         bucket=encoder_decoder)
    saves_at = save_schedule(steps, len(rows), save_points)
    if dist.main:
        real_tokens = int(sum(row_lengths(rows))) * cfg.epochs
        log.info("train: %d rows x %d tokens, %d rows/step over %d process(es) x %d micro-batches -> %d steps; "
                 "%d real tokens; %.2g tokens per parameter; %s", len(rows), cfg.block_length, cfg.rows_per_step,
                 dist.world, cfg.grad_accum, len(steps), real_tokens,
                 real_tokens / sum(p.numel() for p in model.parameters()), cfg.precision)
    if cfg.gradient_checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable({"use_reentrant": False})  # the kwargs dict is the first argument under both names
    half = cfg.precision == "bf16" or next(model.parameters()).dtype in (torch.bfloat16, torch.float16)
    # unpacked encoder-decoder rows need no document mask: the model's own attention (sdpa_mask leaves it)
    attention_impl = "sdpa_mask" if encoder_decoder else attention.resolve(cfg.attention, device, half)
    loss_impl = cross_entropy.resolve(cfg.loss, device)
    own_attention = attention.use(model, attention_impl)  # restored after training: evaluation runs on it
    compiled = compile_decoder(model) if cfg.compile else None
    try:
        stats = TrainStats(world_size=dist.world, precision=cfg.precision,
                           flops_per_token=flops_per_token(model, cfg.block_length),
                           attention=attention_impl, loss=loss_impl, compiled=cfg.compile)
        params = [p for p in model.parameters() if p.requires_grad]
        if not cfg.deepspeed:
            dist.broadcast_weights(model)
        optimizer = make_optimizer(params, cfg)
        scheduler = make_scheduler(optimizer, len(steps), cfg)
        engine = None
        if cfg.deepspeed:
            engine, optimizer, scheduler = ds.start_engine(model, optimizer, scheduler, cfg, dist.world)
        opt = _Optimization(engine if engine is not None else model, engine, optimizer, scheduler, params, cfg, dist,
                            attention_impl, loss_impl, collate_seq2seq if encoder_decoder else collate)

        def export(folder: Path) -> None:
            """The whole model in HF format, written by rank 0 (ZeRO-3 gathers the shards first)."""
            state = ds.consolidated_state(engine)
            if dist.main:
                shutil.rmtree(folder, ignore_errors=True)
                model.save_pretrained(folder, state_dict=state)
            dist.barrier()

        first_step = 0
        if (resume := ckpt.latest(state_dir)) is not None:
            first_step = _load_state(resume, model, optimizer, scheduler, engine, stats, dist)
            log.info("resuming from %s: step %d of %d", resume, first_step, len(steps))

        # --- train ---------------------------------------------------------------------------------
        model.train()
        start, tokens_this_run = time.perf_counter(), 0
        bar = progress(range(first_step, len(steps)), "train", disable=not dist.main)
        for step in bar:
            step_rows = [rows[i] for i in steps[step]]
            loss_sum, grad_norm, lr = opt.step(step, step_rows, pad_id, device)
            step_tokens = sum(len(r.input_ids) for r in step_rows)
            stats.steps = step + 1
            stats.tokens_seen += step_tokens
            stats.loss_tokens_seen += loss_tokens(step_rows)
            stats.final_loss = loss_sum
            tokens_this_run += step_tokens
            stats.fill = opt.real_tokens / opt.padded_tokens if opt.padded_tokens else 0.0
            record = {"step": step + 1, "loss": loss_sum, "lr": lr, "grad_norm": grad_norm,
                      "tokens_seen": stats.tokens_seen, "tokens_per_s": tokens_this_run / (time.perf_counter() - start)}
            if (step + 1) % cfg.log_every == 0 or step + 1 == len(steps):
                stats.history.append(record)
                if on_step and dist.main:
                    on_step(record)
            bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)

            for point in saves_at.get(step, []):
                point.save(finish(stats, tokens_this_run, time.perf_counter() - start, device, cfg, dist.world), export)
            if state_dir is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 \
                    and step + 1 < len(steps):
                _save_state(state_dir, step + 1, model, optimizer, scheduler, engine, stats, dist)

        # --- done ----------------------------------------------------------------------------------
        finish(stats, tokens_this_run, time.perf_counter() - start, device, cfg, dist.world)
        model.eval()
    finally:  # evaluation (or the caller, after a failed run) gets the model's own attention back
        attention.restore(model, own_attention)
        uncompile(compiled)
    if state_dir is not None and dist.main:
        shutil.rmtree(state_dir, ignore_errors=True)  # the run is complete: its resumable states are spent
    dist.barrier()
    return stats


def save_schedule(steps: list[list[int]], n_rows: int, save_points: Sequence[SavePoint]
                  ) -> dict[int, list[SavePoint]]:
    """step index -> the save points after it (a milestone's rows end exactly at a step's end)."""
    ends, seen = {}, 0  # rows of the first epoch seen -> the step that ends there
    for i, step_rows in enumerate(steps):
        if seen == n_rows:
            break
        seen += len(step_rows)
        ends[seen] = i
    saves_at: dict[int, list[SavePoint]] = {}
    for point in save_points:
        saves_at.setdefault(len(steps) - 1 if point.rows is None else ends[point.rows], []).append(point)
    return saves_at


@dataclass
class _Optimization:
    """One optimizer step over a step's rows: forward and backward per micro-batch, then the
    reduction, the divergence check and the update (the plain loop's, or DeepSpeed's engine's)."""

    forward: torch.nn.Module
    engine: object | None
    optimizer: torch.optim.Optimizer
    scheduler: object
    params: list[torch.nn.Parameter]
    cfg: TrainConfig
    dist: Dist
    attention_impl: str  # src/training/attention.py
    loss_impl: str  # src/training/loss.py
    collate: Callable = collate  # collate_seq2seq for the encoder-decoder layout
    # this process's tokens this run: real ones, and the positions collated, pads included (TrainStats.fill)
    real_tokens: int = 0
    padded_tokens: int = 0

    def step(self, step: int, step_rows: list[PackedRow], pad_id: int, device: torch.device
             ) -> tuple[float, float, float]:
        """(the step's loss summed over processes, gradient norm, learning rate)."""
        cfg, dist, engine = self.cfg, self.dist, self.engine
        lr = self.optimizer.param_groups[0]["lr"]  # this step's (DeepSpeed's engine.step advances the schedule)
        step_loss_tokens = loss_tokens(step_rows)
        local = step_rows[dist.rank::dist.world]
        loss_sum = 0.0
        for micro_rows in (local[i::cfg.grad_accum] for i in range(cfg.grad_accum)):
            if not micro_rows and engine is None:
                continue  # a short step (a milestone's last) leaves this process less to do
            # DeepSpeed and ZeRO-3's parameter gathering need every process in every forward: an
            # empty share runs a real row with weight 0
            weight = 1.0 if micro_rows else 0.0
            batch = {k: v.to(device) for k, v in self.collate(micro_rows or step_rows[:1], pad_id).items()}
            if micro_rows:  # encoder-decoder: the encoder's and the decoder's padded lengths
                self.real_tokens += sum(len(r.input_ids) for r in micro_rows)
                self.padded_tokens += batch["input_ids"].numel() + (batch["labels"].numel() if "position_ids" not in batch else 0)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16" and engine is None):
                loss = weight * token_loss_sum(self.forward, batch, self.attention_impl, self.loss_impl) / max(1, step_loss_tokens)
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
        else:
            if dist.world > 1:
                all_reduce_grads(self.params)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm).item()
            if not math.isfinite(grad_norm):  # every process holds the same reduced gradients: all stop here
                raise TrainingDiverged(step + 1, dist.sum(loss_sum), grad_norm, cfg)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        loss_sum = dist.sum(loss_sum)
        if not math.isfinite(loss_sum):  # the DeepSpeed path's check (its step is already taken)
            raise TrainingDiverged(step + 1, loss_sum, grad_norm, cfg)
        return loss_sum, grad_norm, lr


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
