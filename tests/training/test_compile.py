"""train.compile: the compiled decoder trains to the eager run's losses, and evaluation gets the eager
decoder back."""

import pytest
import torch

from src.config import TrainConfig
from src.data.packing import pack
from src.data.template import Rendered
from src.models.load import load_model
from src.models.sources import model_config_by_name
from src.training.loop import train
from tests.conftest import CACHE


@pytest.mark.slow  # inductor compiles forward and backward on CPU: about a minute here
def test_compiled_training_gives_the_eager_losses(tokenizer):
    ids = tokenizer("The quick brown fox jumps over the lazy dog. " * 40)["input_ids"]
    rows = pack([Rendered(ids[i:i + 20], ids[i:i + 20]) for i in range(0, 320, 20)], 32)[:6]
    runs = {}
    for compiled in (False, True):
        model = load_model(model_config_by_name("tiny"), tokenizer, CACHE, torch.device("cpu"), seed=0)
        stats = train(model, rows, TrainConfig(rows_per_step=2, block_length=32, compile=compiled), 0,
                      torch.device("cpu"))
        runs[compiled] = stats
        assert stats.compiled is compiled and model.base_model._compiled_call_impl is None  # eager again
    # inductor fuses and reorders float32 arithmetic: per-step losses agree to rounding, not bit for bit
    assert [r["loss"] for r in runs[True].history] == pytest.approx([r["loss"] for r in runs[False].history], rel=1e-4)
