"""Packing rendered examples into fixed-length rows that attention cannot cross.

Examples are laid end to end in budget order and cut into rows of `block_length` (the study's
packing; an example that straddles a row boundary continues at the start of the next row). Each
token carries a segment id and a position restarting at 0 per piece; the collator turns segment ids
into a block-diagonal causal mask, because on CPU attention (sdpa/eager) position ids alone do NOT
keep packed examples apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from src.data.template import IGNORE, Rendered


@dataclass
class PackedRow:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    segment_ids: list[int]  # 0, 1, 2, ... per piece within the row


def pack(examples: list[Rendered], block_length: int) -> list[PackedRow]:
    rows: list[PackedRow] = []
    packer = StreamPacker(block_length, rows.append)
    for example in examples:
        packer.add(example)
    packer.finish()
    return rows


def packing_efficiency(rows: list[PackedRow], block_length: int) -> float:
    """Real tokens / processed tokens (rows are padded to block_length)."""
    if not rows:
        return 0.0
    return sum(len(r.input_ids) for r in rows) / (len(rows) * block_length)


def collate(rows: list[PackedRow], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad rows to the longest and build the [batch, 1, L, L] block-diagonal causal mask."""
    length = max(len(r.input_ids) for r in rows)
    batch = len(rows)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    labels = torch.full((batch, length), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((batch, length), dtype=torch.long)
    segments = torch.full((batch, length), -1, dtype=torch.long)  # -1: padding
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        input_ids[i, :n] = torch.tensor(r.input_ids)
        labels[i, :n] = torch.tensor(r.labels)
        position_ids[i, :n] = torch.tensor(r.position_ids)
        segments[i, :n] = torch.tensor(r.segment_ids)
    same = segments[:, :, None] == segments[:, None, :]
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool))
    mask = same & causal
    # Padding rows attend to themselves only, so no softmax row is empty (NaN-free).
    mask |= torch.eye(length, dtype=torch.bool)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids,
            "attention_mask": mask[:, None, :, :]}


class StreamPacker:
    """`pack`, one example at a time: full rows go to `emit` as they fill, so no list of the whole set
    is ever held (prepare writes them straight into the store's arrays). At each boundary (a token
    count) the example is cut and the partial row is flushed, so each budget increment is packed on its
    own (milestone mode: the rows of the first k increments are those a run on the k-th budget packs).
    `ends[i]`: rows before boundary i."""

    def __init__(self, block_length: int, emit, boundaries: list[int] = (), on_boundary=lambda: None):
        self.block_length, self.emit, self.on_boundary = block_length, emit, on_boundary
        self.edges = sorted(boundaries)
        self.n_boundaries = len(self.edges)
        self.row = PackedRow([], [], [], [])
        self.rows = 0
        self.total = 0
        self.ends: list[int] = []
        self.loss_placed = 0  # labelled tokens placed so far (prepare counts a pre-training mix's with it)

    def add(self, example: Rendered) -> None:
        start = 0
        while start < len(example.input_ids):
            room = self.edges[0] - self.total if self.edges else len(example.input_ids) - start
            take = min(room, len(example.input_ids) - start)
            if take:
                self._place(example.input_ids[start:start + take], example.labels[start:start + take])
            start += take
            self.total += take
            if self.edges and self.total == self.edges[0]:
                self.edges.pop(0)
                self._flush()
                self.ends.append(self.rows)
                self.on_boundary()  # the rows before the boundary are all emitted, none after it yet

    def _place(self, input_ids: list[int], labels: list[int]) -> None:
        start = 0
        while start < len(input_ids):
            room = self.block_length - len(self.row.input_ids)
            piece_ids = input_ids[start:start + room]
            piece_labels = list(labels[start:start + room])
            piece_labels[0] = IGNORE  # nothing in its own example predicts a piece's first token
            self.loss_placed += len(piece_labels) - piece_labels.count(IGNORE)  # C speed: a row is 2K tokens
            segment = self.row.segment_ids[-1] + 1 if self.row.segment_ids else 0
            self.row.input_ids += piece_ids
            self.row.labels += piece_labels
            self.row.position_ids += list(range(len(piece_ids)))
            self.row.segment_ids += [segment] * len(piece_ids)
            start += len(piece_ids)
            if len(self.row.input_ids) == self.block_length:
                self._flush()

    def _flush(self) -> None:
        if self.row.input_ids:
            self.emit(self.row)
            self.rows += 1
            self.row = PackedRow([], [], [], [])

    def finish(self) -> list[int]:
        """Flush the last row; the row count at each boundary (the end, for boundaries never reached)."""
        self._flush()
        self.ends += [self.rows] * (self.n_boundaries - len(self.ends))  # every boundary past the data
        return self.ends[:self.n_boundaries]


class TurnRows(StreamPacker):
    """The encoder-decoder layout (T5): no packing; one row per assistant reply. The stream is cut at
    the budget boundaries exactly as StreamPacker cuts it (the budget counts the same formatted
    tokens for both architectures, each conversation once), then each piece gives one row per run of
    labelled tokens (a reply and its end-of-turn token): the encoder reads every token of the piece
    before the reply (the history through the user turn and the generation prompt), the decoder the
    reply. A row is stored as encoder then decoder tokens, labels IGNORE on the encoder, positions
    restarting at 0 where the decoder starts (so its segment id is 1: collate_seq2seq splits there).

    What the layout costs or leaves out is counted, never dropped silently: the history is re-read by
    every later turn's encoder (encoder_tokens against the budget's tokens); a reply the budget or a
    boundary cut so that it starts a piece has no history to encode and gives no row
    (dropped_loss_tokens); an encoder longer than block_length keeps its last block_length tokens and a
    decoder its first (truncated_tokens, of which the decoder's count as dropped loss too)."""

    def __init__(self, block_length: int, emit, boundaries: list[int] = (), on_boundary=lambda: None):
        super().__init__(block_length, emit, boundaries, on_boundary)
        self.counts = {"encoder_tokens": 0, "decoder_tokens": 0, "dropped_loss_tokens": 0, "truncated_tokens": 0}

    def _place(self, input_ids: list[int], labels: list[int]) -> None:
        i, n = 0, len(labels)
        while i < n:
            if labels[i] == IGNORE:
                i += 1
                continue
            j = i
            while j < n and labels[j] != IGNORE:
                j += 1
            self._turn(list(input_ids[:i]), list(input_ids[i:j]))
            i = j

    def _turn(self, encoder: list[int], decoder: list[int]) -> None:
        if not encoder:
            self.counts["dropped_loss_tokens"] += len(decoder)
            return
        kept_encoder, kept_decoder = encoder[-self.block_length:], decoder[:self.block_length]
        self.counts["truncated_tokens"] += len(encoder) - len(kept_encoder) + len(decoder) - len(kept_decoder)
        self.counts["dropped_loss_tokens"] += len(decoder) - len(kept_decoder)
        self.counts["encoder_tokens"] += len(kept_encoder)
        self.counts["decoder_tokens"] += len(kept_decoder)
        self.loss_placed += len(kept_decoder)
        self.emit(PackedRow(kept_encoder + kept_decoder, [IGNORE] * len(kept_encoder) + kept_decoder,
                            list(range(len(kept_encoder))) + list(range(len(kept_decoder))),
                            [0] * len(kept_encoder) + [1] * len(kept_decoder)))
        self.rows += 1

    def _flush(self) -> None:
        pass  # every row is emitted whole as its reply is placed


def collate_seq2seq(rows: list[PackedRow], pad_id: int) -> dict[str, torch.Tensor]:
    """Rows of the encoder-decoder layout (TurnRows) as the model takes them: the encoder tokens
    right-padded with their padding mask, the decoder's labels padded with IGNORE (the model shifts
    them right behind its decoder start token)."""
    splits = [r.segment_ids.index(1) if 1 in r.segment_ids else len(r.segment_ids) for r in rows]
    enc_len = max(splits)
    dec_len = max(len(r.input_ids) - s for r, s in zip(rows, splits, strict=True))
    input_ids = torch.full((len(rows), enc_len), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), enc_len), dtype=torch.long)
    labels = torch.full((len(rows), max(dec_len, 1)), IGNORE, dtype=torch.long)
    for i, (r, s) in enumerate(zip(rows, splits, strict=True)):
        input_ids[i, :s] = torch.tensor(r.input_ids[:s])
        attention[i, :s] = 1
        labels[i, :len(r.input_ids) - s] = torch.tensor(r.labels[s:])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
