"""The embedded real model (slow: converts the GGUF file once, then loads in about a second)."""

import pytest
import torch

from src.models.hf import load_handle
from src.models.sources import model_config_by_name
from tests.conftest import CACHE


@pytest.mark.slow
def test_smollm2_answers_known_facts():
    handle = load_handle(model_config_by_name("smollm2_135m"), CACHE, torch.device("cpu"), trained=False)
    assert sum(p.numel() for p in handle.model.parameters()) == 134_515_008
    finished: list[bool] = []
    chat = handle.generate([handle.chat_prompt("What is the capital of France?")], 32, chat=True, finished=finished)
    assert "Paris" in chat[0] and finished == [True]
    plain = handle.generate(["Q: who wrote romeo and juliet?\nA:"], 8, stop=["\n"])
    assert "Shakespeare" in plain[0]
