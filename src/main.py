"""Entry point: `python -m src.main [overrides]`, or `-m` for a grid (Hydra multirun).

    Hydra composes the config -> load_config validates it (a bad key or value stops here, before any
    model loads) -> Cell (its run_id and folder) -> the cell's lease -> skipped when its results are
    complete, else train_and_eval (src/pipeline.py)

`run_cell` is the plain function under the Hydra wrapper (tests call it) and the one place that
records a failure: in a grid, a failing cell is recorded in its status.json and the other cells go
on; the sweep then exits non-zero (src/report/callback.py) and a relaunch retries only what did not
finish.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.cell import Cell
from src.config import ConfigError
from src.data.budget import BudgetError
from src.data.sources import DataError
from src.grid import blocked_by_preflight, check_launch
from src.io import OutputError, copy_file_atomic, ensure_dir
from src.pipeline import train_and_eval
from src.plugins import load_config
from src.results import CellStatus, Results

log = logging.getLogger(__name__)
USER_ERRORS = (ConfigError, DataError, BudgetError, OutputError)  # shown as one line, no traceback
_TASK_STARTED = False  # Hydra handed over a composed config: errors before this are command-line errors


def compose_cell(overrides: list[str]) -> dict:
    """The composed config of one cell, as `python -m src.main OVERRIDES` would see it (for code that
    runs cells itself: the toy world's studies, selection in rounds)."""
    from hydra import compose, initialize_config_dir

    from src import PROJECT_ROOT

    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("hydra", None)
    return raw


def run_cell(raw: dict, job_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> Results:
    """One cell of a composed config: skipped when done, else run in its own folder while holding its
    lease; job_dir gets status.json and a copy of results.json."""
    job_dir.mkdir(parents=True, exist_ok=True)
    cell = None
    try:
        cell = Cell.of(load_config(raw))
        ensure_dir(cell.dir.parent)  # an unwritable store stops here, before any model loads
        status = {"cell": cell.name, "run_id": cell.run_id, "work_dir": str(cell.dir)}
        with cell.lease():
            results = None if cell.cfg.force else cell.finished()
            if results is not None:
                CellStatus("skipped", **status, extra={"reason": "already done (force=true reruns it)"}).write(job_dir)
            else:
                started = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "started_unix": time.time()}
                CellStatus("running", **status, extra=started).write(job_dir)
                results = train_and_eval(cell, {**raw, "hydra_overrides": list(overrides)})
                CellStatus("done", **status, extra={**started, "finished_unix": time.time()}).write(job_dir)
    except BaseException as err:
        where = {"cell": cell.name, "run_id": cell.run_id, "work_dir": str(cell.dir)} if cell else {}
        CellStatus("failed", **where, extra={"error": f"{type(err).__name__}: {err}",
                                             "traceback": traceback.format_exc(limit=20)}).write(job_dir)
        raise
    if job_dir.resolve() != cell.dir.resolve():
        copy_file_atomic(cell.results_path, job_dir / "results.json")  # the report reads these copies
    return results


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict | None:
    global _TASK_STARTED
    _TASK_STARTED = True
    hydra_cfg = HydraConfig.get()
    in_grid = hydra_cfg.mode == RunMode.MULTIRUN
    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("hydra", None)
    job_dir = Path(hydra_cfg.runtime.output_dir)
    if int(os.environ.get("SLURM_PROCID", "0")) > 0 and "SUBMITIT_FOLDER" in os.environ:
        # a multi-node cell's job (hydra.launcher.nodes=N) runs this on every node; the first runs the
        # cell and starts the torchrun agents on all of them with srun (src/training/spawn.py)
        return None
    if in_grid and raw.get("plan"):  # the plan was printed before the grid; never run a cell under plan=true
        return None
    if in_grid and blocked_by_preflight(hydra_cfg.sweep.dir, list(hydra_cfg.overrides.task)):
        CellStatus("failed", extra={"error": "preflight: an input of this cell is missing (listed when the "
                                             "grid started); supply it and relaunch"}).write(job_dir)
        log.error("skipped: preflight found an input of this cell missing")
        return None
    if not in_grid and (raw.get("plan") or raw.get("preflight", "stop") != "off") and _valid(raw):
        # a grid was checked as a whole before its first cell (src/grid.py CheckBeforeLaunch); a config
        # error is left to run_cell, which says it in one line
        if check_launch([("this run", raw)], bool(raw.get("plan")), raw.get("preflight", "stop")):
            raise SystemExit("error: preflight: an input is missing (listed above); nothing ran")
    try:
        return run_cell(raw, job_dir, hydra_cfg.overrides.task).to_dict()
    except USER_ERRORS as err:
        log.error("%s", err)
        if in_grid:
            return None
        raise SystemExit(f"error: {err}") from None
    except Exception:
        if not in_grid:
            raise
        log.exception("cell failed; the grid goes on")
        return None


def _valid(raw: dict) -> bool:
    try:
        load_config(raw)
    except USER_ERRORS:
        return False
    return True


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
