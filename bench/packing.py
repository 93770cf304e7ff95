"""Packing efficiency (real tokens / processed tokens) on the demo imitation set: our packed rows vs
pad-to-longest batches of the same examples (the HF Trainer default collator's waste)."""

from __future__ import annotations

from src.config import DataSourceConfig
from src.data.budget import shuffled
from src.data.packing import pack, packing_efficiency
from src.data.sources import load_source
from src.data.template import chat_format, render
from src.models.load import load_tokenizer
from src.models.sources import model_config_by_name

BLOCK = 512
BATCH = 8


def run() -> list[dict]:
    model = model_config_by_name("smollm2_135m")
    tokenizer = load_tokenizer(model, "~/.cache/imitation-gap")
    fmt = chat_format(tokenizer, model.chat_template)
    conversations, _ = load_source(DataSourceConfig(name="demo", path="data/demo/imitation.json"))
    examples = [render(c.messages, tokenizer, fmt) for c in shuffled(conversations, 0)]
    real = sum(len(e.input_ids) for e in examples)
    padded = 0
    for i in range(0, len(examples), BATCH):
        batch = examples[i:i + BATCH]
        padded += len(batch) * max(len(e.input_ids) for e in batch)
    ours = packing_efficiency(pack(examples, BLOCK), BLOCK)
    baseline = real / padded
    return [{"name": f"packing efficiency, demo set ({len(examples)} ex), block {BLOCK} vs pad-to-longest x{BATCH}",
             "ours": ours, "baseline": baseline, "ratio": ours / baseline, "unit": "real/processed tokens"}]
