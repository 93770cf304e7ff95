"""The Hydra-free training worker: `python -m src.training.worker <cell>/resolved.yaml`, one per rank
under torchrun (src/training/spawn.py starts them). Every rank reads the resolved config, so Hydra
never sees torchrun's arguments and every rank shares the cell's folder; rank 0 writes the files.
"""

from __future__ import annotations

import logging
import os
import sys

import torch

from src.cell import Cell
from src.data.template import chat_format
from src.models.load import load_tokenizer, pick_device
from src.plugins import load_config
from src.training import deepspeed as ds
from src.training.recipe import train_cell

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    """The worker: python -m src.training.worker <resolved.yaml> (under torchrun, or alone for one process)."""
    from omegaconf import OmegaConf

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m src.training.worker <resolved.yaml>")
    cell = Cell.of(load_config(OmegaConf.to_container(OmegaConf.load(argv[0]), resolve=True)))
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"[rank {rank}] %(asctime)s %(name)s %(levelname)s %(message)s")
    device = pick_device(cell.cfg.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if "WORLD_SIZE" in os.environ:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if cell.cfg.train.deepspeed:
            ds.init_distributed(backend)
        else:
            torch.distributed.init_process_group(backend)
    try:
        tokenizer = load_tokenizer(cell.cfg.model, cell.cfg.cache_dir)
        train_cell(cell, device, tokenizer, chat_format(tokenizer, cell.cfg.model.chat_template))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
