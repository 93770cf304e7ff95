import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from src import PROJECT_ROOT
from src.cell import run_id
from src.config import ConfigError, format_amount, parse_amount
from src.plugins import load_config
from tests.conftest import compose_config, run_config

TINY = ["model=tiny", "output_dir=/tmp/unused"]


@pytest.mark.parametrize("text,tokens", [
    (0, 0), (1234, 1234), ("300K", 300_000), ("20M", 20_000_000), ("1.5M", 1_500_000), ("2b", 2_000_000_000),
    ("all", None), (None, None), (" 80M ", 80_000_000),
])
def test_parse_amount(text, tokens):
    assert parse_amount(text) == tokens


@pytest.mark.parametrize("bad", ["lots", "20MB", "-5", "1.5", "0.0001K", True])
def test_parse_amount_rejects(bad):
    with pytest.raises(ConfigError, match="data.amount"):
        parse_amount(bad)


def test_format_amount_round_trips():
    for tokens in [0, 5000, 20_000, 300_000, 1_500_000, 150_000_000, 1234]:
        assert parse_amount(format_amount(tokens)) == tokens


def test_default_config_validates():
    cfg = run_config(TINY)
    assert cfg.model.name == "tiny"
    assert cfg.data.amount == 5000  # data_amount=demo_small
    assert set(cfg.benchmark) == {"nq", "humaneval"}


def test_amount_from_command_line():
    assert run_config([*TINY, "data.amount=20M"]).data.amount == 20_000_000
    assert run_config([*TINY, "data_amount=base"]).data.amount == 0


def test_bad_amount_is_one_clear_line():
    with pytest.raises(ConfigError) as err:
        run_config([*TINY, "data.amount=lots"])
    assert str(err.value) == "data.amount: 'lots' is not a token count (use an integer, 300K, 20M, 1.5B or all)"


def test_misspelled_key_names_it_and_suggests():
    raw = compose_config(TINY)
    raw["train"]["lrr"] = 1e-3
    with pytest.raises(ConfigError, match=r"unknown config key 'train.lrr' \(did you mean 'train.lr'\?\)"):
        load_config(raw)


def test_misspelled_key_on_command_line_is_refused_by_hydra():
    with pytest.raises(ConfigCompositionException, match="train.lrr"):
        compose_config([*TINY, "train.lrr=0.1"])


def test_unknown_group_option():
    with pytest.raises(MissingConfigException, match="model/gpt5"):
        compose_config(["model=gpt5"])


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match="train.epochs: expected an integer, got 'two'"):
        run_config([*TINY, "train.epochs=two"])


def test_unknown_benchmark_and_benchmark_key():
    raw = compose_config(TINY)
    raw["benchmark"]["mmlu_pro"] = {}
    with pytest.raises(ConfigError, match="benchmark 'mmlu_pro' is not known"):
        load_config(raw)
    raw = compose_config(TINY)
    raw["benchmark"]["nq"]["shot"] = 5
    with pytest.raises(ConfigError, match="benchmark.nq.shot' \\(did you mean 'benchmark.nq.shots'"):
        load_config(raw)


def test_bad_choice():
    with pytest.raises(ConfigError, match="train.schedule: 'cosinus' is not one of"):
        run_config([*TINY, "train.schedule=cosinus"])


def test_run_id_ignores_benchmarks_and_paths_but_not_training():
    a = run_config(TINY)
    b = run_config(["model=tiny", "output_dir=/elsewhere", "benchmark.nq.limit=3", "tracker.mode=disabled"])
    c = run_config([*TINY, "train.lr=1e-3"])
    d = run_config([*TINY, "data.amount=6K"])
    assert run_id(a) == run_id(b)
    assert len({run_id(a), run_id(c), run_id(d)}) == 3


def test_cli_fails_before_loading_any_model():
    proc = subprocess.run([sys.executable, "-m", "src.main", "data.amount=lots"], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "error: data.amount: 'lots' is not a token count" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "converting" not in proc.stderr and "Loading weights" not in proc.stderr
