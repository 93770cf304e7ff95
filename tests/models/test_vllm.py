"""The vLLM backend's bookkeeping (token split, prompt log-prob positions, ranks, finish reasons)
against ModelHandle on the same tiny model. vLLM itself needs a CUDA machine; here a stand-in engine
with vLLM's documented output shapes (RequestOutput.outputs[0].text / finish_reason, prompt_logprobs =
[None, {token_id: Logprob(logprob, rank)}, ...]) computes them with the same HF model."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest
import torch

from src.models.hf import load_handle
from src.models.sources import model_config_by_name
from tests.conftest import CACHE


@dataclass
class Logprob:
    logprob: float
    rank: int


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    stop: list | None = None
    repetition_penalty: float = 1.0
    seed: int | None = None
    prompt_logprobs: int | None = None


class FakeLLM:
    model = None  # the HF model, set by the test
    eos = None
    calls: list = []

    def __init__(self, **kwargs):
        FakeLLM.calls.append(kwargs)

    @torch.no_grad()
    def generate(self, requests, params, use_tqdm=True):
        outputs = []
        for request in requests:
            ids = torch.tensor([request["prompt_token_ids"]])
            prompt_logprobs = None
            if params.prompt_logprobs is not None:
                logprobs = torch.log_softmax(self.model(input_ids=ids).logits[0].float(), dim=-1)
                prompt_logprobs = [None]
                for pos in range(1, ids.shape[1]):
                    row, token = logprobs[pos - 1], int(ids[0, pos])
                    rank = int((row > row[token]).sum()) + 1
                    prompt_logprobs.append({token: Logprob(float(row[token]), rank)})
            new = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=params.max_tokens, pad_token_id=self.eos)[0, ids.shape[1]:]
            ended = bool((new == self.eos).any())
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            completion = types.SimpleNamespace(text=text, finish_reason="stop" if ended else "length")
            outputs.append(types.SimpleNamespace(outputs=[completion], prompt_logprobs=prompt_logprobs))
        return outputs


@pytest.fixture(scope="module")
def handles():
    hf = load_handle(model_config_by_name("tiny"), CACHE, torch.device("cpu"), trained=False, seed=5)
    FakeLLM.model, FakeLLM.tokenizer, FakeLLM.eos = hf.model, hf.tokenizer, hf.tokenizer.eos_token_id
    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = FakeLLM, SamplingParams
    saved = sys.modules.get("vllm")
    sys.modules["vllm"] = fake
    try:
        from src.models.vllm import VLLMHandle

        yield hf, VLLMHandle("some/checkpoint", hf.tokenizer, hf.format, trained=False, seed=7)
    finally:
        if saved is None:
            sys.modules.pop("vllm")
        else:
            sys.modules["vllm"] = saved


def test_engine_gets_the_checkpoint_and_prefix_caching(handles):
    assert FakeLLM.calls[-1]["model"] == "some/checkpoint" and FakeLLM.calls[-1]["enable_prefix_caching"]
    assert FakeLLM.calls[-1]["seed"] == 7


def test_loglikelihood_equals_the_hf_backend(handles):
    hf, vllm = handles
    requests = [("Question: what is two plus two?\nAnswer:", " four"), ("The sky is", " blue and wide"),
                ("Question: what is two plus two?\nAnswer:", " five")]
    for chat in (False, True):
        expected = hf.loglikelihood(requests, chat=chat, shared_prefix=False)
        got = vllm.loglikelihood(requests, chat=chat)
        assert [g for _, g in got] == [g for _, g in expected]
        assert [lp for lp, _ in got] == pytest.approx([lp for lp, _ in expected], abs=1e-4)


def test_next_token_logprobs_equal_the_hf_backend(handles):
    hf, vllm = handles
    prompts = ["Question: 1+1?\nA. 2\nB. 3\nAnswer:", "Question: 2+2?\nA. 5\nB. 4\nAnswer:"]
    letters = [hf.tokenizer(" A", add_special_tokens=False)["input_ids"][-1],
               hf.tokenizer(" B", add_special_tokens=False)["input_ids"][-1]]
    expected = hf.next_token_logprobs(prompts, letters, shared_prefix=False)
    got = vllm.next_token_logprobs(prompts, letters)
    assert len(got) == 2 and all(len(row) == 2 for row in got)
    for row, want in zip(got, expected, strict=True):
        assert row == pytest.approx(want, abs=1e-4)


def test_generate_cuts_at_stop_and_reports_finish(handles):
    hf, vllm = handles
    finished: list[bool] = []
    texts = vllm.generate(["Hello there", "Once upon a time"], max_new_tokens=6, finished=finished)
    assert texts == hf.generate(["Hello there", "Once upon a time"], max_new_tokens=6, batch_size=1)
    assert len(finished) == 2 and all(isinstance(f, bool) for f in finished)
    word = texts[0].split()[1] if len(texts[0].split()) > 1 else None
    if word:
        cut = vllm.generate(["Hello there"], max_new_tokens=6, stop=[word])[0]
        assert word not in cut and texts[0].startswith(cut)


def test_missing_vllm_is_a_clear_error(monkeypatch):
    from src.models.vllm import VLLMHandle, VLLMMissing

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(VLLMMissing, match="pip install vllm"):
        VLLMHandle("x", None, None, trained=False)


def test_cell_scores_through_vllm_when_asked(handles, tmp_path):
    """eval_backend=vllm: the cell's benchmarks go through the engine, which is handed the base model."""
    from src.cell import Cell
    from src.pipeline import train_and_eval
    from tests.conftest import run_config

    FakeLLM.calls.clear()
    cfg = run_config(["experiment=smoke", "data.amount=0", "eval_backend=vllm", "tracker.mode=disabled",
                      "benchmark=[nq]", "benchmark.nq.limit=2", f"output_dir={tmp_path}", f"store_dir={tmp_path}"])
    results = train_and_eval(Cell.of(cfg)).to_dict()
    assert results["eval_backend"] == "vllm" and results["benchmarks"]["nq"]["n"] == 2
    assert len(FakeLLM.calls) == 1 and FakeLLM.calls[0]["dtype"] == cfg.model.dtype


def test_vllm_for_a_trained_cell_needs_its_checkpoint():
    from src.config import ConfigError
    from tests.conftest import run_config

    with pytest.raises(ConfigError, match="train.save_checkpoint=true"):
        run_config(["experiment=smoke", "data.amount=1K", "eval_backend=vllm", "train.save_checkpoint=false",
                    "output_dir=/tmp/x"])
