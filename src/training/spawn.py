"""Starting the training worker (src/training/worker.py) under torchrun, from the pipeline's process:
used when a cell needs several processes (train.nproc > 1) or DeepSpeed (train.deepspeed)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from src import PROJECT_ROOT
from src.cell import Cell

log = logging.getLogger(__name__)


def write_resolved(cell: Cell, resolved: dict) -> Path:
    """The cell's resolved config as the worker reads it (Hydra's own keys dropped)."""
    from omegaconf import OmegaConf

    cell.dir.mkdir(parents=True, exist_ok=True)
    raw = {k: v for k, v in resolved.items() if k not in ("hydra", "hydra_overrides")}
    OmegaConf.save(OmegaConf.create(raw), cell.resolved_path)
    return cell.resolved_path


def launch_worker(cell: Cell, resolved: dict) -> None:
    path = write_resolved(cell, resolved)
    nproc = cell.cfg.train.nproc
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "src.training.worker", str(path)]
    log.info("launching %s", " ".join(command))
    threads = os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    proc = subprocess.run(command, cwd=PROJECT_ROOT, env={**os.environ, "OMP_NUM_THREADS": threads})
    if proc.returncode != 0:
        raise RuntimeError(f"the training worker failed (exit {proc.returncode}): {' '.join(command)}")
