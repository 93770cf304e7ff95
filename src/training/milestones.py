"""Which run trains a cell, and which models that run saves.

separate mode (train.mode=separate): the cell's own run, saved at its end; the grid's smaller amounts
(train.milestones) are still step boundaries, so it steps exactly as a milestone run would.
milestone mode: the run over the largest of train.milestones trains once and saves every milestone
into that amount's own cell folder, so those cells find their training done and only evaluate
(the study's "checkpoints of one run": valid because the schedule is constant after warm-up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from src.cell import Cell
from src.config import ConfigError
from src.data.prepare import PreparedData


@dataclass
class Plan:
    run: Cell  # the cell whose run trains (this cell, or the largest milestone's)
    boundaries: list[int]  # token counts the run's data is packed and stepped around


@dataclass
class Target:
    """A model the training run saves: an amount, the cell it belongs to, the rows after which it is
    saved (None: the end) and the data summary a run on that amount alone would have."""

    cell: Cell
    amount: int | None
    rows: int | None
    data_summary: dict = field(default_factory=dict)


def plan(cell: Cell) -> Plan:
    cfg = cell.cfg
    milestones = cfg.train.milestones
    if cfg.train.mode != "milestone":
        return Plan(cell, [m for m in milestones if cfg.data.amount is None or m < cfg.data.amount])
    if cfg.data.amount not in milestones:
        raise ConfigError(f"data.amount={cfg.data.amount} is not one of train.milestones {milestones}: "
                          "milestone mode trains the listed amounts only")
    largest = cell if cfg.data.amount == milestones[-1] else cell.at_amount(milestones[-1])
    return Plan(largest, milestones[:-1])


def training_lock(cell: Cell) -> Path:
    """The lock of the run that trains this cell (in milestone mode, its largest amount's cell)."""
    return plan(cell).run.train_lock


def name_later_stage(sft: Cell, run_id: str) -> None:
    """The preference cell `run_id` starts from `sft`'s checkpoint: named under the training lock,
    which the imitation-only cell holds to look and remove (src/training/recipe.py release_checkpoint)."""
    from src.io import file_lock

    with file_lock(training_lock(sft)):
        sft.keep_checkpoint_for(run_id)


def targets(cell: Cell, run: Plan, data: PreparedData) -> list[Target]:
    if cell.cfg.train.mode != "milestone":
        return [Target(cell, cell.cfg.data.amount, None, data.summary())]
    found = []
    for record in data.milestones:
        target = cell if record["amount"] == cell.cfg.data.amount else cell.at_amount(record["amount"])
        summary = data.summary() | {k: record[k] for k in ("examples", "total_tokens", "loss_tokens", "rows",
                                                           "packing_efficiency", "pretrain") if k in record}
        found.append(Target(target, record["amount"], record["rows"], summary))
    return [*found, Target(run.run, run.run.cfg.data.amount, None, data.summary())]
