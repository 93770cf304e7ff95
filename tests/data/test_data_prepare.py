"""prepare: splitting long conversations, the cache, and a GPT-2-style tokenizer (no template, pad = eos)."""

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from src.config import DataConfig, DataSourceConfig
from src.data import prepare as prepare_module
from src.data.clean import split_at_turns
from src.data.conversation import Message as M
from src.data.packing import collate
from src.data.prepare import prepare
from src.data.template import IGNORE, TokenizerTemplate, chat_format, render
from tests.conftest import FIXTURES


@pytest.fixture(scope="module")
def gpt2_like():
    """A byte-level BPE tokenizer shaped like GPT-2's: no chat template, <|endoftext|> as BOS and EOS, no pad."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["USER: hello GPT: hi there", "BEGINNING OF CONVERSATION: what is two plus two? four."] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    assert wrapped.pad_token is None and not wrapped.chat_template
    wrapped.pad_token = wrapped.eos_token  # what src.models.load_tokenizer does for GPT-2
    return wrapped


def test_gpt2_style_koala_masks_keep_the_eos_that_is_also_the_pad(gpt2_like):
    fmt = chat_format(gpt2_like, "auto")
    assert fmt.name == "koala"
    rendered = render((M("user", "hello"), M("assistant", "hi there")), gpt2_like, fmt)
    eos = gpt2_like.eos_token_id
    assert rendered.input_ids[0] != eos  # GPT-2's BOS is its EOS: never prepended
    assert rendered.input_ids[-1] == eos and rendered.labels[-1] == eos  # the reply's end is learned
    labelled = [t for t, label in zip(rendered.input_ids, rendered.labels, strict=True) if label != IGNORE]
    assert gpt2_like.decode(labelled) == "hi there<|endoftext|>"
    batch = collate([prepare_module.pack([rendered], 64)[0]], pad_id=gpt2_like.pad_token_id)
    assert batch["labels"][0, len(rendered.input_ids) - 1].item() == eos  # padding with eos did not mask it


def test_split_at_turn_boundaries_repeats_the_system_turn():
    messages = (M("system", "S"), M("user", "u1"), M("assistant", "a1"), M("user", "u2"), M("assistant", "a2"),
                M("user", "u3"), M("assistant", "a3"))
    pieces = split_at_turns(messages, fits=lambda m: len(m) <= 5)
    assert pieces == [messages[:5], (M("system", "S"), *messages[5:])]
    assert split_at_turns(messages, fits=lambda m: True) == [messages]


def test_long_conversation_split_to_fit_the_context(tokenizer, tmp_path):
    cfg = DataConfig(source=DataSourceConfig(name="long", path=str(FIXTURES / "sharegpt_long.json")), amount=None)
    fmt = TokenizerTemplate(tokenizer)
    data = prepare(cfg, tokenizer, fmt, block_length=512, context_length=200)
    assert data.split == {"conversations_split": 1, "pieces_over_context": 0}
    assert data.examples > 1
    whole = prepare(cfg, tokenizer, fmt, block_length=512, context_length=4096)
    assert whole.examples == 1 and whole.split["conversations_split"] == 0


def test_cache_hit_tokenizes_nothing_and_returns_the_same_rows(tokenizer, tmp_path, monkeypatch):
    cfg = DataConfig(source=DataSourceConfig(name="fx", path=str(FIXTURES / "sharegpt_small.json")), amount=700)
    fmt = TokenizerTemplate(tokenizer)
    cold = prepare(cfg, tokenizer, fmt, 128, 2048, cache_dir=str(tmp_path))
    assert cold.cache == "miss"

    def boom(*args, **kwargs):
        raise AssertionError("tokenized on a cache hit")

    monkeypatch.setattr(prepare_module, "render", boom)
    monkeypatch.setattr(prepare_module, "scan_source", boom)
    hot = prepare(cfg, tokenizer, fmt, 128, 2048, cache_dir=str(tmp_path))
    assert hot.cache == "hit"
    assert [r.input_ids for r in hot.rows] == [r.input_ids for r in cold.rows]
    assert [r.labels for r in hot.rows] == [r.labels for r in cold.rows]
    assert [r.position_ids for r in hot.rows] == [r.position_ids for r in cold.rows]
    assert (hot.total_tokens, hot.loss_tokens) == (cold.total_tokens, cold.loss_tokens) == (700, cold.loss_tokens)
    # any change of the key is a miss, not a stale hit
    with pytest.raises(AssertionError, match="tokenized on a cache hit"):
        prepare(DataConfig(source=cfg.source, amount=600), tokenizer, fmt, 128, 2048, cache_dir=str(tmp_path))
    with pytest.raises(AssertionError, match="tokenized on a cache hit"):
        prepare(cfg, tokenizer, fmt, 256, 2048, cache_dir=str(tmp_path))


def test_cache_key_follows_the_source_content(tokenizer, tmp_path):
    path = tmp_path / "d.json"
    path.write_text((FIXTURES / "sharegpt_small.json").read_text())
    cfg = DataConfig(source=DataSourceConfig(name="fx", path=str(path)), amount=100)
    fmt = TokenizerTemplate(tokenizer)
    before = prepare_module.cache_key(cfg, tokenizer, fmt, 128, 2048)
    path.write_text(path.read_text().replace("tea", "coffee"))
    assert prepare_module.cache_key(cfg, tokenizer, fmt, 128, 2048) != before


def test_data_cli_shows_counts_mask_and_budgets():
    import subprocess
    import sys

    from src import PROJECT_ROOT

    proc = subprocess.run([sys.executable, "-m", "src.data", "--source", "demo", "--amounts", "5K,1M"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert '"read": 275' in out and '"kept": 275' in out
    example = out.split("inside [[ ]]:")[1]
    prompt, reply = example.split("[[", 1)
    assert "<|im_start|>user" in prompt and "<|im_start|>assistant" in prompt  # the prompt carries no loss
    assert reply.split("]]")[0].endswith("<|im_end|>")  # the reply and its end-of-turn do
    assert "5K: 65 examples (the last cut to fit), 5000 tokens" in out
    assert "1M: data.amount=1000000 tokens is more than data source 'demo' holds (21472 tokens" in out
