"""Cross-check (slow: real SmolLM2, lm-eval installed): our MMLU and lm-evaluation-harness's, on the
same local data and the same in-memory model, agree per question and within 1 point of accuracy."""

import pytest
import torch

from src.benchmarks import run_benchmark
from tests.conftest import CACHE

pytestmark = pytest.mark.slow


def test_mmlu_matches_lm_eval(tmp_path):
    pytest.importorskip("lm_eval")
    from src.benchmarks.lm_eval_check import run_lm_eval
    from src.models.hf import load_handle
    from src.models.sources import model_config_by_name

    handle = load_handle(model_config_by_name("smollm2_135m"), CACHE, torch.device("cpu"), trained=False)
    ours = run_benchmark("mmlu", {"shots": 5}, handle)
    theirs = run_lm_eval(handle.model, handle.tokenizer, "data/mmlu", tmp_path, shots=5)
    for subject, acc in theirs["acc"].items():
        assert ours.metrics[f"acc/{subject}"] == pytest.approx(acc, abs=0.01)
        mine = [p["output"] for p in ours.predictions if p["subject"] == subject]
        assert mine == ["ABCD"[i] for i in theirs["predictions"][subject]]
    macro = sum(theirs["acc"].values()) / len(theirs["acc"])
    assert abs(ours.metrics["acc_macro"] - macro) <= 0.01
