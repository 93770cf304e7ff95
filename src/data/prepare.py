"""prepare: load -> normalize -> one seeded shuffle -> token budget -> template + masks -> pack."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from src.config import DataConfig
from src.data.budget import shuffled, take_budget
from src.data.conversation import Conversation
from src.data.packing import PackedRow, pack, packing_efficiency
from src.data.sources import load_source
from src.data.template import ChatFormat, TemplateError, render

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    rows: list[PackedRow]
    examples: int  # conversations (or the cut prefix of the last one) inside the budget
    total_tokens: int  # formatted conversation tokens: what data.amount counts
    loss_tokens: int  # tokens that carry a label (assistant replies and end-of-turn)
    packing_efficiency: float
    template: str
    load_report: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"examples": self.examples, "total_tokens": self.total_tokens, "loss_tokens": self.loss_tokens,
                "rows": len(self.rows), "packing_efficiency": round(self.packing_efficiency, 4),
                "template": self.template, "load": self.load_report}


def prepare(cfg: DataConfig, tokenizer, fmt: ChatFormat, block_length: int) -> PreparedData:
    conversations, report = load_source(cfg.source)
    log.info("loaded %s: read %d, kept %d, dropped %s", cfg.source.name, report.read, report.kept, report.dropped)

    def render_one(conv: Conversation):
        try:
            return render(conv.messages, tokenizer, fmt)
        except TemplateError as err:
            raise TemplateError(f"{conv.origin}: {err}") from err

    order = shuffled(conversations, cfg.shuffle_seed)
    examples = take_budget(order, render_one, cfg.amount, source=f"data source '{cfg.source.name}'")
    rows = pack(examples, block_length)
    loss_tokens = sum(sum(label != -100 for label in r.labels) for r in rows)
    total = sum(len(e.input_ids) for e in examples)
    data = PreparedData(rows=rows, examples=len(examples), total_tokens=total, loss_tokens=loss_tokens,
                        packing_efficiency=packing_efficiency(rows, block_length), template=fmt.name,
                        load_report=report.as_dict())
    log.info("budget %s tokens: %d examples, %d loss-bearing tokens, %d rows of %d (fill %.3f)",
             cfg.amount if cfg.amount is not None else "all", data.examples, loss_tokens, len(rows),
             block_length, data.packing_efficiency)
    return data
