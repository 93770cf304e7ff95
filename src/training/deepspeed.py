"""DeepSpeed (ZeRO-2/3, optional CPU offload) for the training loop: its config and engine.

The engine is started only when `train.deepspeed` names a config; `import deepspeed` happens here
and nowhere else, so a machine without it trains with the plain loop.
"""

from __future__ import annotations

import json

from src import PROJECT_ROOT
from src.config import TrainConfig


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


def start_engine(model, optimizer, scheduler, cfg: TrainConfig, world: int):
    """(engine, optimizer, scheduler) as DeepSpeed wraps them."""
    import deepspeed

    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(cfg, world))
    return engine, optimizer, scheduler


def consolidated_state(engine) -> dict | None:
    """The whole model's weights gathered from ZeRO-3 shards (None: the model holds them already)."""
    if engine is not None and engine.zero_optimization_stage() == 3:
        return engine._zero3_consolidated_16bit_state_dict()
    return None


def init_distributed(backend: str) -> None:
    import deepspeed

    deepspeed.init_distributed(dist_backend=backend)
