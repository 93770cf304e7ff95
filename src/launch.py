"""Training a cell: in this process, or in a Hydra-free worker under torchrun.

    run_training(cfg)                        the pipeline's door: prepare once, then train here
                                             (1 process) or launch the worker (train.nproc > 1 or
                                             train.deepspeed) and wait for it
    python -m src.launch <work>/resolved.yaml   the worker: every rank reads the resolved config,
                                             so Hydra never sees torchrun's arguments and all ranks
                                             share the cell's work folder; rank 0 writes the files

Either way `train_cell` does the work: the cached prepared data, the model, `src.train.train`, and
the saved checkpoint(s) with train.json beside each. In milestone mode (train.mode=milestone) it
trains the largest of train.milestones once and saves every milestone into that amount's own cell
folder (src.cells.work_dir), so those cells find their training done and only evaluate.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from src import PROJECT_ROOT
from src.cells import finished_training, work_dir, write_training_record
from src.config import ConfigError, RunConfig
from src.data.prepare import PreparedData, prepare
from src.data.template import chat_format
from src.io import file_lock
from src.models import load_model, load_tokenizer, pick_device
from src.train import Dist, SavePoint, TrainStats, train

log = logging.getLogger(__name__)


@dataclass
class Target:
    """A model this training run saves: a data amount and the cell folder it belongs to."""

    amount: int | None
    work: Path
    rows: int | None  # rows of the run after which it is saved (None: the end)
    data_summary: dict = field(default_factory=dict)


@dataclass
class Trained:
    model: torch.nn.Module | None  # None: trained elsewhere (worker, another cell): load the checkpoint
    data: dict
    train: dict
    mode: str  # separate_run | milestone
    timings: dict = field(default_factory=dict)


def needs_worker(cfg: RunConfig) -> bool:
    return cfg.train.nproc > 1 or cfg.train.deepspeed is not None


def _amount_cfg(cfg: RunConfig, amount: int | None) -> RunConfig:
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, amount=amount))


def plan(cfg: RunConfig) -> tuple[RunConfig, list[int], Path]:
    """(the config of the run that trains, its budget boundaries, the folder of its resumable state)."""
    milestones = cfg.train.milestones
    if cfg.train.mode != "milestone":
        boundaries = [m for m in milestones if cfg.data.amount is None or m < cfg.data.amount]
        return cfg, boundaries, Path(cfg.output_dir) / "train_state"
    if cfg.data.amount not in milestones:
        raise ConfigError(f"data.amount={cfg.data.amount} is not one of train.milestones {milestones}: "
                          "milestone mode trains the listed amounts only")
    largest = _amount_cfg(cfg, milestones[-1])
    return largest, milestones[:-1], work_dir(largest) / "train_state"


def targets(cfg: RunConfig, run_cfg: RunConfig, data: PreparedData) -> list[Target]:
    if cfg.train.mode != "milestone":
        return [Target(cfg.data.amount, Path(cfg.output_dir), None, data.summary())]
    found = []
    for record in data.milestones:
        amount_cfg = _amount_cfg(cfg, record["amount"])
        work = Path(cfg.output_dir) if record["amount"] == cfg.data.amount else work_dir(amount_cfg)
        summary = data.summary() | {k: record[k] for k in ("examples", "total_tokens", "loss_tokens", "rows",
                                                           "packing_efficiency")}
        found.append(Target(record["amount"], work, record["rows"], summary))
    work = Path(cfg.output_dir) if run_cfg.data.amount == cfg.data.amount else work_dir(run_cfg)
    return [*found, Target(run_cfg.data.amount, work, None, data.summary())]


def prepare_for(cfg: RunConfig, tokenizer, fmt) -> PreparedData:
    run_cfg, boundaries, _ = plan(cfg)
    block_length = min(cfg.train.block_length, cfg.model.context_length)
    return prepare(run_cfg.data, tokenizer, fmt, block_length, cfg.model.context_length, cfg.cache_dir, boundaries)


def train_cell(cfg: RunConfig, device: torch.device, on_step=None, keep_model: bool = False) -> Trained:
    """Train (every process runs this) and save each target's checkpoint and train.json."""
    dist = Dist.current()
    clock = time.perf_counter()
    tokenizer = load_tokenizer(cfg.model, cfg.cache_dir)
    fmt = chat_format(tokenizer, cfg.model.chat_template)
    run_cfg, _, state_dir = plan(cfg)
    if dist.main:  # the pipeline prepared already: this is a cache hit; rank 0 first, so never twice
        data = prepare_for(cfg, tokenizer, fmt)
    dist.barrier()
    if not dist.main:
        data = prepare_for(cfg, tokenizer, fmt)
    timings = {"prepare_s": time.perf_counter() - clock}

    clock = time.perf_counter()
    model = load_model(cfg.model, tokenizer, cfg.cache_dir, device, dropout=cfg.train.dropout, seed=cfg.seed)
    timings["load_model_s"] = time.perf_counter() - clock
    mode = "milestone" if cfg.train.mode == "milestone" else "separate_run"
    # the model left in memory at the end is the run's last target: this cell's only if it is that one
    keep_model = keep_model and run_cfg.data.amount == cfg.data.amount
    own: dict = {}

    def saver(target: Target):
        def save(stats: TrainStats, export) -> None:
            record = dataclasses.asdict(stats)
            if target.work == Path(cfg.output_dir):
                own["train"] = record
            if keep_model and target.work == Path(cfg.output_dir) and not cfg.train.save_checkpoint:
                return  # this process evaluates the model in memory and nobody else needs it
            if dist.main:  # a checkpoint being replaced is not complete until train.json is back
                (target.work / "train.json").unlink(missing_ok=True)
            export(target.work / "checkpoint")
            if dist.main:
                tokenizer.save_pretrained(target.work / "checkpoint")  # with the chat template
                write_training_record(target.work, target.data_summary, record, mode=mode,
                                      trained_by=run_cfg.run_id(), amount=target.amount)
                log.info("saved the model after %d tokens to %s", stats.tokens_seen, target.work / "checkpoint")
            dist.barrier()
        return save

    points = [SavePoint(t.rows, saver(t)) for t in targets(cfg, run_cfg, data)]
    clock = time.perf_counter()
    train(model, data.rows, cfg.train, tokenizer.pad_token_id, device, on_step=on_step, save_points=points,
          boundaries=[m["rows"] for m in data.milestones], state_dir=state_dir)
    timings["train_s"] = time.perf_counter() - clock
    summary = next(t.data_summary for t in targets(cfg, run_cfg, data) if t.work == Path(cfg.output_dir))
    return Trained(model if keep_model else None, summary, own.get("train", {}), mode, timings)


def run_training(cfg: RunConfig, resolved: dict, tokenizer, fmt, device: torch.device, on_step=None) -> Trained:
    """The pipeline's door (one process, Hydra's): train this cell, here or through the worker."""
    run_cfg, _, state_dir = plan(cfg)
    out = Path(cfg.output_dir)
    # one training per run at a time: a second cell of a milestone grid waits, then finds it done
    with file_lock(state_dir.parent / "train.lock"):
        done = finished_training(out)
        if done is not None:  # a milestone run of this grid trained it while we waited
            return Trained(None, done["data"], done["train"], done.get("mode", "separate_run"))
        if not needs_worker(cfg):
            return train_cell(cfg, device, on_step=on_step, keep_model=True)
        clock = time.perf_counter()
        prepare_for(cfg, tokenizer, fmt)  # once, before any worker starts: the workers hit the cache
        prepare_s = time.perf_counter() - clock
        clock = time.perf_counter()
        launch_worker(cfg, resolved)
        done = finished_training(out)
        if done is None:
            raise RuntimeError(f"the training worker ended without saving {out / 'checkpoint'}")
        if on_step:  # rank 0's step records, mirrored to the tracker now
            for record in done["train"].get("history", []):
                on_step(record)
        return Trained(None, done["data"], done["train"], done.get("mode", "separate_run"),
                       {"prepare_s": prepare_s, "train_s": time.perf_counter() - clock})


def write_resolved(cfg: RunConfig, resolved: dict) -> Path:
    """The cell's resolved config as the worker reads it (Hydra's own keys dropped)."""
    from omegaconf import OmegaConf

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw = {k: v for k, v in resolved.items() if k not in ("hydra", "hydra_overrides")}
    raw["output_dir"] = str(out)
    path = out / "resolved.yaml"
    OmegaConf.save(OmegaConf.create(raw), path)
    return path


def launch_worker(cfg: RunConfig, resolved: dict) -> None:
    path = write_resolved(cfg, resolved)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.train.nproc}",
               "-m", "src.launch", str(path)]
    log.info("launching %s", " ".join(command))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1)
                                                                                      // cfg.train.nproc)))}
    proc = subprocess.run(command, cwd=PROJECT_ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"the training worker failed (exit {proc.returncode}): {' '.join(command)}")


def main(argv: list[str] | None = None) -> None:
    """The worker: python -m src.launch <resolved.yaml> (under torchrun, or alone for one process)."""
    from omegaconf import OmegaConf

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m src.launch <resolved.yaml>")
    raw = OmegaConf.to_container(OmegaConf.load(argv[0]), resolve=True)
    cfg = RunConfig.from_dict(raw)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"[rank {rank}] %(asctime)s %(name)s %(levelname)s %(message)s")
    device = pick_device(cfg.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if "WORLD_SIZE" in os.environ:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if cfg.train.deepspeed:
            import deepspeed

            deepspeed.init_distributed(dist_backend=backend)
        else:
            torch.distributed.init_process_group(backend)
    try:
        train_cell(cfg, device)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def remove_checkpoint(work: Path) -> None:
    """After evaluation, when the recipe keeps no checkpoint (the worker had to write one to hand over)."""
    shutil.rmtree(work / "checkpoint", ignore_errors=True)


if __name__ == "__main__":
    main()
