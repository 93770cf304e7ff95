"""Packed rows as memory-mapped arrays: the prepared data's entry in the store, and how training
reads it.

An entry holds, for all rows laid end to end:

    input_ids.npy      token ids in the narrowest unsigned dtype the vocabulary allows (uint16 for
                       vocabularies up to 65,536, else uint32)
    loss_mask.npy      uint8, 1 where the token is its own label (packing only ever labels a token
                       with itself or IGNORE), so labels need no array of their own
    position_ids.npy   positions within each piece, uint16 (uint32 past 65,535-token rows); segment
                       ids are derived from them: a new piece starts where the position is 0
    row_offsets.npy    int64, n_rows + 1: row i is tokens [offsets[i], offsets[i + 1])
    summary.json       counts, packing, the load report, milestones

That is 5 bytes a token (uint16 vocabularies), mapped rather than read: opening an entry copies
nothing and tokenizes nothing, and every process of a node that opens it shares one copy in the
OS page cache. A row becomes a PackedRow (the lists the loop collates) only when a step asks for it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from src.data.packing import PackedRow, RowArrays
from src.data.template import IGNORE

ARRAYS = ("input_ids", "loss_mask", "position_ids", "row_offsets")


def id_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def position_dtype(block_length: int) -> np.dtype:
    return np.dtype(np.uint16) if block_length <= 1 << 16 else np.dtype(np.uint32)


class PreparedRows(Sequence[PackedRow]):
    """The rows of an entry, read from its memory maps; rows[i] is a PackedRow built on demand."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.input_ids, self.loss_mask, self.position_ids, self.offsets = (
            np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAYS)
        self.lengths = np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _row(self, i: int) -> PackedRow:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        ids = np.asarray(self.input_ids[a:b], dtype=np.int64)
        return RowArrays(ids, np.where(self.loss_mask[a:b] != 0, ids, IGNORE),
                         np.asarray(self.position_ids[a:b], dtype=np.int64)).packed()

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._row(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._row(index)

    def __iter__(self) -> Iterator[PackedRow]:
        return (self._row(i) for i in range(len(self)))

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and list(self) == list(other)

    __hash__ = None

    @property
    def nbytes(self) -> int:
        """Bytes of the entry's arrays (mapped: the OS pages in what is read)."""
        return sum(a.nbytes for a in (self.input_ids, self.loss_mask, self.position_ids, self.offsets))


class RowWriter:
    """Appends packed rows to an entry's arrays in a folder, a block at a time, so writing holds one
    block in memory, never the whole set."""

    def __init__(self, folder: Path, vocab_size: int, block_length: int):
        self.folder, self.vocab_size = folder, vocab_size
        self.dtypes = {"input_ids": id_dtype(vocab_size), "loss_mask": np.dtype(np.uint8),
                       "position_ids": position_dtype(block_length)}
        self.parts = {name: open(folder / f".{name}.raw", "wb") for name in self.dtypes}
        self.lengths: list[int] = []
        self.tokens = 0

    def add(self, row: RowArrays) -> None:
        ids = row.input_ids
        mask = row.labels != IGNORE
        if not np.array_equal(row.labels[mask], ids[mask]):
            raise ValueError("a packed row labels a token with another token: the loss mask cannot hold it")
        if ids.size and (ids.min() < 0 or ids.max() > np.iinfo(self.dtypes["input_ids"]).max):
            # len(tokenizer) understated the vocabulary: a narrow dtype would wrap the id silently
            raise ValueError(f"token id {int(ids.max())} does not fit {self.dtypes['input_ids']} (vocabulary "
                             f"{self.vocab_size}): the tokenizer's length understates its ids")
        for name, values in (("input_ids", ids), ("loss_mask", mask), ("position_ids", row.position_ids)):
            self.parts[name].write(values.astype(self.dtypes[name]).tobytes())
        self.lengths.append(len(ids))
        self.tokens += len(ids)

    def abandon(self) -> None:
        """A prepare that failed: the raw files' handles closed (the store removes the folder)."""
        for handle in self.parts.values():
            handle.close()

    def close(self) -> None:
        """Each raw file becomes a .npy array: a header, then the same bytes, copied a block at a time."""
        for name, handle in self.parts.items():
            handle.close()
            raw = self.folder / f".{name}.raw"
            header = {"descr": np.lib.format.dtype_to_descr(self.dtypes[name]), "fortran_order": False,
                      "shape": (self.tokens,)}
            with open(self.folder / f"{name}.npy", "wb") as out, open(raw, "rb") as source:
                np.lib.format.write_array_header_1_0(out, header)
                shutil.copyfileobj(source, out, 1 << 22)
            raw.unlink()
        np.save(self.folder / "row_offsets.npy", np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)]))
