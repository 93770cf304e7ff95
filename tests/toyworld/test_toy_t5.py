"""The encoder-decoder toy base (architecture t5): its size against toy_l's, its prefix-LM rows on a
hand-made document, a pretraining that learns and repeats bit for bit, a cached folder that loads as
a seq2seq model, and a cache key of its own that leaves toy_l's where it was."""

import math

import pytest
import torch

from src.config import ModelConfig
from src.toyworld.corpus import biographies
from src.toyworld.prefix_lm import IGNORE, prefix_lm_batch, split_points
from src.toyworld.pretrain import ToySpec, build_model, pretrain, pretrained_dir, spec_key, toy_spec
from src.toyworld.tokenizer import build_tokenizer
from src.toyworld.world import WorldSpec, make_world

MICRO_T5 = {"world": {"seed": 3, "n_entities": 60, "n_in_corpus": 40, "n_evaluated": 8}, "architecture": "t5",
            "hidden_size": 16, "layers": 1, "heads": 2, "intermediate_size": 32, "bios_per_entity": 2, "epochs": 3,
            "seq_len": 64, "batch_size": 8, "warmup_steps": 5}


def _config(name):
    import src.plugins  # noqa: F401  (registers the toy model source)
    from src.models.sources import model_config_by_name

    return model_config_by_name(name, seed=0)


def _parameters(model):
    return sum(p.numel() for p in model.parameters())


def test_toy_t5_is_toy_l_sized():
    tokenizer = build_tokenizer()
    t5, llama = _config("toy_t5"), _config("toy_l")
    model = build_model(toy_spec(t5.toy), tokenizer, t5.context_length)
    config = model.config
    assert type(model).__name__ == "T5ForConditionalGeneration" and config.is_encoder_decoder
    assert (config.d_model, config.d_ff, config.num_layers, config.num_decoder_layers, config.num_heads,
            config.d_kv) == (128, 160, 2, 2, 4, 32)
    assert config.feed_forward_proj == "gated-gelu" and config.dropout_rate == 0.0
    assert (config.pad_token_id, config.decoder_start_token_id, config.eos_token_id) == (
        tokenizer.pad_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id)
    assert config.vocab_size == len(tokenizer) == 962
    # the README's numbers: 763,904 against 763,008 (0.1% more)
    assert _parameters(model) == 763_904
    assert _parameters(build_model(toy_spec(llama.toy), tokenizer, llama.context_length)) == 763_008


def test_prefix_lm_rows_on_a_hand_made_document():
    bos, eos, pad = 2, 3, 0
    batch = prefix_lm_batch([[10, 11, 12, 13, 14], [20, 21]], [2, 1], bos, eos, pad)
    # encoder: <s> + the prefix, right-padded and masked; decoder labels: the rest + </s>, padding ignored
    assert batch["input_ids"].tolist() == [[bos, 10, 11], [bos, 20, pad]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[12, 13, 14, eos], [21, eos, IGNORE, IGNORE]]


def test_split_points_are_seeded_and_leave_both_sides_a_word():
    docs = [list(range(n)) for n in (2, 5, 30, 50)] * 25
    first = split_points(docs, seed=0, epoch=0)
    assert first == split_points(docs, seed=0, epoch=0)
    assert first != split_points(docs, seed=0, epoch=1) and first != split_points(docs, seed=1, epoch=0)
    assert all(1 <= k <= len(doc) - 1 for doc, k in zip(docs, first, strict=True))
    assert split_points([[7]], seed=0, epoch=0) == [1]  # one word: it stays in the prefix, the decoder ends


def test_t5_pretraining_learns_and_repeats_bit_for_bit():
    spec = ToySpec(**{**MICRO_T5, "world": WorldSpec(**MICRO_T5["world"])})
    tokenizer = build_tokenizer()
    first, record = pretrain(spec, tokenizer, 64)
    second, _ = pretrain(spec, tokenizer, 64)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert record["steps"] == 3 * math.ceil(record["documents"] / 8)  # one document an example
    # the loss on one fixed batch of the corpus, before (the same seeded init) and after
    texts = biographies(make_world(spec.world), spec.bios_per_entity)[:16]
    docs = tokenizer(texts, add_special_tokens=False)["input_ids"]
    batch = prefix_lm_batch(docs, split_points(docs, seed=0, epoch=0), tokenizer.bos_token_id,
                            tokenizer.eos_token_id, tokenizer.pad_token_id)
    with torch.no_grad():
        before, after = build_model(spec, tokenizer, 64)(**batch).loss.item(), first(**batch).loss.item()
    assert before > math.log(len(tokenizer)) - 0.5 and after < before - 0.5, (before, after)


def test_the_cached_t5_loads_as_seq2seq_under_its_own_key(tmp_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    cfg = ModelConfig(name="toy_t5_micro", toy=MICRO_T5, context_length=64, chat_template="koala")
    cfg.validate()
    folder = pretrained_dir(cfg, str(tmp_path))
    model = AutoModelForSeq2SeqLM.from_pretrained(folder)
    assert model.config.is_encoder_decoder and type(model).__name__ == "T5ForConditionalGeneration"
    assert AutoTokenizer.from_pretrained(folder).pad_token == "<pad>"
    llama = ModelConfig(name="toy_t5_micro", toy={**MICRO_T5, "architecture": "llama"}, context_length=64)
    assert spec_key(llama) != spec_key(cfg)  # the architecture is part of the cache key


def test_toy_l_keeps_its_cache_key():
    """Pinned: a new key would retrain every cached toy_l and give every toy_l cell a new run id. If a
    corpus or recipe change moves it on purpose, update the pin with it."""
    assert spec_key(_config("toy_l")) == "476b2e674375"
    assert spec_key(_config("toy_t5")) != spec_key(_config("toy_l"))


@pytest.mark.parametrize("bad", ["t6", "bert"])
def test_an_unknown_architecture_names_the_key_and_the_choices(bad):
    from src.config import ConfigError

    with pytest.raises(ConfigError, match=r"model\.toy\.architecture: .* is not one of llama, gpt2, t5"):
        toy_spec({**MICRO_T5, "architecture": bad})


def test_the_toyworld_grid_composes_with_toy_t5():
    """`model=toy_l,toy_t5` on experiment=toyworld: the toy_t5 cell is a config of its own, another run id."""
    from src.cell import run_id
    from tests.conftest import run_config

    cells = {name: run_config(["experiment=toyworld", f"model={name}", "data.amount=4K", "output_dir=/tmp/unused"])
             for name in ("toy_l", "toy_t5")}
    assert cells["toy_t5"].model.toy["architecture"] == "t5" and cells["toy_t5"].model.toy["world"]["seed"] == 0
    assert run_id(cells["toy_t5"]) != run_id(cells["toy_l"])
