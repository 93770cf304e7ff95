"""Prepare: a cache hit vs a cold load + clean + tokenize + pack of the same data (target >= 10x).

The data is the demo set repeated 30 times (about 645K tokens, ids made unique), so the figure is not
dominated by the fixed costs a hit also pays (hashing the file and the tokenizer)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from src import PROJECT_ROOT
from src.config import DataConfig
from src.data.prepare import prepare
from src.data.sources import source_config_by_name
from src.data.template import chat_format
from src.models.load import load_tokenizer
from src.models.sources import model_config_by_name


def run() -> list[dict]:
    model = model_config_by_name("smollm2_135m")
    tokenizer = load_tokenizer(model, "~/.cache/imitation-gap")
    fmt = chat_format(tokenizer, model.chat_template)
    demo = json.loads((PROJECT_ROOT / "data" / "demo" / "imitation.json").read_text())
    with tempfile.TemporaryDirectory() as cache:
        big = Path(cache) / "demo_x30.json"
        big.write_text(json.dumps([r | {"id": f"{r['id']}_{k}"} for k in range(30) for r in demo]))
        source = source_config_by_name("demo")
        source.path = str(big)
        cfg = DataConfig(source=source, amount=600_000)
        start = time.perf_counter()
        cold = prepare(cfg, tokenizer, fmt, 512, model.context_length, cache_dir=cache)
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        hot = prepare(cfg, tokenizer, fmt, 512, model.context_length, cache_dir=cache)
        hot_s = time.perf_counter() - start
    assert hot.cache == "hit" and [r.input_ids for r in hot.rows] == [r.input_ids for r in cold.rows]
    return [{"name": "prepare 600K tokens (demo x30): cache hit vs cold (s)", "ours": hot_s, "baseline": cold_s,
             "ratio": cold_s / hot_s, "target": ">= 10x", "unit": "seconds (lower is better)"}]
