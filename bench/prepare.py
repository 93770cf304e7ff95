"""Prepare: a cache hit vs a cold load + clean + tokenize + pack of the same data (target >= 10x)."""

from __future__ import annotations

import tempfile
import time

from src.config import DataConfig
from src.data.prepare import prepare
from src.data.sources import source_config_by_name
from src.data.template import chat_format
from src.models import load_tokenizer, model_config_by_name


def run() -> list[dict]:
    model = model_config_by_name("smollm2_135m")
    tokenizer = load_tokenizer(model, "~/.cache/imitation-gap")
    fmt = chat_format(tokenizer, model.chat_template)
    cfg = DataConfig(source=source_config_by_name("demo"), amount=20_000)
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        cold = prepare(cfg, tokenizer, fmt, 512, model.context_length, cache_dir=cache)
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        hot = prepare(cfg, tokenizer, fmt, 512, model.context_length, cache_dir=cache)
        hot_s = time.perf_counter() - start
    assert hot.cache == "hit" and [r.input_ids for r in hot.rows] == [r.input_ids for r in cold.rows]
    return [{"name": "prepare 20K demo tokens: cache hit vs cold (s)", "ours": hot_s, "baseline": cold_s,
             "ratio": cold_s / hot_s, "target": ">= 10x", "unit": "seconds (lower is better)"}]
