"""conf/model/<name>.yaml read outside a Hydra composition (tokenizer_of, local teachers, --student)."""

import pytest

import src.plugins  # noqa: F401  registers the toy world's model source, as every caller does
from src.config import ConfigError
from src.models.sources import model_config_by_name


def test_a_toy_models_world_seed_resolves_outside_hydra():
    # toy_l's world follows ${seed}: with no Hydra root it used to fail to interpolate
    assert model_config_by_name("toy_l").toy["world"]["seed"] == 0
    assert model_config_by_name("toy_l", seed=2).toy["world"]["seed"] == 2


def test_a_hub_model_reads_as_before():
    cfg = model_config_by_name("smollm2_135m")
    assert cfg.name == "smollm2_135m"


def test_an_unknown_name_names_the_file():
    with pytest.raises(ConfigError, match="no_such_model.yaml"):
        model_config_by_name("no_such_model")
