"""Resumable training state: model, optimizer, scheduler, RNG and step, written atomically.

A state is a folder `<state_dir>/step-<n>`; it is written as `.tmp-step-<n>` and renamed when
complete, so a run killed while saving leaves the previous state intact and a folder named
`step-<n>` is always whole. Each process writes its own RNG state (dropout draws differ per rank);
rank 0 writes the rest. Under DeepSpeed the engine writes model and optimizer shards itself.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from src.io import replace_dir
from src.stages import reached

_STEP = re.compile(r"^step-(\d+)$")


def latest(state_dir: Path | None) -> Path | None:
    if state_dir is None or not state_dir.is_dir():
        return None
    steps = sorted((int(m.group(1)), p) for p in state_dir.iterdir() if (m := _STEP.match(p.name)))
    return steps[-1][1] if steps else None


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(state_dir: Path, step: int, dist, write_rank0, write_collective=None) -> Path:
    """Write a state atomically. `write_rank0(folder)` runs on rank 0 (model, optimizer, scheduler,
    progress); `write_collective(folder)` on every rank (DeepSpeed's sharded save)."""
    final = state_dir / f"step-{step}"
    tmp = state_dir / f".tmp-step-{step}"
    if dist.main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    torch.save(rng_state(), tmp / f"rng-{dist.rank}.pt")
    if write_collective is not None:
        write_collective(tmp)
    if dist.main:
        write_rank0(tmp)
    dist.barrier()
    if dist.main:
        replace_dir(tmp, final)
        reached("train:state-saved")
        for old in state_dir.iterdir():  # keep only the newest state: optimizer states are large
            if old != final and (_STEP.match(old.name) or old.name.startswith(".tmp-step-")):
                shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def load_rng(folder: Path, rank: int) -> None:
    set_rng_state(torch.load(folder / f"rng-{rank}.pt", weights_only=False))
