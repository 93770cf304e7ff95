"""The Hydra-free worker: 2 processes (gloo) give the model 1 process gives, DeepSpeed ZeRO likewise,
and a run killed with SIGKILL resumes from its last state to the weights of an uninterrupted run."""

import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from src import PROJECT_ROOT
from src.cell import Cell
from src.data.template import chat_format
from src.models.load import load_checkpoint, load_model, load_tokenizer
from src.plugins import load_config
from src.training.recipe import obtain, train_cell
from src.training.spawn import write_resolved
from tests.conftest import compose_config


def cell(tmp_path, *overrides) -> tuple[Cell, dict]:
    raw = compose_config(["model=tiny", "data_source=demo", "data.amount=600", f"store_dir={tmp_path}", "output_dir=/tmp/x",
                          "train.block_length=64", "train.rows_per_step=4", "train.lr=1e-3", "tracker.mode=disabled",
                          *overrides])
    return Cell.of(load_config(raw)), raw


def alone_cfg(tmp_path):
    return Cell.of(load_config(compose_config(["model=tiny", f"store_dir={tmp_path}", "output_dir=/tmp/x"]))).cfg


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def train_here_and_in_workers(tmp_path, *overrides, common=()):
    """The same cell trained in this process and by 2 workers; `overrides` apply to the workers only."""
    one, raw = cell(tmp_path / "one", *common)
    tokenizer = load_tokenizer(one.cfg.model, one.cfg.cache_dir)
    fmt = chat_format(tokenizer, one.cfg.model.chat_template)  # as the workers render it
    alone = obtain(one, raw, tokenizer, fmt, torch.device("cpu"))
    many, raw = cell(tmp_path / "many", "train.nproc=2", *common, *overrides)
    workers = obtain(many, raw, tokenizer, fmt, torch.device("cpu"))
    assert workers.weights.module is None and workers.record.train["world_size"] == 2
    model = load_checkpoint(many.checkpoint, "float32", torch.device("cpu"))
    return alone, workers, model, many.dir


EPS32 = torch.finfo(torch.float32).eps
SGD = ("train.optimizer=sgd", "train.lr=0.05")  # weights linear in the summed gradients (see below)
TOKENS_PER_STEP = 4 * 64  # cell(): rows_per_step x block_length


def assert_same_model_up_to_rounding(model, reference, cell_cfg, tokens: int = TOKENS_PER_STEP) -> None:
    """Per tensor: the two models differ by no more than float32 rounding of the reductions.

    Under SGD, w = w0 - lr * sum over steps of c * g, with c = max_norm / |g| the clipping factor (these
    steps clip). Two reductions are reordered by 2 processes or DeepSpeed's flat buckets:
    - each entry of g sums the step's `tokens` loss terms; a reordered float32 sum of n terms moves by
      about eps32 * sqrt(n) of their scale (one rounding per addition, a random walk), so an update moves by
      about eps32 * sqrt(tokens) * max|w - w0| of its tensor;
    - |g| sums the squares of all N parameters' gradients (DeepSpeed per partition, then across them),
      relative rounding eps32 * sqrt(N), which scales every update of the step alike (measured here on
      ZeRO-2: the first step's norms differ by 1.5e-5 relative with N = 6.4M, against 3e-4 for the bound);
    - storing w rounds once per step: eps32 * |w|.
    The bound is 4x the first and last (3 steps) plus the second; a wrong learning rate, a lost micro-batch
    or an unreduced gradient moves a tensor by O(max|w - w0|), thousands of times more. AdamW would not do
    here: it divides each gradient entry by its own magnitude, so an entry that is rounding noise (a
    near-cancelling sum) moves by up to lr whatever the reduction's rounding."""
    init = load_model(cell_cfg.model, load_tokenizer(cell_cfg.model, cell_cfg.cache_dir), cell_cfg.cache_dir,
                      torch.device("cpu"), seed=cell_cfg.seed)
    norm_rounding = EPS32 * math.sqrt(sum(p.numel() for p in reference.parameters()))
    for (name, p), q, p0 in zip(model.named_parameters(), reference.parameters(), init.parameters(), strict=True):
        change = (q - p0).abs().max()
        assert change > 0, name  # every tensor trained: a no-op would pass trivially
        tolerance = 4 * EPS32 * (math.sqrt(tokens) * change + q.abs().max()) + norm_rounding * change
        assert (p - q).abs().max() <= tolerance, (name, (p - q).abs().max().item(), tolerance.item())


@pytest.mark.slow  # ~30 s here: torchrun starts 2 processes that import torch and transformers
def test_two_processes_give_the_model_of_one(tmp_path):
    alone, workers, model, _ = train_here_and_in_workers(tmp_path)
    assert workers.record.train["steps"] == alone.record.train["steps"] == 3  # 10 rows, 4 a step (2 per process)
    assert workers.record.train["final_loss"] == pytest.approx(alone.record.train["final_loss"], abs=1e-5)
    assert [r["grad_norm"] for r in workers.record.train["history"]] == pytest.approx(
        [r["grad_norm"] for r in alone.record.train["history"]], rel=1e-4)
    assert torch.allclose(flat(model), flat(alone.weights.module), atol=1e-5)


# In the default suite (DeepSpeed is a core dependency): its first start on a machine compiles a
# communication op (~90 s on 2 cores), later starts ~15 s each.
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_on_cpu_gives_the_model_of_one_process(tmp_path, stage):
    alone, workers, model, work = train_here_and_in_workers(tmp_path, f"train.deepspeed={stage}", common=SGD)
    assert workers.record.train["steps"] == alone.record.train["steps"] == 3
    # the loss: a sum over the step's tokens, like a gradient entry (see assert_same_model_up_to_rounding)
    assert workers.record.train["final_loss"] == pytest.approx(
        alone.record.train["final_loss"], rel=4 * EPS32 * math.sqrt(TOKENS_PER_STEP))
    history, alone_history = workers.record.train["history"], alone.record.train["history"]
    assert [r["lr"] for r in history] == [r["lr"] for r in alone_history] == [0.025, 0.05, 0.05]  # 2 warm-up steps
    norm_rounding = EPS32 * math.sqrt(sum(p.numel() for p in model.parameters()))  # see below
    assert [r["grad_norm"] for r in history] == pytest.approx([r["grad_norm"] for r in alone_history], rel=norm_rounding)
    assert_same_model_up_to_rounding(model, alone.weights.module, alone_cfg(tmp_path))
    assert (work / "checkpoint" / "chat_template.jinja").exists() or \
        "chat_template" in (work / "checkpoint" / "tokenizer_config.json").read_text()  # consolidated, with template


@pytest.mark.parametrize("workers", [
    pytest.param("train.nproc=2", marks=pytest.mark.slow),
    "train.deepspeed=zero3",  # the GPU path users take: sharded parameters through both stacks
])
def test_an_encoder_decoder_trains_in_workers_to_the_model_of_one_process(tmp_path, workers):
    """tiny_t5's unpacked per-reply rows, bucketed into steps, split over 2 processes (ZeRO-3: its
    parameters sharded too) give the one-process model: the same steps, losses and weights up to
    float32 rounding (measured 2026-12-03: at most 1.2e-7 apart, plain and ZeRO-2/3 alike)."""
    alone, many, model, _ = train_here_and_in_workers(tmp_path, workers, common=(*SGD, "model=tiny_t5"))
    assert many.record.data["examples"] == alone.record.data["examples"] == many.record.data["rows"]  # a row a reply
    assert many.record.train["steps"] == alone.record.train["steps"] == 3
    assert many.record.train["final_loss"] == pytest.approx(alone.record.train["final_loss"], rel=1e-5)
    assert torch.allclose(flat(model), flat(alone.weights.module), atol=1e-5)
    base = alone.weights.base
    init = load_model(base, load_tokenizer(base, alone.weights.cache_dir), alone.weights.cache_dir, torch.device("cpu"))
    assert (flat(model) - flat(init)).abs().max() > 1e-3  # and it trained


@pytest.mark.slow  # ~45 s here: two worker processes and a third run (tests/training/test_loop.py resumes in-process)
def test_a_killed_run_resumes_to_the_same_weights(tmp_path):
    overrides = ["data.amount=640", "train.block_length=32", "train.rows_per_step=1", "train.checkpoint_every=3",
                 "train.dropout=0.1", "train.optimizer=adafactor", "train.lr=2e-3"]  # RNG and optimizer state matter
    killed, raw = cell(tmp_path / "killed", *overrides)
    command = [sys.executable, "-m", "src.training.worker", str(write_resolved(killed, raw))]
    states = killed.train_state
    proc = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not any(p.name.startswith("step-") for p in (states.iterdir() if states.exists() else [])):
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first state"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert killed.training() is None  # killed mid-run: no model yet

    resumed = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr
    record = killed.training()
    assert 0 < record.train["resumed_from_step"] < record.train["steps"] == 20  # 640 / 32 rows
    assert record.train["tokens_seen"] == 640 and not states.exists()

    whole, _ = cell(tmp_path / "whole", *overrides)
    tokenizer = load_tokenizer(whole.cfg.model, whole.cfg.cache_dir)
    uninterrupted = train_cell(whole, torch.device("cpu"), tokenizer, chat_format(tokenizer, "auto"), keep_model=True)
    model = load_checkpoint(killed.checkpoint, "float32", torch.device("cpu"))
    assert torch.allclose(flat(model), flat(uninterrupted.weights.module), atol=1e-6)
    assert [r["loss"] for r in record.train["history"]] == pytest.approx(
        [r["loss"] for r in uninterrupted.record.train["history"]], abs=1e-5)


@pytest.mark.slow  # ~40 s here: two torchrun agents (two "nodes") of one process each, then the reference
def test_two_nodes_on_this_machine_give_the_model_of_one_process(tmp_path):
    """train.nnodes=2 outside Slurm: two torchrun agents meet at a c10d rendezvous on this host, as
    two nodes of a cluster would; the world of 2 (gloo) trains the one-process model."""
    one, raw = cell(tmp_path / "one")
    tokenizer = load_tokenizer(one.cfg.model, one.cfg.cache_dir)
    fmt = chat_format(tokenizer, one.cfg.model.chat_template)  # as the workers render it
    alone = obtain(one, raw, tokenizer, fmt, torch.device("cpu"))
    nodes, raw = cell(tmp_path / "nodes", "train.nnodes=2")
    assert nodes.run_id == one.run_id  # the nodes a cell runs on are not part of what it is
    workers = obtain(nodes, raw, tokenizer, fmt, torch.device("cpu"))
    assert workers.record.train["world_size"] == 2
    model = load_checkpoint(nodes.checkpoint, "float32", torch.device("cpu"))
    assert workers.record.train["steps"] == alone.record.train["steps"] == 3
    assert workers.record.train["final_loss"] == pytest.approx(alone.record.train["final_loss"], abs=1e-5)
    assert torch.allclose(flat(model), flat(alone.weights.module), atol=1e-5)
