"""Milestone mode: one run over the largest budget saves every smaller budget's model, and each is
the model a separate run on that budget gives."""

import dataclasses
import json
import re
import subprocess
import sys

import pytest
import torch

from src import PROJECT_ROOT
from src.cell import Cell
from src.data.prepare import prepare
from src.data.template import chat_format
from src.models.load import load_checkpoint
from src.training.recipe import Trained, train_cell
from tests.conftest import run_config

MILESTONES = "train.milestones=[300,600,900]"


def cell(tmp_path, amount, *overrides) -> Cell:
    return Cell.of(run_config([
        "model=tiny", "data_source=demo", f"data.amount={amount}", f"store_dir={tmp_path}", "output_dir=/tmp/x",
        "train.block_length=64", "train.rows_per_step=2", "train.lr=1e-3", "tracker.mode=disabled", *overrides]))


def trained(cell: Cell, tokenizer, keep_model: bool = False) -> Trained:
    return train_cell(cell, torch.device("cpu"), tokenizer, chat_format(tokenizer, "auto"), keep_model=keep_model)


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_increments_pack_on_their_own(tokenizer):
    fmt = chat_format(tokenizer, "auto")
    data_cfg = cell("/tmp/unused", 900).cfg.data

    def rows(amount, boundaries):
        return prepare(dataclasses.replace(data_cfg, amount=amount), tokenizer, fmt, 64, 2048, None, boundaries)

    largest = rows(900, [300, 600])
    assert [m["rows"] for m in largest.milestones] == [5, 10]  # 300 = 4 x 64 + 44: each increment ends a row
    assert largest.rows[:10] == rows(600, [300, 600, 900]).rows  # boundaries at or past the budget are ignored
    plain = rows(300, [])
    assert largest.rows[:5] == plain.rows  # the first increment is a plain run's data
    separate = rows(600, [300]).summary()
    assert {k: largest.milestones[1][k] for k in ("examples", "loss_tokens", "rows", "total_tokens")} == \
        {k: separate[k] for k in ("examples", "loss_tokens", "rows", "total_tokens")}
    assert sum(len(r.input_ids) for r in largest.rows[:10]) == 600  # exactly the 600-token prefix


def test_milestone_checkpoints_equal_separate_runs(tmp_path, tokenizer):
    milestone = cell(tmp_path, 300, "train.mode=milestone", MILESTONES)
    first_run = trained(milestone, tokenizer)  # the 300 cell runs first: trains 900 once
    assert first_run.record.mode == "milestone" and first_run.weights.module is None
    assert first_run.record.data["total_tokens"] == 300

    for amount in (300, 600, 900):
        work = milestone.at_amount(amount).dir
        record = json.loads((work / "train.json").read_text())
        assert record["mode"] == "milestone" and record["amount"] == amount
        assert record["train"]["tokens_seen"] == amount and record["data"]["total_tokens"] == amount
        assert (work / "checkpoint" / "tokenizer_config.json").exists()

    # a separate run on 600 tokens (same milestones: the same rows and step boundaries) gives the same model
    separate = cell(tmp_path / "separate", 600, MILESTONES)
    alone = trained(separate, tokenizer, keep_model=True)
    at_600 = load_checkpoint(milestone.at_amount(600).checkpoint, "float32", torch.device("cpu"))
    assert alone.record.train["steps"] == 3 + 3  # 5 rows per 300-token increment: steps of 2, 2, 1 each
    assert torch.allclose(flat(alone.weights.module), flat(at_600), atol=1e-6)
    # and a plain run on the first milestone (no boundaries at all) gives the 300 checkpoint
    first = trained(cell(tmp_path / "plain", 300), tokenizer, keep_model=True)
    at_300 = load_checkpoint(milestone.checkpoint, "float32", torch.device("cpu"))
    assert torch.allclose(flat(first.weights.module), flat(at_300), atol=1e-6)
    assert not torch.allclose(flat(at_300), flat(at_600), atol=1e-4)


@pytest.mark.slow  # ~30 s: a 3-cell grid through the command line
def test_a_milestone_grid_trains_once(tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "src.main", "-m", "experiment=smoke", "data.amount=0,1K,2K", "train.mode=milestone",
         "train.milestones=[1K,2K]", "benchmark.nq.limit=2", "benchmark.humaneval.limit=1", "tracker.mode=disabled",
         f"hydra.sweep.dir={sweep}", f"store_dir={tmp_path / 'cells'}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    assert [(r["axes"]["amount"], r["mode"]) for r in results] == [(0, "base_model"), (1000, "milestone"),
                                                                   (2000, "milestone")]
    assert results[1]["trained_by"] == results[2]["run_id"] == results[2]["trained_by"]
    log = "".join(p.read_text() for p in sweep.glob("*/main.log"))
    assert len(re.findall(r"train: \d+ rows", log)) == 1  # one training run for the whole amount axis
    assert "training was done earlier" in log
    assert results[1]["train"]["tokens_seen"] == 1000 and results[2]["train"]["tokens_seen"] == 2000
