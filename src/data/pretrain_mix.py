"""Pre-training text mixed into imitation (data.pretrain_mix): which documents, how many tokens, and
where in the run they go.

How many: `share` is the pre-training share of *all* the tokens a run trains on. data.amount keeps
counting imitation tokens (formatted conversations); a budget of A imitation tokens adds exactly

    pretrain_tokens(A) = floor(A * share / (1 - share))

tokens of the text source, so pre-training / (imitation + pre-training) = share (to one token).
Where: spread evenly over the run, so each step holds about `share` of pre-training text (within a
document or so): after each imitation example, the next whole documents are taken while they fit
under pretrain_tokens(imitation tokens so far). A document is cut only at an edge: at the budget's
end, and at each boundary b of the run (milestone mode, or the grid's smaller amounts in separate
mode), the text is filled to exactly pretrain_tokens(b); the rest of the cut document comes next.
The imitation example that straddles a boundary is cut there too, as the packer cuts it anyway.

Nesting: the rule depends on nothing past the next edge, so the stream of a run on budget b is
exactly the part before boundary b of a run on a larger budget that lists b (packed rows included:
the packer's boundary sits at b + pretrain_tokens(b), where the fill ends); the imitation tokens of
budget b are the first b of any larger budget, and its text tokens the first pretrain_tokens(b) of
the text stream (tests/data/test_pretrain_mix.py).

What a document is: its text tokenized as the tokenizer tokenizes plain text (with its BOS, if it
adds one), then its EOS; labels are the tokens themselves, so every token carries loss except the
first of each packed piece, which nothing in its own document predicts. Documents are packed with
the imitation examples under the same block-diagonal masks: no attention crosses a document.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Iterator
from fractions import Fraction

from src.config import DataConfig, DataSourceConfig
from src.data.budget import BudgetError, shuffled
from src.data.conversation import LoadReport
from src.data.formats import FORMATS, FormatError
from src.data.formats.records import DataError
from src.data.template import Rendered

log = logging.getLogger(__name__)


class TextPiece(Rendered):
    """A rendered pre-training document (or the part of one between two edges)."""


class Rest(Rendered):
    """The rest of an imitation example cut at a boundary (not a new example)."""


def exact_share(share: float) -> Fraction:
    """0.1 as 1/10, not as the binary float nearest it: the token counts are then exact."""
    return Fraction(repr(float(share)))


def pretrain_tokens(imitation_tokens: int, share: float) -> int:
    s = exact_share(share)
    return math.floor(imitation_tokens * s / (1 - s))


def load_texts(cfg: DataSourceConfig) -> tuple[list[tuple[str, str]], LoadReport]:
    """(origin, text) of every document of a `text` source, counting what is dropped (strict: the
    first bad record is an error naming its place)."""
    fmt = FORMATS[cfg.format]
    if not fmt.plain_text:
        raise DataError(f"data.pretrain_mix.source: '{cfg.name}' has format {cfg.format!r}, not text")
    report = LoadReport(source=cfg.name)
    docs: list[tuple[str, str]] = []
    for origin, record in fmt.read(cfg):
        report.read += 1
        try:
            if isinstance(record, FormatError):
                raise record
            docs += [(origin, text) for text in fmt.parse(record, origin, cfg)]
        except FormatError as err:
            if cfg.strict:
                raise DataError(str(err)) from err
            report.drop(err.reason, origin)
    report.kept = len(docs)
    report.steps = {"records_read": report.read, "kept": report.kept}
    if report.read and report.bad / report.read > cfg.max_bad_fraction:
        raise DataError(f"{cfg.path}: {report.bad} of {report.read} records are bad ({report.dropped}), more "
                        f"than data.source.max_bad_fraction={cfg.max_bad_fraction}")
    return docs, report


def render_text(text: str, tokenizer) -> TextPiece:
    ids = list(tokenizer(text)["input_ids"])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return TextPiece(ids, list(ids))


def rendered_texts(docs: list[tuple[str, str]], tokenizer, seed: int) -> Iterator[TextPiece]:
    """The documents in one seeded order, tokenized as they are reached."""
    for _, text in shuffled(docs, seed):
        yield render_text(text, tokenizer)


@dataclasses.dataclass
class Mix:
    """The mix of one prepare: the source, its share, and what it fed (counted by prepare)."""

    source: DataSourceConfig
    share: float
    report: LoadReport | None = None
    tokens: int = 0  # pre-training tokens in the run's rows
    loss_tokens: int = 0  # of those, the ones that carry a label

    @classmethod
    def of(cls, cfg: DataConfig) -> Mix | None:
        mix = cfg.pretrain_mix
        if not mix.active:
            return None
        if mix.resolved is None:
            raise ValueError("data.pretrain_mix was not resolved: build the config with RunConfig.from_dict")
        return cls(mix.resolved, mix.share)

    def stream_edges(self, boundaries: list[int]) -> list[int]:
        """The packer's boundaries (tokens of the mixed stream) for the imitation boundaries."""
        return [b + pretrain_tokens(b, self.share) for b in boundaries]

    def interleave(self, imitation: Iterable[Rendered], tokenizer, seed: int, boundaries: list[int],
                   amount: int | None) -> Iterator[Rendered]:
        """The imitation examples (already cut to the budget) with the text documents between them;
        the text pieces are TextPiece."""
        docs, self.report = load_texts(self.source)
        log.info("pre-training text %s: read %d, kept %d documents (share %g)", self.source.name,
                 self.report.read, self.report.kept, self.share)
        texts = rendered_texts(docs, tokenizer, seed)
        pending: list[TextPiece] = []  # the rest of a document cut at an edge comes first
        state = {"text": 0}

        def next_doc() -> TextPiece | None:
            if pending:
                return pending.pop()
            return next(texts, None)

        def take(limit: int, fill: bool) -> Iterator[TextPiece]:
            """Whole documents while they fit under `limit` text tokens; `fill`: cut one to reach it."""
            while state["text"] < limit:
                doc = next_doc()
                if doc is None:
                    if fill:
                        raise BudgetError(
                            f"data.pretrain_mix: {limit} pre-training tokens (share {self.share:g}) is more than "
                            f"data source '{self.source.name}' holds ({state['text']} tokens in "
                            f"{self.report.kept} documents); lower the share or the amount")
                    return
                room = limit - state["text"]
                if len(doc.input_ids) > room:
                    if not fill:
                        pending.append(doc)
                        return
                    pending.append(TextPiece(doc.input_ids[room:], doc.labels[room:]))
                    doc = TextPiece(doc.input_ids[:room], doc.labels[:room])
                state["text"] += len(doc.input_ids)
                yield doc

        edges = sorted(b for b in boundaries if amount is None or b < amount)
        seen = 0  # imitation tokens so far
        for example in imitation:
            start = 0
            while edges and seen + len(example.input_ids) - start >= edges[0]:
                cut = start + edges[0] - seen  # the example's tokens before the edge
                if cut > start:
                    yield Rendered(example.input_ids[start:cut], example.labels[start:cut])
                seen, start = edges.pop(0), cut
                yield from take(pretrain_tokens(seen, self.share), fill=True)
            if start < len(example.input_ids):
                yield Rest(example.input_ids[start:], example.labels[start:]) if start else example
                seen += len(example.input_ids) - start
                yield from take(pretrain_tokens(seen, self.share), fill=False)
        yield from take(pretrain_tokens(seen, self.share), fill=True)

    def summary(self) -> dict:
        """What results.json records of the mix (prepared data summary's "pretrain")."""
        return {"source": self.source.name, "share": self.share, "tokens": self.tokens,
                "loss_tokens": self.loss_tokens, "load": self.report.as_dict() if self.report else {}}


def cache_part(cfg: DataConfig, fingerprint) -> dict:
    """The mix's part of the prepared data's cache key: nothing when it is off (old keys stay)."""
    mix = Mix.of(cfg)
    if mix is None:
        return {}
    source = dataclasses.asdict(mix.source)
    source.pop("description", None)
    return {"pretrain_mix": {"source": source, "content": fingerprint(mix.source), "share": mix.share}}


def identity(cfg: DataConfig) -> dict | None:
    """The mix's part of the run_id (None when off, so the ids of runs without it are unchanged)."""
    mix = Mix.of(cfg)
    if mix is None:
        return None
    source = dataclasses.asdict(mix.source)
    source.pop("description", None)
    return {"source": source, "share": mix.share}
