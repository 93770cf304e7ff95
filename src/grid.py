"""The cells of a grid before any of them runs: each cell's composed config, as the launcher will
compose it, so the preflight check and the cost plan see exactly what a real launch runs.

    cells = grid_cells(config)   # in a Hydra callback's on_multirun_start, from the sweep's config

Hydra's basic sweeper expands `hydra.sweeper.params` and the command line's overrides into the cross
product of their values; this does the same expansion (its own static `split_arguments`) and
composes each cell with the config loader the launcher uses.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class GridCell:
    number: int  # hydra.job.num
    overrides: list[str]  # this cell's overrides, as the launcher passes them
    raw: dict[str, Any] | None  # the composed, resolved config without Hydra's own section
    error: str | None = None  # why it could not be composed (what the launch would fail with)


def grid_cells(config: DictConfig) -> list[GridCell]:
    """Each cell composed as the launcher composes it. Cells that share their config-group choices
    (model=..., experiment=...) are composed once and differ by value overrides (data.amount=...),
    applied as Hydra applies them: the paper grid's 21 cells are 3 compositions."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().hydra.config_loader
    parser = OverridesParser.create(config_loader=loader)
    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    params += list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    jobs = [job for batch in BasicSweeper.split_arguments(parser.parse_overrides(params), None) for job in batch]
    sweep_dir = str(config.hydra.sweep.dir)
    composed: dict[tuple[str, ...], DictConfig] = {}
    cells = []
    for number, job in enumerate(jobs):
        try:
            parsed = parser.parse_overrides(list(job))
            groups = tuple(o.input_line for o in parsed if o.package is not None or o.is_delete() or o.is_add()
                           or loader.repository.group_exists(o.key_or_group))
            if groups not in composed:
                composed[groups] = loader.load_sweep_config(config, list(groups))
            cfg = copy.deepcopy(composed[groups])
            ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if o.input_line not in groups], cfg)
            cells.append(GridCell(number, list(job), resolved(cfg, f"{sweep_dir}/{job_subdir(cfg, number)}")))
        except Exception as err:  # Hydra's or OmegaConf's error for this cell, as its launch would fail
            cells.append(GridCell(number, list(job), None, f"{type(err).__name__}: {err}"))
    return cells


def job_subdir(cfg: DictConfig, number: int) -> str:
    """The job's folder under the sweep dir as the launcher names it (hydra.sweep.subdir, which may
    use hydra.job.num and the cell's own values)."""
    with open_dict(cfg):
        cfg.hydra.job.num = number
    return str(cfg.hydra.sweep.subdir)


def resolved(cfg: DictConfig, output_dir: str) -> dict[str, Any]:
    """A composed config as run_cell receives it; the job folder (Hydra's runtime value, known only
    once the job starts) is given."""
    with open_dict(cfg):
        cfg.output_dir = output_dir
        cfg.pop("hydra", None)
    return OmegaConf.to_container(cfg, resolve=True)


# --- the check before launch -----------------------------------------------------------------------

BLOCKED_FILE = "preflight.json"  # in the sweep folder: the cells preflight=warn keeps from running


def check_launch(cells: list[tuple[str, dict[str, Any] | str]], plan: bool, mode: str) -> list[str]:
    """Preflight (and with `plan`, the cost plan, then exit) over a launch's cells; returns the labels
    of the cells that cannot run (preflight=warn), or stops the launch (preflight=stop)."""
    from src.preflight import check_cells, format_problems

    problems, runnable = check_cells(cells)
    if plan:
        from src.plan import cell_cost, format_plan
        from src.plugins import load_config

        costs = []
        for _, raw in cells:
            if isinstance(raw, str):
                continue  # could not be composed: in the preflight list
            try:
                costs.append(cell_cost(load_config(raw)))
            except Exception as err:  # a config error: already in the preflight list
                log.debug("no cost for a cell: %s", err)
        print(format_plan(costs), flush=True)
        print(format_problems(problems), flush=True)
        raise SystemExit(0 if not problems else 1)
    if not problems:
        log.info("preflight: the inputs of all %d cell(s) are there", len(cells))
        return []
    blocked = [label for label, _ in cells if label not in runnable]
    if mode == "warn":
        log.warning("%s\npreflight=warn: running the %d cell(s) whose inputs are there; %d will not run",
                    format_problems(problems), len(runnable), len(blocked))
        return blocked
    raise SystemExit(f"error: {format_problems(problems)}\n(nothing ran; preflight=warn runs the "
                     f"{len(runnable)} cell(s) whose inputs are there, preflight=off skips this check)")


def name_later_stages(cells: list[tuple[str, dict[str, Any] | str]], blocked: list[str]) -> int:
    """Foresight for the launch's preference cells under train.save_checkpoint=false: each names the
    checkpoint of its SFT stage before any cell runs, as the stage itself names it
    (src/training/milestones.py name_later_stage), so that the imitation-only cell of the same settings,
    should it run first, keeps the checkpoint rather than remove it and have the SFT stage train
    again. Returns how many were named."""
    from src.cell import Cell, sft_stage
    from src.plugins import load_config
    from src.training.milestones import name_later_stage

    named = 0
    for label, raw in cells:
        if isinstance(raw, str) or label in blocked:
            continue  # will not run: in the preflight list
        try:
            cfg = load_config(raw)
        except Exception as err:  # a config error: the cell fails with it when it runs
            log.debug("no later stage named for a cell: %s", err)
            continue
        if not cfg.preference.active or cfg.train.save_checkpoint:
            continue
        name_later_stage(Cell.of(sft_stage(cfg)), Cell.of(cfg).run_id)
        named += 1
    return named


def _name_later_stages_of_launch(cells: list[tuple[str, dict[str, Any] | str]], blocked: list[str]) -> None:
    if named := name_later_stages(cells, blocked):
        log.info("kept for %d preference cell(s): the checkpoints of their SFT stages", named)


def launch_cells(config: DictConfig) -> list[tuple[str, dict[str, Any] | str]]:
    """(label, composed config, or the error composing it) of every cell of the launch."""
    return [(job_label(c.overrides), c.raw if c.raw is not None else c.error) for c in grid_cells(config)]


def job_label(overrides: list[str]) -> str:
    return " ".join(overrides)


class CheckBeforeLaunch(Callback):
    """Hydra callback: before a multirun starts any cell, preflight over all of them (plan=true: the
    cost plan, then exit), and the preference cells name the SFT checkpoints they start from
    (name_later_stages; with preflight=off too, where a failure is only a warning). A single run is checked in src/main.py."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from pathlib import Path

        from src.io import write_json_atomic

        mode, plan = config.get("preflight", "stop"), bool(config.get("plan", False))
        marker = Path(str(config.hydra.sweep.dir)) / BLOCKED_FILE
        marker.unlink(missing_ok=True)  # a previous launch's verdict never applies to this one
        if mode == "off" and not plan:  # no check; the foresight only, which must never stop a launch
            try:
                _name_later_stages_of_launch(launch_cells(config), [])
            except Exception as err:
                log.warning("the preference cells could not name their SFT checkpoints before launch: %s", err)
            return
        clock = time.perf_counter()
        try:
            cells = launch_cells(config)
            blocked = check_launch(cells, plan, mode)
            _name_later_stages_of_launch(cells, blocked)
        except Exception as err:
            # Hydra turns a callback's exception into a warning and launches the cells anyway: a check
            # that could not finish (or a plan whose output pipe closed) must stop the launch instead
            raise SystemExit(f"error: the check before launch failed, nothing ran: {type(err).__name__}: {err}") from err
        log.info("preflight over %d cells: %.1f s", len(cells), time.perf_counter() - clock)
        if blocked:
            marker.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(marker, {"blocked": blocked})


def blocked_by_preflight(sweep_dir: str, overrides: list[str]) -> bool:
    import json
    from pathlib import Path

    marker = Path(sweep_dir) / BLOCKED_FILE
    if not marker.exists():
        return False
    return job_label(overrides) in json.loads(marker.read_text(encoding="utf-8")).get("blocked", [])
