"""Weights & Biases: one run per cell, mirrored from the local files (which stay the truth).

mode auto = online when a key is configured (WANDB_API_KEY or a `wandb login` netrc entry),
offline otherwise; `wandb sync <cell>/wandb/offline-run-*` uploads later. The run id is the cell's
run_id with resume="allow", so a rerun appends to the same run instead of duplicating it.

W&B never stops a cell: when an online run cannot start within WANDB_INIT_TIMEOUT seconds (default
30; server down, bad key, no network) the run falls back to offline mode with a warning, and a
failing log call is a warning too. The cell's files stay the truth; `make sync` uploads later.
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


def init_timeout() -> float:
    return float(os.environ.get("WANDB_INIT_TIMEOUT", "30"))


class Tracker:
    """The W&B run of a cell (id = its run_id), written under the cell's folder."""

    def __init__(self, cfg: RunConfig, run_id: str, output_dir: Path, resolved: dict):
        self.run = None
        self.mode = resolve_mode(cfg.tracker.mode)
        if self.mode == "disabled":
            return
        import wandb

        output_dir.mkdir(parents=True, exist_ok=True)
        arguments = dict(
            project=cfg.tracker.project, entity=cfg.tracker.entity, group=cfg.tracker.group or cfg.sweep,
            name=cfg.cell_name(), id=run_id, resume="allow", dir=str(output_dir),
            config=resolved, reinit="finish_previous",  # several cells in one process: never merge runs
            tags=[cfg.model.name, cfg.data.source.name, format_amount(cfg.data.amount), *cfg.tracker.tags],
        )
        try:
            self.run = wandb.init(mode=self.mode, settings=wandb.Settings(init_timeout=init_timeout()), **arguments)
        except Exception as err:  # wandb raises CommError, UsageError, AuthenticationError, ...
            if self.mode != "online":
                raise
            log.warning("W&B online run could not start (%s: %s); logging offline instead, "
                        "`wandb sync %s` uploads it later", type(err).__name__, str(err).splitlines()[0],
                        output_dir / "wandb" / "offline-run-*")
            wandb.teardown()  # the failed online attempt must not hold the run id
            self.mode = "offline"
            self.run = wandb.init(mode="offline", **arguments)
        log.info("W&B run %s (%s) in %s", self.run.id, self.mode, output_dir / "wandb")

    def log(self, record: dict, step: int | None = None) -> None:
        if self.run is not None:
            try:
                self.run.log(record, step=step)
            except Exception as err:  # a mirror that fails must not fail the cell
                log.warning("W&B log failed (%s: %s); results.json keeps everything", type(err).__name__, err)

    def log_predictions(self, benchmark: str, predictions: list[dict], cap: int) -> None:
        """A table of the first `cap` per-example predictions (the full set is in predictions.jsonl)."""
        if self.run is None or not predictions or cap <= 0:
            return
        import wandb

        columns = list(predictions[0])
        rows = [[_cell(p.get(c)) for c in columns] for p in predictions[:cap]]
        self.log({f"{benchmark}/predictions": wandb.Table(columns=columns, data=rows)})

    def finish(self, summary: dict | None = None, failed: bool = False) -> None:
        if self.run is None:
            return
        try:
            if summary:
                self.run.summary.update(summary)
            self.run.finish(exit_code=1 if failed else 0)
        except Exception as err:  # the mirror failing at the end must not fail a finished cell
            log.warning("W&B finish failed (%s: %s); results.json keeps everything", type(err).__name__, err)
        finally:
            self.run = None


def _cell(value) -> str | float | int | bool:
    """W&B tables want one type per column: keep scalars, write the rest as text."""
    if isinstance(value, (str, float, int, bool)):
        return value
    return str(value)
