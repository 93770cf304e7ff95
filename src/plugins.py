"""Every plug-in, imported once so each registers itself, and the config check that goes through them.

    cfg = load_config(raw)   # the schema (src/config.py), then each plug-in's own section

Plug-ins: the benchmarks (src/benchmarks), the model sources (src/models/sources.py), the evaluation
backends (src/models/hf.py, src/models/vllm.py), the data formats (src/data/formats) and the toy
world's model source and benchmarks (src/toyworld/plugin.py). Nothing below this module names them.
"""

from __future__ import annotations

from typing import Any

import src.models.hf  # noqa: F401  registers eval_backend=hf
import src.models.vllm  # noqa: F401  registers eval_backend=vllm (vllm itself is imported only when used)
import src.toyworld.plugin  # noqa: F401  registers model.toy and the toy_* benchmarks
from src.benchmarks import validate_benchmarks
from src.config import RunConfig
from src.models.backend import BACKENDS
from src.models.sources import validate_source
from src.training.preference_pairs import validate as validate_preference


def load_config(raw: dict[str, Any]) -> RunConfig:
    """A composed config as a validated RunConfig; a bad key or value is one ConfigError naming it."""
    cfg = RunConfig.from_dict(raw)
    validate_plugins(cfg)
    return cfg


def validate_plugins(cfg: RunConfig) -> None:
    validate_source(cfg.model)
    BACKENDS.get(cfg.eval_backend, key="eval_backend")
    validate_benchmarks(cfg.benchmark)
    validate_preference(cfg)
