"""Every named experiment composes into a valid config (grids are checked cell by cell)."""

import itertools

import pytest
from omegaconf import OmegaConf

from src import PROJECT_ROOT
from src.plugins import load_config
from tests.conftest import compose_config

EXPERIMENTS = sorted(p.stem for p in (PROJECT_ROOT / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_cell_of_every_experiment_validates(name):
    params = OmegaConf.load(PROJECT_ROOT / "conf" / "experiment" / f"{name}.yaml").get("hydra", {}).get(
        "sweeper", {}).get("params", {})
    axes = [[f"{key}={value}" for value in str(values).split(",")] for key, values in params.items()]
    cells = list(itertools.product(*axes)) or [()]
    for cell in cells:
        cfg = load_config(compose_config([f"experiment={name}", "output_dir=/tmp/x", *cell]))
        assert cfg.experiment_name == name


def test_named_grids_match_the_study():
    broad = compose_config(["experiment=paper_broad", "output_dir=/tmp/x"])
    assert broad["data"]["source"]["name"] == "sharegpt_mix"
    assert [part["source"] for part in broad["data"]["source"]["mix"]] == ["sharegpt", "hc3", "discord"]
    local = compose_config(["experiment=paper_local", "output_dir=/tmp/x"])
    assert local["data"]["source"]["format"] == "nq_synthetic" and list(local["benchmark"]) == ["nq"]
