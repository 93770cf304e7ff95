"""MMLU and ModelHandle.loglikelihood: hand-checked metrics, bad input, and the shared-prefix fast path
giving the same numbers as a plain full forward."""

import re

import pytest
import torch

from src.benchmarks import benchmark_settings, run_benchmark
from src.benchmarks.mmlu import LETTERS, Question, build_prompt, load_split
from src.config import ConfigError
from tests.conftest import CACHE

SMALL = {"subjects": None, "shots": 1, "batch_size": 3}


class ScriptedHandle:
    """Word-level fake: " A" after "Answer:" is one token; it always prefers the letter A, so the
    accuracy of each subject is the share of gold A's (hand-checkable)."""

    trained = False

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def encode(self, text, chat=False):
        return [self.vocab.setdefault(piece, len(self.vocab)) for piece in re.findall(r"\s?\S+|\s", text)]

    def next_token_logprobs(self, prompts, token_ids, **_):
        return [[-0.1, -2.0, -3.0, -4.0] for _ in prompts]


def write_mmlu(root, subjects):
    for split in ("dev", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
    for name, golds in subjects.items():
        (root / "dev" / f"{name}_dev.csv").write_text("Dev q?,w,x,y,z,A\n")
        (root / "test" / f"{name}_test.csv").write_text("".join(f"Q{i}?,w,x,y,z,{g}\n" for i, g in enumerate(golds)))


def test_macro_and_micro_accuracy_hand_checked(tmp_path):
    # x: 1 of 1 correct; y: 1 of 3 -> macro (1 + 1/3) / 2 = 2/3, micro 2/4
    write_mmlu(tmp_path, {"x": "A", "y": "ABB"})
    result = run_benchmark("mmlu", {**SMALL, "path": str(tmp_path)}, ScriptedHandle())
    assert result.metrics["acc_macro"] == pytest.approx(2 / 3)
    assert result.metrics["acc_micro"] == pytest.approx(0.5)
    assert result.metrics["acc/x"] == 1.0 and result.metrics["acc/y"] == pytest.approx(1 / 3)
    assert [p["output"] for p in result.predictions] == ["A"] * 4
    assert [p["gold"] for p in result.predictions] == ["A", "A", "B", "B"]
    assert result.settings["shots"] == 1 and result.settings["subjects"] == ["x", "y"]


def test_prompt_is_lm_eval_format():
    shot = Question("high_school_geography", "What is the capital of France?", ["Berlin", "Madrid", "Paris", "Rome"], 2)
    q = Question("high_school_geography", " Capital of Italy? ", ["Rome", "Milan", "Naples", "Turin"], 0)
    assert build_prompt(q, [shot]) == (
        "The following are multiple choice questions (with answers) about high school geography.\n\n"
        "What is the capital of France?\nA. Berlin\nB. Madrid\nC. Paris\nD. Rome\nAnswer: C\n\n"
        "Capital of Italy?\nA. Rome\nB. Milan\nC. Naples\nD. Turin\nAnswer:")


def test_shipped_sample_loads():
    dev = load_split("data/mmlu", "astronomy", "dev")
    test = load_split("data/mmlu", "astronomy", "test")
    assert len(dev) == 5 and len(test) == 4
    assert test[0].question == "Which planet has the most prominent ring system?" and LETTERS[test[0].answer] == "B"


def test_bad_input_is_a_clear_error(tmp_path):
    write_mmlu(tmp_path, {"x": "A"})
    (tmp_path / "test" / "bad_test.csv").write_text("Q?,w,x,y,z,E\n")
    with pytest.raises(ValueError, match="answer key 'E' is not one of A, B, C, D"):
        load_split(str(tmp_path), "bad", "test")
    with pytest.raises(ValueError, match="no dev split for subject 'missing'"):
        load_split(str(tmp_path), "missing", "dev")
    with pytest.raises(ValueError, match="no dev split for subject 'bad'"):
        run_benchmark("mmlu", {**SMALL, "path": str(tmp_path)}, ScriptedHandle())
    with pytest.raises(ConfigError, match="mode"):
        benchmark_settings("mmlu", {"mode": "generate"})


@pytest.fixture(scope="module")
def tiny_handle():
    from src.models.hf import load_handle
    from src.models.sources import model_config_by_name

    return load_handle(model_config_by_name("tiny"), CACHE, torch.device("cpu"), trained=False, seed=3)


@torch.no_grad()
def test_shared_prefix_equals_plain_forward(tiny_handle):
    prompts = [build_prompt(q, load_split("data/mmlu", "astronomy", "dev")[:2])
               for q in load_split("data/mmlu", "astronomy", "test")]
    ids = [tiny_handle.encode(prompts[0] + f" {x}")[-1] for x in LETTERS]
    fast = tiny_handle.next_token_logprobs(prompts, ids, batch_size=3, shared_prefix=True)
    plain = tiny_handle.next_token_logprobs(prompts, ids, batch_size=4, shared_prefix=False)
    for prompt, f, p in zip(prompts, fast, plain, strict=True):
        full = tiny_handle.model(torch.tensor([tiny_handle.encode(prompt)])).logits[0, -1]
        reference = torch.log_softmax(full.float(), dim=-1)[ids]
        assert torch.allclose(torch.tensor(f), reference, atol=1e-4)
        assert torch.allclose(torch.tensor(p), reference, atol=1e-4)


@torch.no_grad()
def test_loglikelihood_sums_token_logprobs(tiny_handle):
    context, continuation = "The capital of France is", " Paris, of course"
    [(total, greedy)] = tiny_handle.loglikelihood([(context, continuation)], shared_prefix=False)
    whole = tiny_handle.encode(context + continuation)
    n = len(tiny_handle.encode(context))
    logprobs = torch.log_softmax(tiny_handle.model(torch.tensor([whole])).logits[0].float(), dim=-1)
    expected = sum(float(logprobs[i - 1, whole[i]]) for i in range(n, len(whole)))
    assert total == pytest.approx(expected, abs=1e-3)
    assert greedy == all(int(logprobs[i - 1].argmax()) == whole[i] for i in range(n, len(whole)))
    # the batch + shared-prefix path agrees with the single request
    batch = tiny_handle.loglikelihood([(context, continuation), (context, " Lyon"), (context, " Paris")],
                                      batch_size=2, shared_prefix=True)
    assert batch[0][0] == pytest.approx(total, abs=1e-4)


def test_fast_and_plain_modes_give_the_same_predictions(tiny_handle):
    runs = {}
    for name, extra in {"letter_fast": {"mode": "letter"},
                        "letter_plain": {"mode": "letter", "shared_prefix": False, "batch_size": 1},
                        "loglikelihood": {"mode": "loglikelihood", "choice_text": "letter"}}.items():
        result = run_benchmark("mmlu", {"shots": 5, "batch_size": 3, **extra}, tiny_handle)
        runs[name] = result
    outputs = {name: [p["output"] for p in r.predictions] for name, r in runs.items()}
    assert outputs["letter_fast"] == outputs["letter_plain"] == outputs["loglikelihood"]
    assert len(outputs["letter_fast"]) == 12
    for a, b in zip(runs["letter_fast"].predictions, runs["loglikelihood"].predictions, strict=True):
        assert a["logprobs"] == pytest.approx(b["logprobs"], abs=1e-3)
    metrics = runs["letter_fast"].metrics
    assert metrics["acc_micro"] == pytest.approx(sum(p["correct"] for p in runs["letter_fast"].predictions) / 12)


@pytest.mark.slow
def test_real_model_fast_path_same_predictions():
    """SmolLM2-135M on the shipped sample: the shared-prefix path, a plain batch-1 path and the per-choice
    path pick the same letters (measured here: C x8 then A x4, macro 0.333)."""
    from src.models.hf import load_handle
    from src.models.sources import model_config_by_name

    handle = load_handle(model_config_by_name("smollm2_135m"), CACHE, torch.device("cpu"), trained=False)
    outputs = []
    for extra in ({}, {"shared_prefix": False, "batch_size": 1}, {"mode": "loglikelihood"}):
        result = run_benchmark("mmlu", extra, handle)
        outputs.append([p["output"] for p in result.predictions])
    assert outputs[0] == outputs[1] == outputs[2]
    assert result.metrics["acc_macro"] == pytest.approx(1 / 3)


@torch.no_grad()
def test_packed_suffixes_on_the_cached_prefix_equal_the_uncached_scorer(tiny_handle, tmp_path, monkeypatch):
    """The cached scorer (each subject's 5-shot prefix run once, the questions' suffixes packed into
    rows against its KV cache) against the uncached one (every whole prompt in its own batch row), on
    MMLU-format questions of the bench's length profiles: the same predictions exactly, and log-probs
    within 1e-4. The tolerance: both are float32 and differ only in summation order (attention over
    a cache plus a mask vs one causal pass); measured here: at most 9.5e-7."""
    import src.models.hf as hf
    from bench.eval_speed import write_mmlu_like

    subjects = write_mmlu_like(tmp_path, n_questions=16, seed=1)
    monkeypatch.setattr(hf, "PACK_TOKENS", 150)  # several packs per subject, one suffix alone when it is longer
    settings = {"path": str(tmp_path), "subjects": subjects, "shots": 5, "prompt_format": "plain"}
    cached = run_benchmark("mmlu", {**settings, "batch_size": 3}, tiny_handle)
    plain = run_benchmark("mmlu", {**settings, "shared_prefix": False, "batch_size": 2}, tiny_handle)
    assert [p["output"] for p in cached.predictions] == [p["output"] for p in plain.predictions]
    assert len(cached.predictions) == 16
    for subject in subjects:
        prompts = [p["prompt"] for p in cached.predictions if p["subject"] == subject]
        ids = [tiny_handle.encode(prompts[0] + f" {x}")[-1] for x in LETTERS]
        fast = tiny_handle.next_token_logprobs(prompts, ids, batch_size=3, shared_prefix=True)
        slow = tiny_handle.next_token_logprobs(prompts, ids, batch_size=1, shared_prefix=False)
        assert torch.allclose(torch.tensor(fast), torch.tensor(slow), atol=1e-4, rtol=0)
