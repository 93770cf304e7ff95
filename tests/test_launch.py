"""The Hydra-free worker: 2 processes (gloo) give the model 1 process gives, DeepSpeed ZeRO likewise,
and a run killed with SIGKILL resumes from its last state to the weights of an uninterrupted run."""

import dataclasses
import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from src import PROJECT_ROOT
from src.cells import finished_training, work_dir
from src.config import RunConfig
from src.data.template import chat_format
from src.launch import run_training, train_cell, write_resolved
from src.models import load_checkpoint, load_tokenizer
from tests.conftest import compose_config


def cell(tmp_path, *overrides) -> tuple[RunConfig, dict]:
    raw = compose_config(["model=tiny", "data_source=demo", "data.amount=600", f"store_dir={tmp_path}", "output_dir=/tmp/x",
                          "train.block_length=64", "train.rows_per_step=4", "train.lr=1e-3", "tracker.mode=disabled",
                          *overrides])
    cfg = RunConfig.from_dict(raw)
    return dataclasses.replace(cfg, output_dir=str(work_dir(cfg))), raw


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def train_here_and_in_workers(tmp_path, *overrides):
    one, raw = cell(tmp_path / "one")
    tokenizer = load_tokenizer(one.model, one.cache_dir)
    fmt = chat_format(tokenizer, "auto")
    alone = run_training(one, raw, tokenizer, fmt, torch.device("cpu"))
    many, raw = cell(tmp_path / "many", "train.nproc=2", *overrides)
    workers = run_training(many, raw, tokenizer, fmt, torch.device("cpu"))
    assert workers.model is None and workers.train["world_size"] == 2
    model = load_checkpoint(work_dir(many) / "checkpoint", "float32", torch.device("cpu"))
    return alone, workers, model, work_dir(many)


@pytest.mark.slow  # ~30 s here: torchrun starts 2 processes that import torch and transformers
def test_two_processes_give_the_model_of_one(tmp_path):
    alone, workers, model, _ = train_here_and_in_workers(tmp_path)
    assert workers.train["steps"] == alone.train["steps"] == 3  # 10 rows, 4 a step (2 per process)
    assert workers.train["final_loss"] == pytest.approx(alone.train["final_loss"], abs=1e-5)
    assert [r["grad_norm"] for r in workers.train["history"]] == pytest.approx(
        [r["grad_norm"] for r in alone.train["history"]], rel=1e-4)
    assert torch.allclose(flat(model), flat(alone.model), atol=1e-5)


@pytest.mark.slow  # DeepSpeed's first start compiles a communication op (~2 min); later ones ~30 s
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed not installed (.[deepspeed])")
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_on_cpu_gives_the_model_of_one_process(tmp_path, stage):
    alone, workers, model, work = train_here_and_in_workers(tmp_path, f"train.deepspeed={stage}")
    assert workers.train["final_loss"] == pytest.approx(alone.train["final_loss"], abs=1e-5)
    assert torch.allclose(flat(model), flat(alone.model), atol=1e-5)
    assert (work / "checkpoint" / "chat_template.jinja").exists() or \
        "chat_template" in (work / "checkpoint" / "tokenizer_config.json").read_text()  # consolidated, with template


@pytest.mark.slow  # ~45 s here: two worker processes and a third run (tests/test_train.py resumes in-process)
def test_a_killed_run_resumes_to_the_same_weights(tmp_path):
    overrides = ["data.amount=640", "train.block_length=32", "train.rows_per_step=1", "train.checkpoint_every=3",
                 "train.dropout=0.1", "train.optimizer=adafactor", "train.lr=2e-3"]  # RNG and optimizer state matter
    cfg, raw = cell(tmp_path / "killed", *overrides)
    command = [sys.executable, "-m", "src.launch", str(write_resolved(cfg, raw))]
    states = work_dir(cfg) / "train_state"
    proc = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not any(p.name.startswith("step-") for p in (states.iterdir() if states.exists() else [])):
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first state"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert finished_training(work_dir(cfg)) is None  # killed mid-run: no model yet

    resumed = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr
    record = finished_training(work_dir(cfg))
    assert 0 < record["train"]["resumed_from_step"] < record["train"]["steps"] == 20  # 640 / 32 rows
    assert record["train"]["tokens_seen"] == 640 and not states.exists()

    whole, _ = cell(tmp_path / "whole", *overrides)
    uninterrupted = train_cell(whole, torch.device("cpu"), keep_model=True)
    model = load_checkpoint(work_dir(cfg) / "checkpoint", "float32", torch.device("cpu"))
    assert torch.allclose(flat(model), flat(uninterrupted.model), atol=1e-6)
    assert [r["loss"] for r in record["train"]["history"]] == pytest.approx(
        [r["loss"] for r in uninterrupted.train["history"]], abs=1e-5)
