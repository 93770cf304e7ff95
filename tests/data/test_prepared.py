"""Prepared data as memory-mapped arrays (src/data/prepared.py): narrow dtypes, the same rows as the
uncached prepare, nothing read into memory on a hit."""

import json

import numpy as np

from src.config import DataConfig, DataSourceConfig
from src.data.packing import PackedRow, RowArrays, collate, segments_of
from src.data.prepare import prepare
from src.data.prepared import PreparedRows, RowWriter
from src.data.template import IGNORE, TokenizerTemplate
from tests.conftest import FIXTURES


def _cfg(amount=900):
    return DataConfig(source=DataSourceConfig(name="fx", path=str(FIXTURES / "sharegpt_small.json")), amount=amount)


def test_cached_rows_are_the_uncached_rows_in_narrow_mapped_arrays(tokenizer, tmp_path):
    fmt = TokenizerTemplate(tokenizer)
    plain = prepare(_cfg(), tokenizer, fmt, 128, 2048, cache_dir=None, boundaries=[300, 600])
    cold = prepare(_cfg(), tokenizer, fmt, 128, 2048, cache_dir=str(tmp_path), boundaries=[300, 600])
    hot = prepare(_cfg(), tokenizer, fmt, 128, 2048, cache_dir=str(tmp_path), boundaries=[300, 600])
    assert isinstance(plain.rows, list) and isinstance(hot.rows, PreparedRows) and isinstance(cold.rows, PreparedRows)
    assert list(hot.rows) == list(cold.rows) == plain.rows  # ids, labels, positions and segments, row by row
    assert hot.milestones == plain.milestones
    assert hot.summary() == cold.summary() | {"cache": "hit"} == plain.summary() | {"cache": "hit"}
    entry = json.loads(next((tmp_path / "prepared").glob("*/summary.json")).read_text())
    assert entry["rows"] == len(plain.rows) and entry["total_tokens"] == 900
    rows = hot.rows
    assert isinstance(rows.input_ids, np.memmap) and rows.input_ids.dtype == np.uint16  # SmolLM2: 49,152 ids
    assert rows.loss_mask.dtype == np.uint8 and rows.position_ids.dtype == np.uint16
    assert rows.input_ids.shape == (900,) and rows.lengths.tolist() == [len(r.input_ids) for r in plain.rows]
    assert rows.nbytes == 900 * 5 + 8 * (len(rows) + 1)  # 5 bytes a token, plus the row offsets
    assert rows[-1] == plain.rows[-1] and rows[1:3] == plain.rows[1:3]
    first = collate(rows[:2], tokenizer.pad_token_id)
    assert all((first[k] == collate(plain.rows[:2], tokenizer.pad_token_id)[k]).all() for k in first)


def arrays(row: PackedRow) -> RowArrays:
    return RowArrays(*(np.array(values, dtype=np.int64) for values in (row.input_ids, row.labels, row.position_ids)))


def test_writer_keeps_labels_positions_and_segments_exactly(tmp_path):
    rows = [PackedRow([5, 6, 7, 8], [IGNORE, 6, IGNORE, 8], [0, 1, 0, 1], [0, 0, 1, 1]),
            PackedRow([70000, 3], [IGNORE, 3], [0, 1], [0, 0])]
    writer = RowWriter(tmp_path, vocab_size=70001, block_length=4)
    for row in rows:
        writer.add(arrays(row))
    writer.close()
    mapped = PreparedRows(tmp_path)
    assert mapped.input_ids.dtype == np.uint32  # past 65,536 ids
    assert list(mapped) == rows
    assert segments_of(np.array([0, 1, 2, 0, 0, 1])).tolist() == [0, 0, 0, 1, 2, 2]


def test_a_label_other_than_its_token_is_refused(tmp_path):
    writer = RowWriter(tmp_path, vocab_size=100, block_length=4)
    try:
        writer.add(arrays(PackedRow([1, 2], [IGNORE, 3], [0, 1], [0, 0])))
    except ValueError as err:
        assert "loss mask" in str(err)
    else:
        raise AssertionError("a label the mask cannot hold was accepted")


def test_an_id_past_the_narrow_dtype_is_refused_not_wrapped(tmp_path):
    import pytest

    writer = RowWriter(tmp_path, vocab_size=100, block_length=4)  # uint16: ids up to 65,535
    with pytest.raises(ValueError, match="70000 does not fit uint16"):
        writer.add(arrays(PackedRow([70000, 3], [IGNORE, 3], [0, 1], [0, 0])))
    writer.abandon()
    assert all(handle.closed for handle in writer.parts.values())
