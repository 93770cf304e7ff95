"""The SFT loop on the tiny random-init model: step arithmetic, bad input, equivalences, MFU."""

import dataclasses

import pytest
import torch

from src.config import ConfigError, TrainConfig
from src.data.packing import PackedRow, collate, pack
from src.data.template import Rendered
from src.models.load import load_model
from src.models.sources import model_config_by_name
from src.training import loop as train_module
from src.training.dist import Dist
from src.training.loop import TrainingDiverged, check_inputs, step_batches, train
from src.training.throughput import flops_per_token
from tests.conftest import CACHE, run_config

TINY = ["model=tiny", "output_dir=/tmp/x"]


def rows_of(n: int, length: int = 16) -> list[PackedRow]:
    return [PackedRow([i] * length, [i] * length, list(range(length)), [0] * length) for i in range(n)]


def tiny_rows(tokenizer, n_rows: int = 8, block: int = 32) -> list[PackedRow]:
    """Rows of real text with assistant-like labels on every other stretch."""
    ids = tokenizer("The quick brown fox jumps over the lazy dog. " * 40)["input_ids"]
    examples = [Rendered(ids[i:i + 20], [t if (i // 20) % 2 else -100 for t in ids[i:i + 20]]) for i in range(0, 400, 20)]
    return pack(examples, block)[:n_rows]


def tiny_model(tokenizer, seed=0, dropout=0.0):
    return load_model(model_config_by_name("tiny"), tokenizer, CACHE, torch.device("cpu"), dropout=dropout, seed=seed)


def test_steps_end_at_milestone_boundaries():
    cfg = TrainConfig(rows_per_step=4)
    sizes = [len(s) for s in step_batches(rows_of(10), cfg, boundaries=[5])]
    assert sizes == [4, 1, 4, 1]  # the step ending at row 5 is short; no step mixes the two budgets
    assert [len(s) for s in step_batches(rows_of(10), cfg)] == [4, 4, 2]
    two_epochs = step_batches(rows_of(4), dataclasses.replace(cfg, epochs=2, rows_per_step=2), boundaries=[1])
    assert [len(s) for s in two_epochs] == [1, 2, 1, 2, 2]  # boundaries cut the first epoch only


def test_bad_input_is_one_line_before_training(tokenizer):
    model = tiny_model(tokenizer)
    cfg = TrainConfig(rows_per_step=4)
    with pytest.raises(ConfigError, match="no pad token"):
        check_inputs(model, rows_of(2), cfg, None, Dist())
    with pytest.raises(ConfigError, match="rows of 4096 tokens exceed the model's context of 2048"):
        check_inputs(model, rows_of(1, 4096), cfg, 0, Dist())
    with pytest.raises(ConfigError, match=r"rows_per_step \(4\) must be a multiple of train.grad_accum \(1\) x processes \(3\)"):
        check_inputs(model, rows_of(2), cfg, 0, Dist(rank=0, world=3))


def test_recipe_errors_name_the_key():
    with pytest.raises(ConfigError, match="unknown config key 'train.warmup_ration'"):
        run_config([*TINY, "train=paper", "+train.warmup_ration=0.1"])
    with pytest.raises(ConfigError, match=r"train.rows_per_step \(32\) must be a multiple .* train.nproc \(3\)"):
        run_config([*TINY, "train=paper", "train.nproc=3"])
    with pytest.raises(ConfigError, match="train.schedule=cosine depends on the run's length"):
        run_config([*TINY, "train=alpaca", "train.mode=milestone", "train.milestones=[1K,2K]"])
    with pytest.raises(ConfigError, match="train.epochs=3: train.mode=milestone needs one epoch"):
        run_config([*TINY, "train=alpaca", "train.schedule=constant", "train.warmup_ratio=0", "train.mode=milestone",
                    "train.milestones=[1K]"])
    with pytest.raises(ConfigError, match="train.warmup_ratio depends on the run's length"):
        run_config([*TINY, "train.warmup_ratio=0.03", "train.mode=milestone", "train.milestones=[1K]"])
    with pytest.raises(ConfigError, match="train.deepspeed: 'zero4' is not one of"):
        run_config([*TINY, "train.deepspeed=zero4"])


def test_recipes_compose():
    paper = run_config([*TINY, "train=paper"]).train
    assert (paper.optimizer, paper.lr, paper.rows_per_step, paper.warmup_steps, paper.schedule) == \
        ("adafactor", 2e-3, 32, 1000, "constant")
    assert (paper.momentum, paper.decay_rate, paper.weight_decay, paper.dropout, paper.max_grad_norm) == \
        (0.9, 0.95, 1e-3, 0.05, 1.0)
    alpaca = run_config([*TINY, "train=alpaca"]).train
    assert (alpaca.optimizer, alpaca.lr, alpaca.warmup_ratio, alpaca.schedule, alpaca.epochs) == \
        ("adamw", 2e-5, 0.03, "cosine", 3)
    assert run_config([*TINY, "train.milestones=[20K,5K,5K]"]).train.milestones == [5000, 20000]


def test_gradient_accumulation_does_not_change_the_model(tokenizer):
    rows = tiny_rows(tokenizer)
    weights = []
    for accum in (1, 2, 4):
        model = tiny_model(tokenizer)
        stats = train(model, rows, TrainConfig(lr=1e-3, rows_per_step=4, grad_accum=accum, warmup_steps=0), 0,
                      torch.device("cpu"))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        assert stats.steps == 2 and stats.tokens_seen == sum(len(r.input_ids) for r in rows)
    # equal up to float reassociation (the head runs over each micro-batch's labelled positions), which
    # AdamW's normalisation amplifies on near-zero gradients to a few 1e-6; a wrong objective moves
    # weights by ~lr = 1e-3
    assert torch.allclose(weights[0], weights[1], atol=1e-5) and torch.allclose(weights[0], weights[2], atol=1e-5)
    assert not torch.allclose(weights[0], torch.cat([p.flatten() for p in tiny_model(tokenizer).parameters()]))


def test_paper_recipe_trains_with_bf16_and_gradient_checkpointing(tokenizer):
    rows = tiny_rows(tokenizer)
    cfg = dataclasses.replace(run_config([*TINY, "train=paper"]).train, rows_per_step=2, warmup_steps=2,
                              block_length=32, gradient_checkpointing=True)
    model = tiny_model(tokenizer, dropout=cfg.dropout)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    stats = train(model, rows, cfg, 0, torch.device("cpu"))
    assert stats.steps == 4 and stats.precision == "bf16"
    assert [round(r["lr"], 6) for r in stats.history] == [1e-3, 2e-3, 2e-3, 2e-3]  # 2 warm-up steps, constant
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in stats.history)
    # lr is a step relative to each weight's RMS, clipped per tensor: no tensor moved by more than the sum
    # of the 4 rates (7e-3 of its RMS, plus weight decay), and every one moved
    for name, p in model.named_parameters():
        change = (p.detach() - before[name]).pow(2).mean().sqrt() / before[name].pow(2).mean().sqrt().clamp(min=1e-3)
        assert 0 < change <= 7e-3 * 1.001, name


def test_mfu_and_memory_are_reported(tokenizer):
    rows = tiny_rows(tokenizer, n_rows=4)
    model = tiny_model(tokenizer)
    n = sum(p.numel() for p in model.parameters())
    assert flops_per_token(model, 32) == 6 * n + 12 * 2 * 64 * 32  # 2 layers, d_model 64, rows of 32
    stats = train(model, rows, TrainConfig(rows_per_step=2, block_length=32), 0, torch.device("cpu"))
    assert stats.mfu is None and stats.peak_flops is None  # CPU: peak unknown unless given
    assert stats.peak_memory_bytes > 50e6 and "ru_maxrss" in stats.peak_memory_source
    stats = train(tiny_model(tokenizer), rows, TrainConfig(rows_per_step=2, block_length=32, peak_flops=1e12), 0,
                  torch.device("cpu"))
    assert stats.mfu == pytest.approx(stats.tokens_per_s * stats.flops_per_token / 1e12)
    assert stats.tokens_seen == 4 * 32 and {"loss", "lr", "grad_norm", "tokens_per_s", "tokens_seen"} <= set(stats.history[0])


def test_an_interrupted_run_resumes_from_its_last_state(tokenizer, tmp_path):
    """In-process twin of tests/training/test_worker.py's SIGKILL test: stop after step 5, resume from step 4."""
    rows = tiny_rows(tokenizer, n_rows=8, block=32)
    cfg = TrainConfig(optimizer="adafactor", lr=2e-3, rows_per_step=1, checkpoint_every=2, dropout=0.1, block_length=32)

    def stop_at_5(record):
        if record["step"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_model(tokenizer, dropout=0.1), rows, cfg, 0, torch.device("cpu"), on_step=stop_at_5,
              state_dir=tmp_path / "state")
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["step-4"]  # older states removed
    resumed_model = tiny_model(tokenizer, dropout=0.1)
    resumed = train(resumed_model, rows, cfg, 0, torch.device("cpu"), state_dir=tmp_path / "state")
    whole_model = tiny_model(tokenizer, dropout=0.1)
    whole = train(whole_model, rows, cfg, 0, torch.device("cpu"))
    assert resumed.resumed_from_step == 4 and resumed.steps == 8 and resumed.tokens_seen == whole.tokens_seen
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in whole.history], abs=1e-6)
    assert torch.equal(torch.cat([p.flatten() for p in resumed_model.parameters()]),
                       torch.cat([p.flatten() for p in whole_model.parameters()]))
    assert not (tmp_path / "state").exists()  # a finished run removes its resumable states


def test_random_init_models_keep_the_end_of_turn_token_trainable(tokenizer):
    """The pad is SmolLM2's <|im_end|>, a token of every turn: as a padding_idx its embedding would be zero
    and frozen, and a 24-layer model of SmolLM2's width overflowed to NaN gradients on a packed row that
    starts with it (the row attends only to itself there). Found on a GPU run of that shape."""
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    shape = {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3}
    cfg = model_config_by_name("tiny")
    deep = dataclasses.replace(cfg, init={**cfg.init, **shape, "num_hidden_layers": 24})
    model = load_model(deep, tokenizer, CACHE, torch.device("cpu"))
    embeddings = model.get_input_embeddings()
    assert embeddings.padding_idx is None and embeddings.weight[tokenizer.eos_token_id].abs().sum() > 0
    ids = [tokenizer.eos_token_id] + tokenizer("The quick brown fox jumps over the lazy dog.")["input_ids"] * 3
    row = PackedRow(ids, ids, list(range(len(ids))), [0] * len(ids))
    train_module.token_loss_sum(model, collate([row], tokenizer.pad_token_id)).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert embeddings.weight.grad[tokenizer.eos_token_id].abs().sum() > 0  # it learns like any token


def test_a_diverging_step_stops_before_it_reaches_the_weights(tokenizer, monkeypatch):
    rows = tiny_rows(tokenizer)
    real, calls = train_module.token_loss_sum, []

    def nan_on_second_step(model, batch, *impls):
        calls.append(1)
        loss = real(model, batch, *impls)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(train_module, "token_loss_sum", nan_on_second_step)
    model = tiny_model(tokenizer)
    with pytest.raises(TrainingDiverged, match=r"step 2: loss nan, gradient norm nan .*train.lr=0.001") as err:
        train(model, rows, TrainConfig(lr=1e-3, rows_per_step=2, warmup_steps=0), 0, torch.device("cpu"))
    assert err.value.step == 2 and len(calls) == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())  # step 1's update only
