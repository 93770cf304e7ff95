"""Weights & Biases: one run per cell, mirrored from the local files (which stay the truth).

mode auto = online when a key is configured (WANDB_API_KEY or a `wandb login` netrc entry),
offline otherwise; `wandb sync <cell>/wandb/offline-run-*` uploads later. The run id is the cell's
run_id with resume="allow", so a rerun appends to the same run instead of duplicating it.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

from src.config import RunConfig, format_amount

log = logging.getLogger(__name__)


def has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str) -> str:
    if mode == "auto":
        return "online" if has_wandb_key() else "offline"
    return mode


class Tracker:
    def __init__(self, cfg: RunConfig, resolved: dict, output_dir: Path):
        self.run = None
        self.mode = resolve_mode(cfg.tracker.mode)
        if self.mode == "disabled":
            return
        import wandb

        self.run = wandb.init(
            project=cfg.tracker.project, entity=cfg.tracker.entity, group=cfg.tracker.group or cfg.sweep,
            name=cfg.cell_name(), id=cfg.run_id(), resume="allow", mode=self.mode, dir=str(output_dir),
            config=resolved, reinit="finish_previous",  # several cells in one process: never merge runs
            tags=[cfg.model.name, cfg.data.source.name, format_amount(cfg.data.amount), *cfg.tracker.tags],
        )
        log.info("W&B run %s (%s) in %s", self.run.id, self.mode, output_dir / "wandb")

    def log(self, record: dict, step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(record, step=step)

    def log_predictions(self, benchmark: str, predictions: list[dict], cap: int) -> None:
        """A table of the first `cap` per-example predictions (the full set is in predictions.jsonl)."""
        if self.run is None or not predictions or cap <= 0:
            return
        import wandb

        columns = list(predictions[0])
        rows = [[_cell(p.get(c)) for c in columns] for p in predictions[:cap]]
        self.run.log({f"{benchmark}/predictions": wandb.Table(columns=columns, data=rows)})

    def finish(self, summary: dict | None = None, failed: bool = False) -> None:
        if self.run is None:
            return
        if summary:
            self.run.summary.update(summary)
        self.run.finish(exit_code=1 if failed else 0)
        self.run = None


def _cell(value) -> str | float | int | bool:
    """W&B tables want one type per column: keep scalars, write the rest as text."""
    if isinstance(value, (str, float, int, bool)):
        return value
    return str(value)
