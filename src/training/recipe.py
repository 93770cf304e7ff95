"""The SFT recipe of a cell, top to bottom: plan the run -> prepare its data -> load the base model ->
train (src/training/loop.py) -> save each target's checkpoint and train.json.

    obtain(cell, ...)     the pipeline's door: the cell's model, from its saved checkpoint, trained
                          here (one process), or trained by the torchrun worker (train.nproc > 1 or
                          train.deepspeed: src/training/spawn.py, worker.py) and loaded from its checkpoint
    train_cell(cell, ...) what every training process runs

One training run at a time writes a run's folders (a lock in the training run's cell folder), so a
second cell of a milestone grid waits, then finds its checkpoint saved and only evaluates.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import torch

from src.cell import Cell
from src.data.prepare import PreparedData, prepare
from src.data.template import ChatFormat
from src.io import file_lock
from src.models.backend import ModelWeights
from src.models.load import load_model, model_is_encoder_decoder
from src.results import TrainingRecord
from src.stages import reached
from src.training.dist import Dist
from src.training.loop import SavePoint, train
from src.training.milestones import Plan, Target, plan, targets, training_lock
from src.training.spawn import launch_worker
from src.training.throughput import TrainStats

log = logging.getLogger(__name__)


@dataclass
class Trained:
    """A cell's model as evaluation receives it, and how it came to be (record None: the base model)."""

    weights: ModelWeights
    record: TrainingRecord | None = None
    timings: dict = field(default_factory=dict)


def obtain(cell: Cell, resolved: dict, tokenizer, fmt: ChatFormat, device: torch.device, on_step=None,
           keep_model: bool = True) -> Trained:
    """`keep_model=False`: the checkpoint is written whatever train.save_checkpoint says (a later stage,
    the preference stage of src/training/dpo.py, starts from it, now or in a rerun)."""
    cfg = cell.cfg
    weights = ModelWeights(cfg.model, cfg.cache_dir, trained=cell.trained, seed=cfg.seed)
    if not cell.trained:
        return Trained(weights)
    run = plan(cell)
    # one training per run at a time: a second cell of a milestone grid waits, then finds it done
    with file_lock(run.run.train_lock):
        if (record := cell.training()) is not None:  # by this cell earlier, or by its grid's milestone run
            log.info("training was done earlier: loaded %s", cell.checkpoint)
            return Trained(dataclasses.replace(weights, checkpoint=cell.checkpoint), record)
        if not needs_worker(cfg):
            return train_cell(cell, device, tokenizer, fmt, on_step=on_step, keep_model=keep_model)
        clock = time.perf_counter()
        prepare_for(cell, run, tokenizer, fmt)  # once, before any worker starts: the workers hit the cache
        prepare_s = time.perf_counter() - clock
        clock = time.perf_counter()
        launch_worker(cell, resolved)
        if (record := cell.training()) is None:
            raise RuntimeError(f"the training worker ended without saving {cell.checkpoint}")
    if on_step:  # rank 0's step records, mirrored to the tracker now
        for step in record.train.get("history", []):
            on_step(step)
    return Trained(dataclasses.replace(weights, checkpoint=cell.checkpoint), record,
                   {"prepare_s": prepare_s, "train_s": time.perf_counter() - clock})


def release_checkpoint(cell: Cell) -> None:
    """After evaluation under train.save_checkpoint=false (the checkpoint was written only to hand the
    model over): remove it, unless a preference stage has named it as its start. Under the training
    lock, which a preference stage holds to name it, so that none can name it between the look and
    the removal and then find it gone."""
    with file_lock(training_lock(cell)):
        if later := cell.later_stages():
            log.info("kept %s: the preference stage of %s starts from it", cell.checkpoint, ", ".join(later))
        else:
            cell.remove_checkpoint()


def needs_worker(cfg) -> bool:
    return cfg.train.nproc > 1 or cfg.train.nnodes > 1 or cfg.train.deepspeed is not None


def prepare_for(cell: Cell, run: Plan, tokenizer, fmt: ChatFormat) -> PreparedData:
    cfg = cell.cfg
    block_length = min(cfg.train.block_length, cfg.model.context_length)
    return prepare(run.run.cfg.data, tokenizer, fmt, block_length, cfg.model.context_length, cfg.cache_dir,
                   run.boundaries, workers=cfg.prepare_workers,
                   encoder_decoder=model_is_encoder_decoder(cfg.model, cfg.cache_dir))


def train_cell(cell: Cell, device: torch.device, tokenizer, fmt: ChatFormat, on_step=None,
               keep_model: bool = False) -> Trained:
    """Train (every process runs this) and save each target's checkpoint and train.json. With
    `keep_model`, this cell's model stays in memory for evaluation (and is written only when the
    recipe keeps checkpoints)."""
    cfg, dist = cell.cfg, Dist.current()
    # --- set up --------------------------------------------------------------------------------
    clock = time.perf_counter()
    run = plan(cell)
    if dist.main:  # the pipeline prepared already when it launched workers: a cache hit; rank 0 first
        data = prepare_for(cell, run, tokenizer, fmt)
    dist.barrier()
    if not dist.main:
        data = prepare_for(cell, run, tokenizer, fmt)
    timings = {"prepare_s": time.perf_counter() - clock}
    clock = time.perf_counter()
    model = load_model(cfg.model, tokenizer, cfg.cache_dir, device, dropout=cfg.train.dropout, seed=cfg.seed)
    timings["load_model_s"] = time.perf_counter() - clock
    mode = "milestone" if cfg.train.mode == "milestone" else "separate_run"
    # the model left in memory at the end is the run's last target: this cell's only if it is that one
    keep_model = keep_model and run.run.run_id == cell.run_id
    # evaluated from memory and written nowhere, unless the recipe keeps checkpoints or a preference
    # stage has named this one as its start (at launch: src/grid.py name_later_stages)
    in_memory_only = keep_model and not cfg.train.save_checkpoint and not cell.later_stages()
    saved: dict[str, TrainingRecord] = {}

    def saver(target: Target):
        def save(stats: TrainStats, export) -> None:
            record = TrainingRecord(target.data_summary, dataclasses.asdict(stats), mode, run.run.run_id, target.amount)
            if target.cell.run_id == cell.run_id:
                saved["own"] = record
                if in_memory_only:
                    return  # this process evaluates the model in memory and nobody else needs it
            if dist.main:
                target.cell.replacing_checkpoint()
            export(target.cell.checkpoint)
            if dist.main:
                tokenizer.save_pretrained(target.cell.checkpoint)  # with the chat template
                reached("train:checkpoint-saved")
                target.cell.write_training(record)
                log.info("saved the model after %d tokens to %s", stats.tokens_seen, target.cell.checkpoint)
            dist.barrier()
        return save

    # --- train and save --------------------------------------------------------------------------
    own_targets = targets(cell, run, data)
    clock = time.perf_counter()
    train(model, data.rows, cfg.train, tokenizer.pad_token_id, device, on_step=on_step,
          save_points=[SavePoint(t.rows, saver(t)) for t in own_targets],
          boundaries=[m["rows"] for m in data.milestones], state_dir=run.run.train_state)
    timings["train_s"] = time.perf_counter() - clock
    checkpoint = None if in_memory_only else cell.checkpoint
    weights = ModelWeights(cfg.model, cfg.cache_dir, trained=True, checkpoint=checkpoint,
                           module=model if keep_model else None, seed=cfg.seed)
    return Trained(weights, saved.get("own"), timings)
