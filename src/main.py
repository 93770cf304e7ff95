"""Entry point: `python -m src.main [overrides]`, or `-m` for a grid (Hydra multirun).

Thin by design: Hydra composes the config, RunConfig validates it (a bad key or value stops here,
before any model loads), src.cells skips finished cells, and train_and_eval does the work.
In a grid, a failing cell is recorded in its status.json and the other cells go on; the sweep then
exits non-zero (src.callbacks) and a relaunch retries only what did not finish.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.cells import run_cell, work_dir
from src.config import ConfigError, RunConfig
from src.data.budget import BudgetError
from src.data.sources import DataError
from src.io import OutputError, ensure_dir
from src.pipeline import train_and_eval

log = logging.getLogger(__name__)
USER_ERRORS = (ConfigError, DataError, BudgetError, OutputError)  # shown as one line, no traceback
_TASK_STARTED = False  # Hydra handed over a composed config: errors before this are command-line errors


def to_run_config(cfg: DictConfig) -> tuple[RunConfig, dict]:
    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("hydra", None)
    return RunConfig.from_dict(raw), raw


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict | None:
    global _TASK_STARTED
    _TASK_STARTED = True
    hydra_cfg = HydraConfig.get()
    job_dir = Path(hydra_cfg.runtime.output_dir)
    in_grid = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        run_cfg, raw = to_run_config(cfg)
        ensure_dir(work_dir(run_cfg).parent)  # an unwritable store stops here, before any model loads
        raw["hydra_overrides"] = list(hydra_cfg.overrides.task)
        return run_cell(run_cfg, raw, job_dir, train_and_eval)
    except USER_ERRORS as err:
        log.error("%s", err)
        if in_grid:
            _record_failure(job_dir, err)
            return None
        raise SystemExit(f"error: {err}") from None
    except Exception as err:
        if not in_grid:
            raise
        log.exception("cell failed; the grid goes on")
        _record_failure(job_dir, err)
        return None


def _record_failure(job_dir: Path, err: BaseException) -> None:
    """A config error happens before a RunConfig exists; run_cell already wrote the others."""
    from src.cells import STATUS
    from src.io import write_json_atomic

    if not (job_dir / STATUS).exists() or "failed" not in (job_dir / STATUS).read_text():
        write_json_atomic(job_dir / STATUS, {"state": "failed", "error": f"{type(err).__name__}: {err}"})


def cli() -> None:
    """`python -m src.main`: a mistake on the command line is one line, like every other user error.

    Hydra prints the composition errors it does not anticipate (a config group given a number:
    `model=0`) with a full traceback; with HYDRA_FULL_ERROR set it raises them instead, so they can be
    shown here. Errors inside a cell keep their traceback."""
    user_asked = "HYDRA_FULL_ERROR" in os.environ
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        main()
    except Exception as err:
        if user_asked or _TASK_STARTED:
            raise
        if isinstance(err, (HydraException, OmegaConfBaseException, ValueError)):
            sys.exit(f"error: {err}")
        # Hydra's own bugs on odd values (`model=[1,2]`: TypeError deep inside it)
        sys.exit(f"error: the command-line overrides could not be composed ({type(err).__name__}: {err})")


if __name__ == "__main__":
    cli()
