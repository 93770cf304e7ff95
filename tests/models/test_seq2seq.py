"""The encoder-decoder backend (src/models/seq2seq.py) on a tiny random-init T5: its scores against the
model's own forward and generate, batching that does not change answers, the decoder's token split,
the finished/lengths bookkeeping on scripted outputs, and the dispatch from open_hf."""

from __future__ import annotations

import copy
import types

import pytest
import torch

from src.data.template import chat_format
from src.models.backend import ModelWeights
from src.models.hf import ModelHandle, open_hf
from src.models.prompts import split_requests
from src.models.seq2seq import Seq2SeqHandle
from src.models.sources import model_config_by_name
from tests.conftest import CACHE
from tests.helpers.tiny_t5 import tiny_t5_handle

PROMPTS = ["Hello there", "Once upon a time, in a land far away,", "Q: who wrote emma?\nA:"]


@pytest.fixture(scope="module")
def t5(tokenizer):
    return tiny_t5_handle(tokenizer, seed=0)


def _ids(ids):
    return torch.tensor([ids])


@torch.no_grad()
def test_loglikelihood_is_the_decoders_summed_log_probs(t5):
    context, continuation = "The capital of France is", " Paris, of course"
    [(total, greedy)] = t5.loglikelihood([(context, continuation)])
    encoder = t5.tokenizer(context)["input_ids"]
    target = t5.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    # the model's own loss: labels shifted right behind decoder_start_token_id, mean over the targets
    out = t5.model(input_ids=_ids(encoder), labels=_ids(target))
    assert total == pytest.approx(-float(out.loss) * len(target), abs=1e-3)
    assert greedy == bool((out.logits[0].argmax(-1) == torch.tensor(target)).all())
    assert not greedy  # a random model does not say this


@torch.no_grad()
def test_own_greedy_reply_is_greedy_and_batches_score_alike(t5):
    encoder = t5.tokenizer(PROMPTS[0])["input_ids"]
    reply = t5.model.generate(_ids(encoder), max_new_tokens=4, do_sample=False)[0, 1:].tolist()
    text = t5.tokenizer.decode(reply)
    assert t5.decoder_tokens(text) == reply  # the reply's text re-encodes to its tokens
    requests = [(PROMPTS[0], text), (PROMPTS[1], " Paris"), (PROMPTS[2], " Jane Austen"), (PROMPTS[0], " the")]
    alone = [t5.loglikelihood([r])[0] for r in requests]
    batched = t5.loglikelihood(requests, batch_size=3)
    assert alone[0][1] is True and batched[0][1] is True
    assert [g for _, g in batched] == [g for _, g in alone]
    assert [lp for lp, _ in batched] == pytest.approx([lp for lp, _ in alone], abs=1e-4)


@torch.no_grad()
def test_next_token_logprobs_are_the_first_decoder_position(t5):
    ids = [t5.tokenizer(f" {x}", add_special_tokens=False)["input_ids"][0] for x in "ABCD"]
    got = t5.next_token_logprobs(PROMPTS, ids, batch_size=2)
    for prompt, row in zip(PROMPTS, got, strict=True):
        logits = t5.model(input_ids=_ids(t5.encode(prompt)), decoder_input_ids=_ids([t5.decoder_start])).logits
        assert row == pytest.approx(torch.log_softmax(logits[0, 0], -1)[ids].tolist(), abs=1e-5)
    # the same numbers as the one-token continuation
    assert got[2][1] == pytest.approx(t5.loglikelihood([(PROMPTS[2], " B")])[0][0], abs=1e-5)


@torch.no_grad()
def test_generate_is_the_models_own_greedy_decode_batched_or_not(t5):
    direct, ended, counts = [], [], []
    for prompt in PROMPTS:
        out = t5.model.generate(_ids(t5.encode(prompt)), max_new_tokens=5, do_sample=False)[0, 1:]
        direct.append(t5.tokenizer.decode(out, skip_special_tokens=True))
        # alone, generate stops right after an EOS: its tokens are the reply through the EOS
        ended.append(bool((out == t5.tokenizer.eos_token_id).any()))
        counts.append(len(out))
    # this random model answers the second prompt with EOS at once, the others run to the limit
    assert ended == [False, True, False] and counts == [5, 1, 5] and direct[1] == ""
    finished, lengths = [], []
    batched = t5.generate(PROMPTS, 5, batch_size=3, finished=finished, lengths=lengths)
    assert batched == direct == t5.generate(PROMPTS, 5, batch_size=1)
    assert finished == ended and lengths == counts
    chat = t5.chat_prompt("Hi")
    out = t5.model.generate(_ids(t5.encode(chat, chat=True)), max_new_tokens=3, do_sample=False)[0, 1:]
    assert t5.generate([chat], 3, chat=True) == [t5.tokenizer.decode(out, skip_special_tokens=True)]


def test_sampling_is_seeded(t5):
    first = t5.generate(PROMPTS, 6, temperature=1.0, seed=3)
    assert first == t5.generate(PROMPTS, 6, temperature=1.0, seed=3)
    assert first != t5.generate(PROMPTS, 6)  # sampled, not greedy


class ScriptedSeq2Seq(torch.nn.Module):
    """generate returns the decoder start token, then fixed continuations padded as generate pads them."""

    def __init__(self, continuations, start):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = types.SimpleNamespace(is_encoder_decoder=True, decoder_start_token_id=start)
        self.continuations = continuations

    def generate(self, input_ids, attention_mask, **kwargs):
        rows = self.continuations[: len(input_ids)]
        return torch.tensor([[self.config.decoder_start_token_id] + row for row in rows])


def test_finished_and_lengths_skip_the_start_token_and_the_padding(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.pad_token = "<|endoftext|>"  # a pad distinct from EOS, as T5's own tokenizer has
    eos, pad = tok.eos_token_id, tok.pad_token_id
    [word] = tok("hello", add_special_tokens=False)["input_ids"]
    scripted = ScriptedSeq2Seq([[word, eos, pad, pad], [word, word, pad, pad], [word] * 4], start=pad)
    handle = Seq2SeqHandle(scripted, tok, chat_format(tok, "auto"), torch.device("cpu"), trained=False)
    finished, lengths = [], []
    texts = handle.generate(["a", "bb", "ccc"], 4, batch_size=3, finished=finished, lengths=lengths)
    assert texts == ["hello", "hellohello", "hello" * 4]
    # through the EOS; padded after (the batch's other rows ran on); ran to max_new_tokens
    assert lengths == [2, 2, 4] and finished == [True, False, False]
    finished = []
    handle.model.continuations = [[word] * 4]
    assert handle.generate(["ccc"], 4, stop=["lloh"], finished=finished) == ["he"]
    assert finished == [True]  # a stop string ends the reply


def test_a_start_token_that_is_the_eos_is_not_read_as_the_end(tokenizer):
    eos = tokenizer.eos_token_id  # SmolLM2's EOS is its pad, so the tiny T5's decoder start too
    [word] = tokenizer("hello", add_special_tokens=False)["input_ids"]
    handle = Seq2SeqHandle(ScriptedSeq2Seq([[word] * 3], start=eos), tokenizer, chat_format(tokenizer, "auto"),
                           torch.device("cpu"), trained=False)
    finished, lengths = [], []
    assert handle.generate(["a"], 3, finished=finished, lengths=lengths) == ["hello" * 3]
    assert lengths == [3] and finished == [False]


def test_decoder_split_matches_split_requests_on_benchmark_requests(t5):
    """For a BPE tokenizer the decoder's tokens are the decoder-only split's: scores are comparable."""
    chat = t5.chat_prompt("Question?\nA. x\nB. y\nAnswer:")
    cases = {False: [("Q?\nA. x\nB. y\nAnswer:", " A"), ("Q: who wrote emma?\nA:", " Jane Austen"),
                     ("The sky is", " blue and wide")],
             True: [(chat, "A"), (chat, "Jane Austen")]}
    for is_chat, requests in cases.items():
        sequences, starts = split_requests(t5.encode, requests, is_chat)
        for (context, continuation), seq, start in zip(requests, sequences, starts, strict=True):
            assert t5.encode(context, is_chat) == seq[:start]
            assert t5.decoder_tokens(continuation) == seq[start:]


@torch.no_grad()
def test_logprobs_at_reads_the_reply_in_the_decoder(t5):
    prompt = t5.encode(PROMPTS[2])
    reply = t5.decoder_tokens(" Jane Austen")
    seq = prompt + reply
    [rows] = t5.logprobs_at([seq], [list(range(len(prompt) - 1, len(seq) - 1))], 4, False, "test")
    logits = t5.model(input_ids=_ids(prompt), decoder_input_ids=_ids([t5.decoder_start] + reply[:-1])).logits[0]
    assert torch.allclose(rows, torch.log_softmax(logits, -1), atol=1e-5)
    [empty] = t5.logprobs_at([prompt], [[len(prompt) - 1]], 4, False, "test")  # no reply: the first position
    assert torch.allclose(empty, rows[:1], atol=1e-5)
    with pytest.raises(ValueError, match="a run of positions from the prompt's last token"):
        t5.logprobs_at([seq], [[0, 2]], 4, False, "test")


def test_empty_continuation_is_a_clear_error(t5):
    with pytest.raises(ValueError, match="non-empty context and continuation"):
        t5.loglikelihood([("The sky is", "")])


def test_open_hf_picks_the_handle_by_architecture(t5, tokenizer):
    tiny = model_config_by_name("tiny")
    fmt = chat_format(tokenizer, "auto")
    weights = ModelWeights(base=tiny, cache_dir=CACHE, trained=True, module=t5.model)
    handle = open_hf(weights, tokenizer, fmt, torch.device("cpu"))
    assert isinstance(handle, Seq2SeqHandle) and handle.trained and handle.model is t5.model
    decoder_only = open_hf(ModelWeights(base=tiny, cache_dir=CACHE, trained=False), tokenizer, fmt, torch.device("cpu"))
    assert isinstance(decoder_only, ModelHandle)
    assert handle.n_parameters == sum(p.numel() for p in t5.model.parameters())


def test_vllm_refuses_an_encoder_decoder(t5, tmp_path):
    from src.config import ConfigError
    from src.models.vllm import open_vllm

    tiny = model_config_by_name("tiny")
    in_memory = ModelWeights(base=tiny, cache_dir=CACHE, trained=False, module=t5.model)
    t5.model.config.save_pretrained(tmp_path)  # a checkpoint on disk, read by its config alone
    on_disk = ModelWeights(base=tiny, cache_dir=CACHE, trained=True, checkpoint=tmp_path)
    for weights in (in_memory, on_disk):
        with pytest.raises(ConfigError, match="model 'tiny' is an encoder-decoder .*use eval_backend=hf"):
            open_vllm(weights, t5.tokenizer, t5.format, torch.device("cpu"))


@torch.no_grad()
def test_a_tokenizer_that_appends_eos_to_prompts_as_t5s_does(tokenizer):
    """T5's tokenizer ends every encoded text with </s>: the encoder reads it, the decoder's tokens
    never carry it, and MMLU's letters stay the decoder's first token (the decoder-only split would
    score the appended EOS in place of " A": the context's tokens are no prefix of the whole's)."""
    from tokenizers.processors import TemplateProcessing

    from src.benchmarks import run_benchmark

    tok = copy.deepcopy(tokenizer)
    eos = tok.eos_token_id
    tok._tokenizer.post_processor = TemplateProcessing(single=f"$A {tok.eos_token}",
                                                       special_tokens=[(tok.eos_token, eos)])
    handle = tiny_t5_handle(tok, seed=2)
    context = "Q: 2+2?\nA. 4\nB. 5\nAnswer:"
    assert handle.encode(context)[-1] == eos and handle.decoder_tokens(" A") == [330]  # " A" is one BPE token
    [whole], [start] = split_requests(handle.encode, [(context, " A")], False)
    assert whole[start:] == [eos]  # what the decoder-only split would score
    [(total, _)] = handle.loglikelihood([(context, " A")])
    [[first]] = handle.next_token_logprobs([context], [330])
    assert total == pytest.approx(first, abs=1e-5)
    result = run_benchmark("mmlu", {"shots": 1, "limit": 1, "subjects": ["astronomy"]}, handle)
    [prediction] = result.predictions
    ids = [handle.decoder_tokens(f" {x}")[0] for x in "ABCD"]
    logits = handle.model(input_ids=_ids(handle.encode(prediction["prompt"])),
                          decoder_input_ids=_ids([handle.decoder_start])).logits[0, 0]
    assert prediction["logprobs"] == pytest.approx(torch.log_softmax(logits, -1)[ids].tolist(), abs=1e-3)
