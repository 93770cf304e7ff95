"""The benchmarks on an encoder-decoder model (src/models/seq2seq.py, a tiny random-init T5): MMLU's
letters scored as the decoder's first token (plain and chat prompts, letter and loglikelihood modes
agreeing), NQ, HumanEval, style and the judge by generation, and the uncertainty and diversity
selectors on an encoder-decoder student."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.benchmarks import run_benchmark
from src.benchmarks.mmlu import LETTERS
from src.benchmarks.nq import build_prompt, load_nq
from src.teacher.select import prompt_embeddings, reply_entropy, select
from tests.helpers.tiny_t5 import tiny_t5_handle


@pytest.fixture(scope="module")
def t5(tokenizer):
    return tiny_t5_handle(tokenizer, seed=1)


@pytest.fixture(scope="module")
def t5_trained(tokenizer):
    return tiny_t5_handle(tokenizer, trained=True, seed=1)  # benchmarks pick chat prompts for it


@torch.no_grad()
def _first_decoder_logprobs(handle, prompt: str, chat: bool) -> torch.Tensor:
    ids = torch.tensor([handle.encode(prompt, chat)])
    logits = handle.model(input_ids=ids, decoder_input_ids=torch.tensor([[handle.decoder_start]])).logits
    return torch.log_softmax(logits[0, 0], dim=-1)


@pytest.mark.parametrize("trained, delimiter, letter_tokens", [
    (False, " ", [" A", " B", " C", " D"]),  # plain k-shot prompt ending "Answer:": the letter after a space
    (True, "", ["A", "B", "C", "D"]),        # ChatML prompt ending "assistant\n": the reply's first characters
])
def test_mmlu_scores_the_letters_as_the_first_decoder_token(t5, t5_trained, trained, delimiter, letter_tokens):
    handle = t5_trained if trained else t5
    ids = [handle.tokenizer.convert_tokens_to_ids(handle.tokenizer.tokenize(t))[0] for t in letter_tokens]
    letter = run_benchmark("mmlu", {"shots": 2, "batch_size": 3}, handle)
    assert letter.settings["chat_wrapped"] is trained and letter.settings["target_delimiter"] == delimiter
    assert len(letter.predictions) == 12  # the shipped sample: 3 subjects x 4 questions
    for p in letter.predictions[:3]:
        expected = _first_decoder_logprobs(handle, p["prompt"], chat=trained)[ids]
        assert p["logprobs"] == pytest.approx(expected.tolist(), abs=1e-3)
        assert p["output"] == LETTERS[int(expected.argmax())]
    scored = run_benchmark("mmlu", {"shots": 2, "batch_size": 5, "mode": "loglikelihood"}, handle)
    assert [p["output"] for p in scored.predictions] == [p["output"] for p in letter.predictions]
    for a, b in zip(letter.predictions, scored.predictions, strict=True):
        assert a["logprobs"] == pytest.approx(b["logprobs"], abs=1e-3)
    correct = sum(p["correct"] for p in letter.predictions)
    assert letter.metrics["acc_micro"] == pytest.approx(correct / 12)


def test_nq_generates_with_the_decoder(t5):
    result = run_benchmark("nq", {"limit": 3, "max_new_tokens": 4, "batch_size": 2}, t5)
    questions = load_nq("data/nq/nq_open_demo.jsonl")[:3]
    shots = load_nq("data/nq/nq_open_shots.jsonl")[:3]
    prompts = [build_prompt(q["question"], shots) for q in questions]
    assert [p["prompt"] for p in result.predictions] == prompts
    assert [p["output"] for p in result.predictions] == t5.generate(prompts, 4, stop=["\n"], batch_size=1)
    assert set(result.metrics) == {"em", "f1", "unparsable"}
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values())


def test_humaneval_completions_are_executed(t5):
    result = run_benchmark("humaneval", {"limit": 2, "max_new_tokens": 6, "batch_size": 2}, t5)
    assert [p["task_id"] for p in result.predictions] == ["HumanEval/0", "HumanEval/1"]
    assert all(p["completion"] == p["output"] for p in result.predictions)  # plain prompts: the completion as said
    assert all(p["result"] in {"passed", "failed", "timed out"} for p in result.predictions)
    assert result.metrics["pass@1"] == np.mean([p["passed"] for p in result.predictions])


def test_style_and_self_judge_run_on_chat_replies(t5_trained):
    style = run_benchmark("style", {"limit": 2, "max_new_tokens": 5}, t5_trained)
    prompts = [t5_trained.chat_prompt(p["prompt"]) for p in style.predictions]
    assert [p["output"] for p in style.predictions] == t5_trained.generate(prompts, 5, chat=True)
    judge = run_benchmark("judge", {"limit": 2, "max_new_tokens": 5, "judge": "self", "judge_max_tokens": 4,
                                    "cache_dir": None}, t5_trained)
    assert len(judge.predictions) == 2
    # a 4-token random reply holds no [[A]]/[[B]]/[[C]] verdict: every judged pair is unparsable
    assert all(p["outcome"] == "unparsable" for p in judge.predictions)


def test_uncertainty_and_diversity_selectors_read_the_encoder_decoder(t5_trained):
    h = t5_trained
    prompts = ["What is the capital of France?", "Name a prime number.", "Hi"]
    got = reply_entropy(h, prompts, max_new_tokens=4, batch_size=2)
    replies = h.generate([h.chat_prompt(p) for p in prompts], 4, chat=True)
    for prompt, reply, score in zip(prompts, replies, got, strict=True):
        encoder = h.encode(h.chat_prompt(prompt), chat=True)
        decoder = h.decoder_tokens(reply)
        with torch.no_grad():
            logits = h.model(input_ids=torch.tensor([encoder]),
                             decoder_input_ids=torch.tensor([[h.decoder_start] + decoder[:-1]])).logits[0]
        probs = torch.softmax(logits[:max(len(decoder), 1)].float(), dim=-1)
        assert score == pytest.approx(float(-(probs * probs.clamp_min(1e-30).log()).sum(-1).mean()), rel=1e-4)
    batched = prompt_embeddings(h, prompts, batch_size=3)
    assert batched.shape == (3, 64)
    for i, prompt in enumerate(prompts):
        ids = torch.tensor([h.encode(h.chat_prompt(prompt), chat=True)])
        with torch.no_grad():
            alone = h.model.get_encoder()(input_ids=ids).last_hidden_state[0].mean(0).double().numpy()
        np.testing.assert_allclose(batched[i], alone, atol=1e-5)
    pairs = [(f"p{i}", text) for i, text in enumerate(prompts)]
    assert len(select(pairs, "uncertainty", 2, handle=h, student="tiny_t5", max_new_tokens=4).chosen) == 2
