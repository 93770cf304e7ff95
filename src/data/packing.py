"""Packing rendered examples into fixed-length rows that attention cannot cross.

Examples are laid end to end in budget order and cut into rows of `block_length` (the study's
packing; an example that straddles a row boundary continues at the start of the next row). Each
token carries a segment id and a position restarting at 0 per piece; the collator turns segment ids
into a block-diagonal causal mask, because on CPU attention (sdpa/eager) position ids alone do NOT
keep packed examples apart.

The packers work on numpy arrays and emit RowArrays (what the store writes as it is); PackedRow is
the lists the training loop collates, made from a RowArrays by `packed()`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from src.data.template import IGNORE, Rendered


@dataclass
class PackedRow:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    segment_ids: list[int]  # 0, 1, 2, ... per piece within the row


def segments_of(positions: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... per piece of a row: a piece starts where its position is 0."""
    return np.cumsum(positions == 0) - 1


@dataclass
class RowArrays:
    """A row as the packers emit it: int64 arrays, segment ids implied by the positions. Prepare
    packs arrays end to end (what its worker processes send) and the store writes them as they are,
    so no token becomes a Python int on the way."""

    input_ids: np.ndarray
    labels: np.ndarray
    position_ids: np.ndarray

    def packed(self) -> PackedRow:
        return PackedRow(self.input_ids.tolist(), self.labels.tolist(), self.position_ids.tolist(),
                         segments_of(self.position_ids).tolist())

    @property
    def loss_tokens(self) -> int:
        return int(np.count_nonzero(self.labels != IGNORE))


def pack(examples: list[Rendered], block_length: int) -> list[PackedRow]:
    rows: list[PackedRow] = []
    packer = StreamPacker(block_length, lambda row: rows.append(row.packed()))
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
    """`pack`, one example at a time: full rows go to `emit` (a RowArrays) as they fill, so no list of
    the whole set is ever held (prepare writes them straight into the store's arrays). An example's
    ids and labels may be lists or arrays. At each boundary (a token
    count) the example is cut and the partial row is flushed, so each budget increment is packed on its
    own (milestone mode: the rows of the first k increments are those a run on the k-th budget packs).
    `ends[i]`: rows before boundary i."""

    def __init__(self, block_length: int, emit, boundaries: list[int] = (), on_boundary=lambda: None):
        self.block_length, self.emit, self.on_boundary = block_length, emit, on_boundary
        self.edges = sorted(boundaries)
        self.n_boundaries = len(self.edges)
        self.pieces: list[tuple[np.ndarray, np.ndarray]] = []  # (ids, labels) of the row being filled
        self.fill = 0  # its tokens
        self.rows = 0
        self.total = 0
        self.ends: list[int] = []
        self.loss_placed = 0  # labelled tokens placed so far (prepare counts a pre-training mix's with it)

    def add(self, example: Rendered) -> None:
        ids = np.asarray(example.input_ids, dtype=np.int64)
        labels = np.asarray(example.labels, dtype=np.int64)
        start = 0
        while start < len(ids):
            room = self.edges[0] - self.total if self.edges else len(ids) - start
            take = min(room, len(ids) - start)
            if take:
                self._place(ids[start:start + take], labels[start:start + take])
            start += take
            self.total += take
            if self.edges and self.total == self.edges[0]:
                self.edges.pop(0)
                self._flush()
                self.ends.append(self.rows)
                self.on_boundary()  # the rows before the boundary are all emitted, none after it yet

    def _place(self, input_ids: np.ndarray, labels: np.ndarray) -> None:
        start = 0
        while start < len(input_ids):
            room = self.block_length - self.fill
            piece_ids = input_ids[start:start + room]
            piece_labels = labels[start:start + room].copy()
            piece_labels[0] = IGNORE  # nothing in its own example predicts a piece's first token
            self.loss_placed += int(np.count_nonzero(piece_labels != IGNORE))
            self.pieces.append((piece_ids, piece_labels))
            self.fill += len(piece_ids)
            start += len(piece_ids)
            if self.fill == self.block_length:
                self._flush()

    def _flush(self) -> None:
        if self.pieces:
            self.emit(RowArrays(np.concatenate([ids for ids, _ in self.pieces]),
                                np.concatenate([labels for _, labels in self.pieces]),
                                np.concatenate([np.arange(len(ids)) for ids, _ in self.pieces])))
            self.rows += 1
            self.pieces, self.fill = [], 0

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

    def _place(self, input_ids: np.ndarray, labels: np.ndarray) -> None:
        labelled = np.concatenate([[False], labels != IGNORE, [False]])
        edges = np.flatnonzero(labelled[1:] != labelled[:-1])  # where each run of labelled tokens starts and ends
        for i, j in zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True):
            self._turn(input_ids[:i], input_ids[i:j])

    def _turn(self, encoder: np.ndarray, decoder: np.ndarray) -> None:
        if not len(encoder):
            self.counts["dropped_loss_tokens"] += len(decoder)
            return
        kept_encoder, kept_decoder = encoder[-self.block_length:], decoder[:self.block_length]
        self.counts["truncated_tokens"] += len(encoder) - len(kept_encoder) + len(decoder) - len(kept_decoder)
        self.counts["dropped_loss_tokens"] += len(decoder) - len(kept_decoder)
        self.counts["encoder_tokens"] += len(kept_encoder)
        self.counts["decoder_tokens"] += len(kept_decoder)
        self.loss_placed += len(kept_decoder)
        self.emit(RowArrays(np.concatenate([kept_encoder, kept_decoder]),
                            np.concatenate([np.full(len(kept_encoder), IGNORE, dtype=np.int64), kept_decoder]),
                            np.concatenate([np.arange(len(kept_encoder)), np.arange(len(kept_decoder))])))
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
