"""Preflight and the cost plan: one pass over a grid's cells before any runs (src/grid.py,
src/preflight.py, src/plan.py)."""

import json
import os
import subprocess
import sys
import time

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from src import PROJECT_ROOT
from src.grid import grid_cells, job_subdir, resolved
from src.plan import cell_cost
from src.plugins import load_config
from src.preflight import check_cells
from tests.conftest import compose_config

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline"}


def _main(tmp_path, *overrides, timeout=120):
    clock = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "src.main", *overrides, f"store_dir={tmp_path / 'cells'}"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**ENV, "IMITATION_GAP_CACHE": str(tmp_path / "cache")})
    return proc, time.perf_counter() - clock


def test_paper_grid_without_hub_or_data_stops_before_any_cell_naming_every_missing_input(tmp_path):
    sweep = tmp_path / "sweep"
    proc, seconds = _main(tmp_path, "-m", "experiment=paper_broad", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    err = proc.stderr
    for missing in ("data/sharegpt/sharegpt.json", "data/hc3", "data/discord/discord.jsonl",
                    "openai-community/gpt2-xl", "huggyllama/llama-7b", "huggyllama/llama-13b"):
        assert missing in err, missing
    assert "conf/data_source/sharegpt.yaml" in err and "model.hub_id" in err  # which key supplies it
    assert err.count("\n- ") == 6 and "nothing ran" in err
    assert not list(sweep.glob("*/status.json")) and not (tmp_path / "cells").exists()  # no cell started
    assert seconds < 60  # seconds, not the ~16 minutes the cells took to fail one by one (a loaded machine)


def test_plan_of_the_paper_grid_loads_no_model_and_counts_by_hand(tmp_path):
    proc, seconds = _main(tmp_path, "-m", "experiment=paper_broad", "plan=true", f"hydra.sweep.dir={tmp_path / 's'}")
    assert proc.returncode == 1  # inputs are missing: the same list follows the plan
    lines = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if "/sharegpt_mix/" in line}
    assert len(lines) == 21
    # llama7b: N = 2 x 32000 x 4096 + 32 x (4 x 4096^2 + 3 x 4096 x 11008 + 2 x 4096) + 4096 = 6,738,415,616
    # FLOPs = 150M x (6N + 12 x 32 x 4096 x 2048) = 6.5478e18; hours = FLOPs / (0.35 x 989e12) / 3600 = 5.25
    # rows: each milestone increment packs alone: 147 + 440 + 1856 + 7325 + 29297 + 34180 = 73245 -> 2289 steps
    big = lines["llama7b/sharegpt_mix/150M"]
    assert big[1:7] == ["150,000,000", "2,289", "6.55e+18", "5.3", "to", "run"]
    assert "trained by llama7b/sharegpt_mix/150M" in " ".join(lines["llama7b/sharegpt_mix/20M"])
    assert lines["llama7b/sharegpt_mix/0"][5:7] == ["base", "model"]
    assert "total: 21 cells, 3 training runs to do" in proc.stdout
    assert "huggyllama/llama-13b" in proc.stdout and "data/hc3" in proc.stdout  # the missing-input list
    assert not list((tmp_path / "s").glob("*/status.json")) and not (tmp_path / "cells").exists()  # nothing ran
    assert seconds < 60


def test_a_plan_whose_output_pipe_closes_runs_no_cell(tmp_path):
    """`... plan=true | head -3`: printing fails; Hydra would warn and launch the cells, the check stops it."""
    sweep = tmp_path / "s"
    command = [sys.executable, "-m", "src.main", "-m", "experiment=paper_broad", "plan=true", f"hydra.sweep.dir={sweep}",
               f"store_dir={tmp_path / 'cells'}"]
    proc = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env={**ENV, "IMITATION_GAP_CACHE": str(tmp_path / "cache")})
    proc.stdout.close()  # as `head` does once it has its lines: the plan's print meets a closed pipe
    assert proc.wait(timeout=120) != 0
    assert not list(sweep.glob("*/status.json")) and not (tmp_path / "cells").exists()


def test_single_run_with_a_missing_data_file_stops_with_the_key(tmp_path):
    proc, _ = _main(tmp_path, "experiment=smoke", "data.source.path=/no/such/file.json",
                    f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 1
    assert "/no/such/file.json does not exist" in proc.stderr and "data.source.path=/your/copy" in proc.stderr


@pytest.mark.slow  # a minute on a loaded 2-core machine: two cells through the real command line
def test_warn_runs_the_cells_whose_inputs_are_there(tmp_path):
    """The base-model cell needs no imitation data: with preflight=warn it runs, the trained one does not."""
    sweep = tmp_path / "sweep"
    proc, _ = _main(tmp_path, "-m", "experiment=smoke", "data.amount=0,1K", "data.source.path=/no/such/file.json",
                    "preflight=warn", "benchmark=[]", f"hydra.sweep.dir={sweep}", timeout=300)
    states = {json.loads(p.read_text())["state"]: json.loads(p.read_text()) for p in sweep.glob("*/status.json")}
    assert set(states) == {"done", "failed"}, proc.stderr[-3000:]
    assert "preflight" in states["failed"]["error"]
    assert proc.returncode == 1  # the sweep lists the cell that did not run


def _master(overrides):
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
        from hydra.core.global_hydra import GlobalHydra

        loader = GlobalHydra.instance().hydra.config_loader
        cells = grid_cells(cfg)
        full = []
        for c in cells:
            one = loader.load_sweep_config(cfg, c.overrides)
            full.append(resolved(one, f"{cfg.hydra.sweep.dir}/{job_subdir(one, c.number)}"))
    return cells, full


def test_grid_cells_compose_as_the_launcher_does():
    """Grouping the compositions by config-group choice gives each cell's full composition."""
    overrides = ["experiment=paper_broad", "train.lr=0.001"]
    cells, full = _master(overrides)
    assert len(cells) == 21 and [c.raw for c in cells] == full
    assert cells[3].overrides == ["model=gpt2_xl", "data.amount=5M", "experiment=paper_broad",
                                   "train.lr=0.001"]
    assert cells[3].raw["model"]["name"] == "gpt2_xl" and cells[3].raw["train"]["lr"] == 0.001
    # the job folder the launcher will make (hydra.sweep.subdir), so keys derived from it check the right path
    assert cells[3].raw["output_dir"].endswith("/3_gpt2_xl_sharegpt_mix_5M")


def test_check_cells_dedups_and_counts_cells(tmp_path):
    data = tmp_path / "sg.json"
    data.write_text(json.dumps([{"id": "a", "conversations": [{"from": "human", "value": "hi"},
                                                               {"from": "gpt", "value": "hello"}]}]))
    good = compose_config(["experiment=smoke", "output_dir=/tmp/x", f"data.source.path={data}"])
    bad = compose_config(["experiment=smoke", "output_dir=/tmp/x", "data.source.path=/nope.json", "data.amount=1K"])
    base = compose_config(["experiment=smoke", "output_dir=/tmp/x", "data.source.path=/nope.json", "data.amount=0"])
    typo = compose_config(["experiment=smoke", "output_dir=/tmp/x"]) | {"preflite": "warn"}
    problems, runnable = check_cells([("good", good), ("bad", bad), ("base", base), ("typo", typo),
                                      ("bad2", bad)])
    assert runnable == {"good", "base"}
    assert [(p.key, len(p.cells)) for p in problems] == [("data.source.path", 2), ("the key it names", 1)]
    assert "unknown config key 'preflite'" in problems[1].what


def test_plan_marks_done_and_milestone_cells(tmp_path):
    raw = compose_config(["experiment=smoke", "output_dir=/tmp/x", f"store_dir={tmp_path}", "data.amount=2K",
                          "train.mode=milestone", "train.milestones=[1K,2K]"])
    cfg = load_config(raw)
    big = cell_cost(cfg)
    assert big.state == "to run" and big.tokens == 2000
    tiny = OmegaConf.to_container(OmegaConf.create(raw))
    tiny["data"]["amount"] = "1K"
    small = cell_cost(load_config(tiny))
    assert small.state == "trained by tiny/demo/2K" and small.gpu_hours == 0
    assert small.flops == big.flops / 2  # the same model, half the tokens


def test_the_plan_total_counts_one_cell_in_the_singular():
    from src.plan import CellCost, format_plan

    one = CellCost("0", "tiny", "demo", "5K", 5000, 10, 6.0e12, 0.5, "config", "to run")
    assert "total: 1 cell, 1 training run to do, " in format_plan([one])
    assert "total: 2 cells, 1 training run to do, " in format_plan([one, CellCost(
        "1", "tiny", "demo", "0", 0, 0, 0.0, 0.0, "config", "base model")])


def test_plan_counts_flops_by_the_models_shape_not_its_name(tmp_path):
    base = ["experiment=smoke", "output_dir=/tmp/x", f"store_dir={tmp_path}", "data.amount=2K"]
    narrow = cell_cost(load_config(compose_config(base)))
    wide = cell_cost(load_config(compose_config([*base, "model.init.hidden_size=128",
                                                 "model.init.intermediate_size=256"])))
    assert narrow.model == wide.model == "tiny"
    assert wide.flops > narrow.flops  # the first cell's FLOPs were reused for every cell named tiny


def test_plan_leaves_an_encoder_decoders_steps_unknown(tmp_path):
    """A T5 trains on one unpacked row per reply: the plan cannot count its steps from tokens alone,
    and says "?" rather than the packed figure (1K and 2K milestones: two 1K increments of 4 rows of 256
    tokens each, 4 rows a step: 2 steps)."""
    from src.plan import format_plan

    base = ["experiment=smoke", "output_dir=/tmp/x", f"store_dir={tmp_path}", "data.amount=2K"]
    packed = cell_cost(load_config(compose_config(base)))
    t5 = cell_cost(load_config(compose_config([*base, "model=tiny_t5"])))
    assert packed.steps == 2 and t5.steps is None and t5.flops > 0
    assert format_plan([t5]).splitlines()[1].split()[2] == "?"  # cell, tokens, steps
