"""Throughput, MFU and peak memory of a training run.

MFU (model FLOPs utilization), reported at the end:

    flops per real token = 6 * N + 12 * n_layer * d_model * L_eff
    MFU = real tokens/s * flops per real token / (peak FLOP/s per device * processes)

N = all parameters; L_eff = the packed row length (train.block_length): a dense attention kernel
computes every query-key pair of the row, the block-diagonal mask only zeroes some (the PaLM
appendix formula with T = L_eff). Peak FLOP/s comes from `train.peak_flops`, else a table of GPU
bf16 dense peaks by name; on CPU it is unknown unless given.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field

import torch

from src.config import TrainConfig

# bf16 dense peak FLOP/s per device, by a substring of torch.cuda.get_device_name()
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12}


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
    attention: str = ""  # the train.attention implementation that ran (src/training/attention.py)
    loss: str = ""  # the train.loss implementation that ran (src/training/loss.py)
    compiled: bool = False  # train.compile: the decoder ran under torch.compile
    fill: float = 0.0  # real tokens / positions computed (pads included) this run: packed rows ~1, bucketed less
    history: list[dict] = field(default_factory=list)  # one record per logged step


def flops_per_token(model: torch.nn.Module, block_length: int) -> float:
    """6N + 12 * n_layer * d_model * L_eff (see the module docstring). An encoder-decoder config names its
    encoder's layers (T5's num_layers): the attention term counts those, a rough figure for such models."""
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


def finish(stats: TrainStats, tokens: int, seconds: float, device: torch.device, cfg: TrainConfig,
           world: int) -> TrainStats:
    """Throughput, MFU and peak memory so far (this process's run: a resumed run counts from resume)."""
    stats.seconds = seconds
    stats.tokens_per_s = tokens / seconds if seconds else 0.0
    stats.peak_flops = peak_flops(cfg, device)
    if stats.peak_flops:
        stats.mfu = stats.tokens_per_s * stats.flops_per_token / (stats.peak_flops * world)
    stats.peak_memory_bytes, stats.peak_memory_source = peak_memory(device)
    return stats
