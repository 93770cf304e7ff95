"""The encoder-decoder layout (T5): one row per assistant reply, the decoder's labels and loss, the
length-bucketed steps, and a tiny-T5 cell end to end."""

from __future__ import annotations

import json

import pytest
import torch

from src.config import ConfigError, DataConfig, PretrainMixConfig, TrainConfig
from src.data.conversation import Message
from src.data.packing import PackedRow, StreamPacker, TurnRows, collate_seq2seq
from src.data.prepare import prepare
from src.data.sources import source_config_by_name
from src.data.template import IGNORE, Rendered, chat_format, render
from src.models.load import is_encoder_decoder, load_checkpoint, load_model, model_is_encoder_decoder
from src.models.sources import model_config_by_name
from src.training.loop import check_encoder_decoder, loss_tokens, seq2seq_loss_sum, step_batches, train
from tests.conftest import CACHE

TWO_TURNS = [Message("user", "Hi there"), Message("assistant", "Hello!"),
             Message("user", "Name a fruit"), Message("assistant", "An apple.")]


@pytest.fixture(scope="module")
def koala(tokenizer):
    return chat_format(tokenizer, "koala")


def _rows(example: Rendered, block: int = 2048, boundaries=()) -> tuple[list[PackedRow], TurnRows]:
    rows: list[PackedRow] = []
    packer = TurnRows(block, lambda row: rows.append(row.packed()), list(boundaries))
    packer.add(example)
    packer.finish()
    return rows, packer


def _split(row: PackedRow) -> int:
    return row.segment_ids.index(1)


def test_one_row_per_reply_with_the_history_in_the_encoder(tokenizer, koala):
    rendered = render(TWO_TURNS, tokenizer, koala)
    rows, packer = _rows(rendered)
    assert len(rows) == 2
    text = [(tokenizer.decode(r.input_ids[:_split(r)]), tokenizer.decode(r.input_ids[_split(r):])) for r in rows]
    assert text == [
        ("<|im_start|>BEGINNING OF CONVERSATION: USER: Hi there GPT:", "Hello!<|im_end|>"),
        ("<|im_start|>BEGINNING OF CONVERSATION: USER: Hi there GPT:Hello!<|im_end|>USER: Name a fruit GPT:",
         "An apple.<|im_end|>"),
    ]
    for row in rows:
        s = _split(row)
        # only the reply and its end token carry loss: each labelled with itself, the encoder with none
        assert row.labels == [IGNORE] * s + row.input_ids[s:]
        assert row.position_ids == list(range(s)) + list(range(len(row.input_ids) - s))
    # the decoder tokens are exactly the conversation's labelled tokens, in order
    labelled = [t for t, label in zip(rendered.input_ids, rendered.labels, strict=True) if label != IGNORE]
    assert [t for r in rows for t in r.input_ids[_split(r):]] == labelled
    second_encoder = _split(rows[1])
    assert packer.counts == {"encoder_tokens": _split(rows[0]) + second_encoder, "decoder_tokens": len(labelled),
                             "dropped_loss_tokens": 0, "truncated_tokens": 0}
    assert second_encoder + len(rows[1].input_ids) - second_encoder == len(rendered.input_ids)  # the whole conversation
    assert loss_tokens(rows) == len(labelled) == packer.loss_placed  # every decoder label is predicted


def test_collate_splits_encoder_and_decoder(tokenizer, koala):
    rows, _ = _rows(render(TWO_TURNS, tokenizer, koala))
    batch = collate_seq2seq(rows, tokenizer.pad_token_id)
    s0, s1 = _split(rows[0]), _split(rows[1])
    assert batch["input_ids"].shape == (2, s1) and batch["labels"].shape == (2, max(len(r.input_ids) - _split(r) for r in rows))
    assert batch["attention_mask"][0].tolist() == [1] * s0 + [0] * (s1 - s0)
    assert batch["input_ids"][0, s0:].tolist() == [tokenizer.pad_token_id] * (s1 - s0)
    dec0 = rows[0].input_ids[s0:]
    assert batch["labels"][0].tolist() == dec0 + [IGNORE] * (batch["labels"].shape[1] - len(dec0))


def test_a_boundary_cut_inside_a_reply_counts_what_has_no_history(tokenizer, koala):
    rendered = render(TWO_TURNS, tokenizer, koala)
    first_reply = rendered.labels.index(next(label for label in rendered.labels if label != IGNORE))
    cut = first_reply + 2  # two tokens of the first reply before the boundary
    rows, packer = _rows(rendered, boundaries=[cut])
    first_len = sum(label != IGNORE for label in rendered.labels[:rendered.labels.index(IGNORE, first_reply)])
    # before the boundary: a row with the reply's first two tokens; after it the reply's rest starts a piece
    # (no history to encode: counted, no row), then the second turn, whose history is the piece after the cut
    second_len = sum(label != IGNORE for label in rendered.labels) - first_len
    assert second_len == 4  # "An", " apple", ".", "<|im_end|>"
    assert [len(r.input_ids) - _split(r) for r in rows] == [2, second_len]
    assert packer.ends == [1]
    assert packer.counts["dropped_loss_tokens"] == first_len - 2
    assert rows[0].input_ids[:_split(rows[0])] == rendered.input_ids[:first_reply]


def test_budget_and_layout_in_prepare(tokenizer, koala, tmp_path):
    source = source_config_by_name("demo")
    data = prepare(DataConfig(source=source, amount=400), tokenizer, koala, 128, 2048, str(tmp_path),
                   encoder_decoder=True)
    packed = prepare(DataConfig(source=source, amount=400), tokenizer, koala, 128, 2048, str(tmp_path))
    assert data.total_tokens == packed.total_tokens == 400  # the same formatted tokens count for both
    assert data.loss_tokens == data.turns["decoder_tokens"] + 0 and data.turns["encoder_tokens"] > 0
    # a packed row's first token is never predicted; a reply row's every decoder token is
    assert data.loss_tokens + data.turns["dropped_loss_tokens"] >= packed.loss_tokens
    assert all(1 in r.segment_ids for r in data.rows) and len(data.rows) != len(packed.rows)
    again = prepare(DataConfig(source=source, amount=400), tokenizer, koala, 128, 2048, str(tmp_path),
                    encoder_decoder=True)
    assert again.cache == "hit" and list(again.rows) == list(data.rows) and again.turns == data.turns


def test_a_pretrain_mix_is_refused_only_when_on(tokenizer, koala, tmp_path):
    source = source_config_by_name("demo")
    on = DataConfig(source=source, amount=400, pretrain_mix=PretrainMixConfig(source="demo_text", share=0.25))
    with pytest.raises(ConfigError, match="data.pretrain_mix.*share=0"):
        prepare(on, tokenizer, koala, 128, 2048, str(tmp_path), encoder_decoder=True)
    named_but_off = DataConfig(source=source, amount=400, pretrain_mix=PretrainMixConfig(source="demo_text", share=0.0))
    assert prepare(named_but_off, tokenizer, koala, 128, 2048, None, encoder_decoder=True).total_tokens == 400


def test_bucketed_steps_sort_within_each_stretch_and_keep_milestones():
    rows = [PackedRow([0] * n, [IGNORE] * n, list(range(n)), [0] * n) for n in (9, 1, 5, 3, 8, 2, 7, 4)]
    cfg = TrainConfig(rows_per_step=2, epochs=1, seed=3)
    steps = step_batches(rows, cfg, boundaries=[4], bucket=True)
    assert sorted(map(sorted, steps[:2])) == [[0, 2], [1, 3]]  # rows 0-3 by length: 1, 3 | 2, 0
    assert sorted(map(sorted, steps[2:])) == [[4, 6], [5, 7]]  # rows 4-7: 5, 7 | 6, 4
    assert [sorted(s) for s in steps] == [sorted(s) for s in step_batches(rows, cfg, boundaries=[4], bucket=True)]
    assert step_batches(rows, cfg, boundaries=[4]) == [[0, 1], [2, 3], [4, 5], [6, 7]]  # unbucketed: budget order


def test_decoder_loss_is_the_sum_over_labels(tokenizer, koala):
    cfg = model_config_by_name("tiny_t5")
    model = load_model(cfg, tokenizer, CACHE, torch.device("cpu"))
    assert is_encoder_decoder(model) and model_is_encoder_decoder(cfg, CACHE)
    assert not model_is_encoder_decoder(model_config_by_name("tiny"), CACHE)
    rows, _ = _rows(render(TWO_TURNS, tokenizer, koala))
    batch = collate_seq2seq(rows, tokenizer.pad_token_id)
    total = seq2seq_loss_sum(model, batch)
    # by hand: each row alone, the decoder fed its start token then the reply, log-softmax at every position
    by_hand = 0.0
    for row in rows:  # (no_grad below: a number, not a graph)
        s = _split(row)
        decoder = row.input_ids[s:]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([row.input_ids[:s]]),
                           decoder_input_ids=torch.tensor([[model.config.decoder_start_token_id] + decoder[:-1]])).logits[0]
        by_hand -= float(torch.log_softmax(logits, -1)[torch.arange(len(decoder)), torch.tensor(decoder)].sum())
    assert total.item() == pytest.approx(by_hand, rel=1e-5)


def test_tiny_t5_learns_and_saves(tokenizer, koala, tmp_path):
    cfg = model_config_by_name("tiny_t5")
    model = load_model(cfg, tokenizer, CACHE, torch.device("cpu"))
    rows, _ = _rows(render(TWO_TURNS, tokenizer, koala))
    batch = collate_seq2seq(rows, tokenizer.pad_token_id)
    before = seq2seq_loss_sum(model, batch).item()
    stats = train(model, rows * 4, TrainConfig(rows_per_step=8, epochs=10, lr=3e-3, warmup_steps=0, seed=0),
                  tokenizer.pad_token_id, torch.device("cpu"))
    assert stats.loss_tokens_seen == 10 * 4 * loss_tokens(rows)
    assert 0 < stats.fill <= 1
    after = seq2seq_loss_sum(model, batch).item()
    assert after < 0.5 * before
    model.save_pretrained(tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt", "float32", torch.device("cpu"))
    assert is_encoder_decoder(loaded)
    assert seq2seq_loss_sum(loaded, batch).item() == pytest.approx(after, rel=1e-5)


def test_what_the_layout_does_not_run():
    with pytest.raises(ConfigError, match="train.attention=flex"):
        check_encoder_decoder(TrainConfig(attention="flex"))
    with pytest.raises(ConfigError, match="train.compile"):
        check_encoder_decoder(TrainConfig(compile=True))
    check_encoder_decoder(TrainConfig())  # the defaults run


def test_stream_packer_is_unchanged_by_the_layout(tokenizer, koala):
    rendered = render(TWO_TURNS, tokenizer, koala)
    rows: list[PackedRow] = []
    StreamPacker(2048, rows.append).add(rendered)
    assert rows == []  # a packed row is emitted when full or at the end only


def test_tiny_t5_cell_end_to_end(tmp_path):
    from src.cell import Cell
    from src.pipeline import train_and_eval
    from src.plugins import load_config
    from tests.conftest import compose_config

    raw = compose_config(["model=tiny_t5", "data.source.path=tests/fixtures/sharegpt_small.json",
                          "train.block_length=128", "benchmark=[mmlu,nq,humaneval]", "benchmark.mmlu.limit=2",
                          "benchmark.mmlu.shots=1", "benchmark.nq.limit=3", "benchmark.nq.max_new_tokens=6",
                          "benchmark.humaneval.limit=2", "benchmark.humaneval.max_new_tokens=8",
                          "train.save_checkpoint=true", f"store_dir={tmp_path}", f"output_dir={tmp_path}/job",
                          "data.amount=600", "tracker.mode=disabled"])
    cell = Cell.of(load_config(raw))
    train_and_eval(cell, raw)
    results = json.loads((cell.dir / "results.json").read_text())
    assert results["tokens"]["total"] == 600 and results["data"]["turns"]["decoder_tokens"] == results["tokens"]["loss_bearing"]
    assert results["train"]["loss_tokens_seen"] == results["tokens"]["loss_bearing"]
    assert {"mmlu/acc_macro", "nq/em", "humaneval/pass@1"} <= set(results["metrics"])
    predictions = (cell.dir / "benchmarks" / "nq" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 3  # generated by the decoder
    assert is_encoder_decoder(load_checkpoint(cell.checkpoint, "float32", torch.device("cpu")))


def test_dpo_refuses_an_encoder_decoder_before_training(tmp_path, tokenizer):
    from src.cell import Cell
    from src.plugins import load_config
    from src.training.dpo import preference_stage
    from tests.conftest import compose_config

    raw = compose_config(["model=tiny_t5", "preference=teacher_vs_student", f"store_dir={tmp_path}",
                          f"output_dir={tmp_path}/job", "data.amount=600"])
    cell = Cell.of(load_config(raw))
    with pytest.raises(ConfigError, match="preference.source=teacher_vs_student.*tiny_t5"):
        preference_stage(cell, raw, tokenizer, chat_format(tokenizer, "koala"), torch.device("cpu"))
    assert not list(tmp_path.glob("**/checkpoint*")) and not list(tmp_path.glob("**/train.json"))  # no SFT ran
