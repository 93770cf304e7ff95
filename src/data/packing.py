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
    row = PackedRow([], [], [], [])
    for example in examples:
        start = 0
        while start < len(example.input_ids):
            room = block_length - len(row.input_ids)
            piece_ids = example.input_ids[start:start + room]
            piece_labels = list(example.labels[start:start + room])
            # The first token of a piece has no predecessor in its own example: nothing predicts it.
            piece_labels[0] = IGNORE
            segment = row.segment_ids[-1] + 1 if row.segment_ids else 0
            row.input_ids += piece_ids
            row.labels += piece_labels
            row.position_ids += list(range(len(piece_ids)))
            row.segment_ids += [segment] * len(piece_ids)
            start += len(piece_ids)
            if len(row.input_ids) == block_length:
                rows.append(row)
                row = PackedRow([], [], [], [])
    if row.input_ids:
        rows.append(row)
    return rows


def split_at(examples: list[Rendered], boundaries: list[int]) -> list[list[Rendered]]:
    """The token stream cut at each boundary (a token count): an example that straddles one is cut in
    two, so each increment holds exactly its tokens."""
    parts: list[list[Rendered]] = [[]]
    edges = sorted(boundaries)
    total = 0
    for example in examples:
        start = 0
        while start < len(example.input_ids):
            room = edges[0] - total if edges else len(example.input_ids) - start
            take = min(room, len(example.input_ids) - start)
            if take:
                parts[-1].append(Rendered(example.input_ids[start:start + take], example.labels[start:start + take]))
            start += take
            total += take
            if edges and total == edges[0]:
                edges.pop(0)
                parts.append([])
    return parts


def pack_increments(examples: list[Rendered], block_length: int, boundaries: list[int]) -> tuple[list[PackedRow], list[int]]:
    """Pack each budget increment on its own (milestone mode): the rows of the first k increments are
    then exactly the rows a run on the k-th budget packs, and no row mixes tokens of two increments.
    Returns the rows and, per boundary, how many rows lie before it."""
    rows: list[PackedRow] = []
    ends: list[int] = []
    for part in split_at(examples, boundaries):
        rows += pack(part, block_length)
        ends.append(len(rows))
    return rows, ends[:len(boundaries)]


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
