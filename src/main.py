"""Entry point: `python -m src.main [overrides]`, or `-m` for a grid (Hydra multirun).

Thin by design: Hydra composes the config, RunConfig validates it (a bad key or value stops here,
before any model loads) and train_and_eval does the work.
"""

from __future__ import annotations

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from src.config import ConfigError, RunConfig
from src.data.budget import BudgetError
from src.data.sources import DataError
from src.pipeline import train_and_eval

log = logging.getLogger(__name__)


def to_run_config(cfg: DictConfig) -> tuple[RunConfig, dict]:
    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("hydra", None)
    return RunConfig.from_dict(raw), raw


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    try:
        run_cfg, raw = to_run_config(cfg)
        raw["hydra_overrides"] = list(HydraConfig.get().overrides.task)
        return train_and_eval(run_cfg, raw)
    except (ConfigError, DataError, BudgetError) as err:
        log.error("%s", err)
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
