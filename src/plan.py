"""The cost of a grid before it runs (`plan=true`): per cell the model, source, amount, tokens, steps,
training FLOPs and GPU-hours, whether it is done already (or trained by its grid's milestone run),
and the totals. No weights are loaded: parameters are counted on the meta device from the model's
config (a local folder, the local Hugging Face cache or an already converted GGUF file).

    FLOPs of a run = tokens x epochs x (6N + 12 x n_layer x d_model x L)      (src/training/throughput.py)
    GPU-hours      = FLOPs / (MFU x peak FLOP/s per GPU) / 3600

MFU and peak come from the last results.json in the store of a trained cell of that model whose MFU
was measured (a GPU run), else from `plan_mfu` and `plan_peak_flops` (train.peak_flops when set).
Steps assume full rows (packing continues an example into the next row, so only the last row of
each packed increment is partial). An encoder-decoder base trains on one unpacked row per assistant
reply, a count known only once the data is prepared: its steps print as "?" (its FLOPs are the same
rough 6N-per-token figure, which counts both stacks for every token).
"""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import dataclass

from src import resolve_path
from src.cell import Cell
from src.config import ModelConfig, RunConfig, format_amount
from src.models.sources import model_identity

log = logging.getLogger(__name__)


@dataclass
class CellCost:
    cell: str
    model: str
    source: str
    amount: str
    tokens: int | None  # trained tokens of this cell's own run (None: unknown, data.amount=all)
    steps: int | None
    flops: float | None  # None: the model's architecture is not available here
    gpu_hours: float | None
    throughput: str  # where MFU and peak came from
    state: str  # to run | done | trained (evaluation left) | trained by <cell> | base model


@functools.cache
def _flops_per_token(model_key: str, block_length: int) -> float | None:
    cfg, cache_dir = _MODELS[model_key]
    config = architecture(cfg, cache_dir)
    if config is None:
        return None
    import torch

    from src.models.load import auto_class
    from src.training.throughput import flops_per_token

    with torch.device("meta"):
        model = auto_class(config).from_config(config)
    return flops_per_token(model, block_length)


@functools.cache
def _unpacked(model_key: str) -> bool:
    """Whether the model is an encoder-decoder (its config read once per model, as its FLOPs are)."""
    from src.models.load import is_encoder_decoder

    config = architecture(*_MODELS[model_key])
    return config is not None and is_encoder_decoder(config)


_MODELS: dict[str, tuple[ModelConfig, str]] = {}


def architecture(cfg: ModelConfig, cache_dir: str):
    """The model's transformers config: its own, when it is on this machine, else model.architecture;
    None when neither is there."""
    from transformers import AutoConfig

    try:
        found = _local_architecture(cfg, cache_dir)
    except (OSError, ValueError) as err:
        log.debug("no local config for %s: %s", cfg.name, err)
        found = None
    if found is None and cfg.architecture:
        fields = dict(cfg.architecture)
        return AutoConfig.for_model(fields.pop("model_type"), **fields)
    return found


def _local_architecture(cfg: ModelConfig, cache_dir: str):
    from transformers import AutoConfig, LlamaConfig, T5Config

    from src.models.sources import converted_gguf, model_config_by_name

    if cfg.hub_id is not None:
        return AutoConfig.from_pretrained(str(resolve_path(cfg.hub_id)) if resolve_path(cfg.hub_id).exists()
                                          else cfg.hub_id, local_files_only=True)
    if cfg.gguf is not None:
        folder = converted_gguf(cfg, cache_dir)
        return AutoConfig.from_pretrained(folder) if folder else None
    if cfg.init is not None and cfg.tokenizer_of:
        vocab = architecture(model_config_by_name(cfg.tokenizer_of), cache_dir)
        if vocab is None:
            return None
        fields = dict(cfg.init)
        model_type = fields.pop("model_type", "llama")
        return (T5Config if model_type == "t5" else LlamaConfig)(vocab_size=vocab.vocab_size, **fields)
    return None  # a model built here (the toy world's): its shape is known once it is pretrained


def measured_mfu(store_dir: str, model: str) -> tuple[float, float, str] | None:
    """(MFU, peak FLOP/s, where) of the newest trained cell of `model` in the store with a measured MFU."""
    found = []
    for path in resolve_path(store_dir).glob("*/results.json"):
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        train = results.get("train") or {}
        if results.get("axes", {}).get("model") == model and train.get("mfu") and train.get("peak_flops"):
            found.append((path.stat().st_mtime, train["mfu"], train["peak_flops"], path.parent.name))
    if not found:
        return None
    _, mfu, peak, run_id = max(found)
    return mfu, peak, f"measured (cell {run_id})"


def cell_cost(cfg: RunConfig) -> CellCost:
    from src.training.milestones import plan

    cell = Cell.of(cfg)
    amount = format_amount(cfg.data.amount)
    common = {"cell": cell.name, "model": cfg.model.name, "source": cfg.data.source.name, "amount": amount}
    if not cell.trained:
        state = "done" if cell.finished() is not None else "base model"
        return CellCost(**common, tokens=0, steps=0, flops=0.0, gpu_hours=0.0, throughput="", state=state)
    run = plan(cell).run
    if cell.finished() is not None:
        state = "done"
    elif cell.training() is not None:
        state = "trained (evaluation left)"
    elif run.run_id != cell.run_id:
        state = f"trained by {run.name}"
    else:
        state = "to run"
    tokens = cfg.data.amount
    block = min(cfg.train.block_length, cfg.model.context_length)
    steps = None
    # by what decides the weights' shape, not the name: a grid may vary model.hub_id or model.init under one
    key = json.dumps([model_identity(cfg.model), cfg.model.architecture, cfg.cache_dir], sort_keys=True, default=str)
    _MODELS[key] = (cfg.model, cfg.cache_dir)
    if tokens is not None and not _unpacked(key):  # an encoder-decoder's rows (one per reply) are counted by prepare
        increments = [m for m in cfg.train.milestones if m < tokens] + [tokens]
        if cfg.data.pretrain_mix.active:  # data.pretrain_mix: its text is trained on too (src/data/pretrain_mix.py)
            from src.data.pretrain_mix import pretrain_tokens

            increments = [m + pretrain_tokens(m, cfg.data.pretrain_mix.share) for m in increments]
            tokens = increments[-1]
        edges = [0, *increments]
        rows = sum(math.ceil((b - a) / block) for a, b in zip(edges, edges[1:], strict=False))  # each increment packs alone
        steps = math.ceil(rows / cfg.train.rows_per_step) * cfg.train.epochs
    per_token = _flops_per_token(key, block)
    flops = per_token * tokens * cfg.train.epochs if per_token is not None and tokens is not None else None
    measured = measured_mfu(cfg.store_dir, cfg.model.name)
    if measured:
        mfu, peak, where = measured
    else:
        mfu, peak = cfg.plan_mfu, cfg.train.peak_flops or cfg.plan_peak_flops
        where = f"assumed MFU {mfu:g} x {peak / 1e12:g} TFLOP/s"
    if state != "to run":
        hours, where = 0.0, ""  # its training is (or will be) another cell's cost, or done
    else:
        hours = flops / (mfu * peak) / 3600 if flops is not None else None
    return CellCost(**common, tokens=tokens, steps=steps, flops=flops, gpu_hours=hours, throughput=where, state=state)


def format_plan(costs: list[CellCost]) -> str:
    header = ["cell", "tokens", "steps", "train FLOPs", "GPU-hours", "state", "throughput"]
    rows = [[c.cell, _num(c.tokens), _num(c.steps), _sci(c.flops), _hours(c.gpu_hours), c.state, c.throughput]
            for c in costs]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    to_run = [c for c in costs if c.state in ("to run",)]
    unknown = [c.cell for c in to_run if c.gpu_hours is None]
    total_flops = sum(c.flops or 0.0 for c in to_run)
    total_hours = sum(c.gpu_hours or 0.0 for c in to_run)
    lines.append(f"total: {_count(len(costs), 'cell')}, {_count(len(to_run), 'training run')} to do, "
                 f"{_sci(total_flops)} FLOPs, "
                 f"{_hours(total_hours)} GPU-hours" + (f" (+ {len(unknown)} run(s) of unknown cost: the model's "
                                                       "config is not on this machine)" if unknown else ""))
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _num(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _sci(value: float | None) -> str:
    return "?" if value is None else "0" if value == 0 else f"{value:.3g}"


def _hours(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}" if value >= 1 or value == 0 else f"{value:.2g}"
