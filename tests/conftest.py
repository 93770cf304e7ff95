"""Shared fixtures. Tests never reach a hub and never log to W&B online."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from src import PROJECT_ROOT  # noqa: E402
from src.config import RunConfig  # noqa: E402
from src.plugins import load_config  # noqa: E402
from src.store import default_cache_dir  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
CACHE = default_cache_dir()


def compose_config(overrides: list[str]) -> dict:
    """The composed config as plain data, as src.main sees it (minus Hydra's own node)."""
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def run_config(overrides: list[str]) -> RunConfig:
    """The composed config validated as src.main validates it (the schema, then every plug-in)."""
    return load_config(compose_config(overrides))


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded model's tokenizer (ChatML template, pad = <|im_end|>): what the tiny model uses."""
    from src.models.load import load_tokenizer
    from src.models.sources import model_config_by_name

    return load_tokenizer(model_config_by_name("tiny"), CACHE)
