"""run_id is a cell's identity in the store: a key added to the config for how a computation is carried
out (not what it computes) must leave existing ids alone, or upgrading retrains every finished grid."""

import pytest

from src.cell import run_id
from tests.conftest import run_config

# computed by the project before train.nnodes / attention / loss / compile existed
GOLDEN = {
    ("experiment=smoke", "data.amount=500"): "bdeecd933c23",
    ("model=tiny", "data_source=demo", "data.amount=5K"): "7f0637686310",
}


@pytest.mark.parametrize("overrides", list(GOLDEN))
def test_run_ids_of_cells_made_before_the_implementation_keys_are_unchanged(overrides):
    assert run_id(run_config([*overrides, "output_dir=o"])) == GOLDEN[overrides]


@pytest.mark.parametrize("override", ["train.nnodes=2", "train.attention=flex", "train.loss=chunked",
                                      "train.compile=true", "train.rows_per_step=2"])
def test_implementation_keys_keep_the_id_and_recipe_keys_change_it(override):
    base = ["model=tiny", "data_source=demo", "data.amount=5K", "output_dir=o"]
    same = run_id(run_config([*base, override])) == run_id(run_config(base))
    assert same == (override != "train.rows_per_step=2")
