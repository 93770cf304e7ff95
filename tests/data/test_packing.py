"""Packing: attention never crosses examples, so per-example losses are the same packed or alone."""

import pytest
import torch

from src.data.conversation import Message as M
from src.data.packing import collate, pack, packing_efficiency
from src.data.template import IGNORE, Rendered, TokenizerTemplate, render
from src.models.load import load_model
from src.models.sources import model_config_by_name
from src.training.loop import token_loss_sum
from tests.conftest import CACHE


def example(n, start):
    return Rendered(list(range(start, start + n)), list(range(start, start + n)))


def test_rows_positions_segments_and_first_labels():
    rows = pack([example(5, 10), example(7, 20), example(6, 40)], block_length=8)
    assert [len(r.input_ids) for r in rows] == [8, 8, 2]
    assert rows[0].input_ids == [10, 11, 12, 13, 14, 20, 21, 22]
    assert rows[0].position_ids == [0, 1, 2, 3, 4, 0, 1, 2]
    assert rows[0].segment_ids == [0, 0, 0, 0, 0, 1, 1, 1]
    assert rows[1].position_ids == [0, 1, 2, 3, 0, 1, 2, 3]  # the straddling example restarts at 0
    # the first token of every piece has no predecessor in its own example: no label
    assert rows[0].labels == [IGNORE, 11, 12, 13, 14, IGNORE, 21, 22]
    assert rows[1].labels == [IGNORE, 24, 25, 26, IGNORE, 41, 42, 43]
    assert packing_efficiency(rows, 8) == 18 / 24


def test_collate_mask_is_block_diagonal_causal():
    rows = pack([example(2, 1), example(3, 5)], block_length=8)
    mask = collate(rows, pad_id=0)["attention_mask"][0, 0]
    expected = torch.tensor([
        [1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask, expected)


def test_packed_loss_equals_unpacked(tokenizer):
    model = load_model(model_config_by_name("tiny"), tokenizer, CACHE, torch.device("cpu")).eval()
    fmt = TokenizerTemplate(tokenizer)
    examples = [render((M("user", f"Question {i}?"), M("assistant", "Answer " * (i + 1))), tokenizer, fmt)
                for i in range(3)]
    with torch.no_grad():
        alone = [token_loss_sum(model, collate(pack([e], 512), tokenizer.pad_token_id)).item() for e in examples]
        packed_rows = pack(examples, 512)
        assert len(packed_rows) == 1
        batch = collate(packed_rows, tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"]).logits[0]
        losses = torch.nn.functional.cross_entropy(logits[:-1], batch["labels"][0, 1:], ignore_index=IGNORE,
                                                   reduction="none")
        segments = torch.tensor(packed_rows[0].segment_ids[1:])
        packed = [losses[segments == s].sum().item() for s in range(3)]
        # without the block-diagonal mask, later examples see earlier ones and their loss moves
        leaky = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        leaky_losses = torch.nn.functional.cross_entropy(leaky[:-1], batch["labels"][0, 1:], ignore_index=IGNORE,
                                                         reduction="none")
    for a, p in zip(alone, packed, strict=True):
        assert abs(a - p) < 1e-3 * max(1.0, abs(a))
    assert abs(leaky_losses[segments == 2].sum().item() - alone[2]) > 1e-3


def test_head_on_labelled_positions_only_gives_the_full_loss(tokenizer):
    """token_loss_sum projects only positions whose next token has a label; the loss and the gradients
    equal the full forward's (the path a wrapped model takes)."""
    model = load_model(model_config_by_name("tiny"), tokenizer, CACHE, torch.device("cpu"), seed=1)
    examples = [Rendered(list(range(5, 25)), [IGNORE] * 12 + list(range(17, 25))),
                Rendered(list(range(30, 41)), [IGNORE] * 4 + list(range(34, 41)))]
    batch = collate(pack(examples, 64), tokenizer.pad_token_id)

    class Wrapped(torch.nn.Module):  # not a PreTrainedModel: takes the full-forward path
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **kwargs):
            return self.inner(**kwargs)

    fast = token_loss_sum(model, batch)
    fast.backward()
    fast_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    full = token_loss_sum(Wrapped(model), batch)
    full.backward()
    assert fast.item() == pytest.approx(full.item(), rel=1e-6)
    for a, p in zip(fast_grads, model.parameters(), strict=True):
        assert torch.allclose(a, p.grad, atol=1e-6)


def test_every_boundary_past_the_data_ends_at_the_last_row():
    # data.amount=all with two milestones beyond the source: both end where the data does
    from src.data.packing import StreamPacker
    from src.data.template import Rendered

    rows = []
    packer = StreamPacker(4, rows.append, boundaries=[3, 10, 20])
    packer.add(Rendered(input_ids=[1, 2, 3, 4, 5], labels=[1, 2, 3, 4, 5]))
    assert packer.finish() == [1, 2, 2]
    assert [r.input_ids.tolist() for r in rows] == [[1, 2, 3], [4, 5]]


@pytest.mark.parametrize("layout", ["stream", "turns"])
def test_arrays_from_the_workers_pack_to_the_same_rows_as_lists(layout):
    # prepare's workers send int64 arrays (src/data/prepare.py expand), a one-process prepare lists:
    # both layouts must make the same rows, boundaries, and counts from either
    import numpy as np

    from src.data.packing import StreamPacker, TurnRows

    labels = [IGNORE, IGNORE, 12, 13, IGNORE, 15, 16, 17, IGNORE, 19]
    examples = [Rendered(list(range(10 * k, 10 * k + 10)), [v + 10 * (k - 1) if v != IGNORE else v for v in labels])
                for k in (1, 2, 3)]

    def rows_of(items):
        rows = []
        packer = (StreamPacker if layout == "stream" else TurnRows)(4, lambda r: rows.append(r.packed()),
                                                                   boundaries=[7, 18])
        for item in items:
            packer.add(item)
        return rows, packer.finish(), packer.loss_placed, getattr(packer, "counts", None)

    as_lists = rows_of(examples)
    as_arrays = rows_of([Rendered(np.array(e.input_ids), np.array(e.labels)) for e in examples])
    assert as_arrays == as_lists
    rows, ends, loss_placed, _ = as_lists
    if layout == "stream":  # cut at 7 and 18 tokens; rows of 4
        assert [r.input_ids for r in rows[:3]] == [[10, 11, 12, 13], [14, 15, 16], [17, 18, 19, 20]]
        assert ends == [2, 5] and loss_placed == sum(len(r.labels) - r.labels.count(IGNORE) for r in rows)
    else:  # one row per run of labelled tokens, its history (within the piece) in the encoder, 4 tokens at most
        assert [r.input_ids for r in rows[:2]] == [[10, 11, 12, 13], [11, 12, 13, 14, 15, 16]]
        assert rows[1].labels == [IGNORE] * 4 + [15, 16] and rows[1].segment_ids == [0, 0, 0, 0, 1, 1]
