"""train.attention: the FlexAttention BlockMask is exactly the dense document-causal mask, flex gives the
logits of the dense mask, the padding-free layout loses no example boundary, and a packed example's loss
is its loss alone under every implementation that runs here. Training under flex and flash_varlen needs
a GPU: those tests skip on CPU (not measured on a GPU)."""

import dataclasses
import random

import pytest
import torch
import torch.nn.functional as F

from src.config import ConfigError, TrainConfig
from src.data.conversation import Message as M
from src.data.packing import PackedRow, collate, pack
from src.data.template import IGNORE, TokenizerTemplate, render
from src.models.load import load_model
from src.models.sources import model_config_by_name
from src.training import attention
from src.training.loop import token_loss_sum, train
from tests.conftest import CACHE

CPU = torch.device("cpu")
GPU_ONLY = pytest.mark.skipif(not torch.cuda.is_available(),
                              reason="needs a CUDA GPU: FlexAttention has no backward on CPU and FlashAttention "
                                     "no CPU kernel (not measured on a GPU)")


def random_segments(rng: random.Random, batch: int, length: int) -> tuple[torch.Tensor, list[PackedRow]]:
    """Rows cut into random pieces (lengths 1..length), some rows short and padded by collate."""
    rows = []
    for _ in range(batch):
        n = rng.randint(1, length)
        positions, segments, segment = [], [], 0
        while len(positions) < n:
            piece = min(rng.choice([1, 2, 3, 7, 16, 40, 200]), n - len(positions))
            positions += range(piece)
            segments += [segment] * piece
            segment += 1
        rows.append(PackedRow([5] * n, [5] * n, positions, segments))
    return collate(rows, pad_id=0), rows


def block_mask_elements(block_mask, mask_mod, length: int) -> torch.Tensor:
    """[batch, L, L] what FlexAttention computes from a BlockMask: full blocks all visible, partial blocks
    through mask_mod, every other block skipped."""
    rows = block_mask.kv_num_blocks.shape[0]
    q_block, k_block = block_mask.BLOCK_SIZE
    out = torch.zeros(rows, length, length, dtype=torch.bool)
    q = torch.arange(length)[:, None]
    k = torch.arange(length)[None, :]
    for b in range(rows):
        for qb in range(block_mask.kv_num_blocks.shape[-1]):
            qs = slice(qb * q_block, min((qb + 1) * q_block, length))
            for kind, (counts, indices) in {"partial": (block_mask.kv_num_blocks, block_mask.kv_indices),
                                            "full": (block_mask.full_kv_num_blocks, block_mask.full_kv_indices)}.items():
                for kb in indices[b, 0, qb, :counts[b, 0, qb]].tolist():
                    ks = slice(kb * k_block, min((kb + 1) * k_block, length))
                    if kind == "full":
                        out[b, qs, ks] = True
                    else:
                        out[b, qs, ks] = mask_mod(b, 0, q[qs], k[:, ks])
    return out


@pytest.mark.parametrize("length,block", [(64, 16), (100, 16), (37, 8)])
def test_block_mask_equals_the_dense_mask_for_random_segmentations(length, block):
    rng = random.Random(length)
    for _ in range(4):
        batch, rows = random_segments(rng, 3, length)
        segments = attention.segment_ids(batch["position_ids"])
        dense = attention.dense_mask(segments)
        # the segments read back from positions give collate's mask for every real query; a pad (position 0)
        # becomes a segment of its own, where collate lets trailing pads see each other: neither reaches a
        # real token or a label
        real = torch.tensor([[i < len(r.input_ids) for i in range(segments.shape[1])] for r in rows])
        assert torch.equal(dense[:, 0][real], batch["attention_mask"][:, 0][real])
        assert torch.equal(dense[:, 0][~real], torch.eye(segments.shape[1], dtype=torch.bool).expand_as(dense[:, 0])[~real])
        block_mask = attention.document_block_mask(segments, block_size=block)
        elements = block_mask_elements(block_mask, block_mask.mask_mod, segments.shape[1])
        assert torch.equal(elements, dense[:, 0])


def test_segment_ids_restart_where_positions_do():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 0, 0]])  # two pieces, a one-token piece, two pads
    assert attention.segment_ids(positions).tolist() == [[0, 0, 0, 1, 1, 2, 3, 4]]


def test_auto_picks_the_dense_mask_on_cpu_and_gpu_only_choices_say_why():
    assert attention.resolve("auto", CPU) == "sdpa_mask" and attention.resolve("sdpa_mask", CPU) == "sdpa_mask"
    with pytest.raises(ConfigError, match="train.attention=flex .*no backward on CPU"):
        attention.resolve("flex", CPU)
    with pytest.raises(ConfigError, match="train.attention=flash_varlen needs a CUDA GPU"):
        attention.resolve("flash_varlen", CPU)
    with pytest.raises(ConfigError, match="train.attention: 'flash' is not one of"):
        TrainConfig(attention="flash").validate()


def test_a_gpu_picks_flash_varlen_only_for_16_bit_attention(monkeypatch):
    gpu = torch.device("cuda")  # resolve only reads the device type: this runs on CPU
    monkeypatch.setattr(attention, "flash_attn_available", lambda: True)
    assert attention.resolve("auto", gpu, half=True) == "flash_varlen"
    assert attention.resolve("auto", gpu, half=False) == "flex"  # FlashAttention has no fp32 kernel
    with pytest.raises(ConfigError, match="flash_varlen needs 16-bit attention .*train.precision=bf16"):
        attention.resolve("flash_varlen", gpu, half=False)
    monkeypatch.setattr(attention, "flash_attn_available", lambda: False)
    assert attention.resolve("auto", gpu, half=True) == "flex"
    with pytest.raises(ConfigError, match=r"needs the flash_attn package: pip install '.\[flash\]'"):
        attention.resolve("flash_varlen", gpu)


def tiny(tokenizer, seed=0):
    return load_model(model_config_by_name("tiny"), tokenizer, CACHE, CPU, seed=seed).eval()


def test_flex_forward_gives_the_dense_mask_logits(tokenizer):
    model = tiny(tokenizer)
    batch, rows = random_segments(random.Random(0), 3, 96)
    batch["input_ids"] = torch.randint(0, len(tokenizer), batch["input_ids"].shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        dense = model(**attention.model_inputs(batch, "sdpa_mask")[0]).logits
        before = attention.use(model, "flex")
        flex = model(**attention.model_inputs(batch, "flex")[0]).logits
        attention.restore(model, before)
    assert model.config._attn_implementation == before
    for logits_flex, logits_dense, row in zip(flex, dense, rows, strict=True):  # real tokens (pads: see above)
        n = len(row.input_ids)
        assert (logits_flex[:n] - logits_dense[:n]).abs().max() < 1e-5


def examples_of(tokenizer, n=3):
    fmt = TokenizerTemplate(tokenizer)
    return [render((M("user", f"Question {i}?"), M("assistant", "Answer " * (3 * i + 1))), tokenizer, fmt)
            for i in range(n)]


def per_example_losses(model, row: PackedRow, pad_id: int, implementation: str) -> list[float]:
    batch = collate([row], pad_id)
    inputs, labels = attention.model_inputs(batch, implementation)
    logits = model(**inputs).logits[0, :-1]
    losses = F.cross_entropy(logits, labels[0, 1:], ignore_index=IGNORE, reduction="none")
    segments = torch.tensor(row.segment_ids[1:])
    return [losses[segments == s].sum().item() for s in range(max(row.segment_ids) + 1)]


@pytest.mark.parametrize("implementation", ["sdpa_mask", "flex"])  # the ones whose forward runs on CPU
def test_packed_loss_equals_unpacked_under_each_implementation(tokenizer, implementation):
    model = tiny(tokenizer, seed=2)
    examples = examples_of(tokenizer)
    before = attention.use(model, implementation)
    with torch.no_grad():
        alone = [token_loss_sum(model, collate(pack([e], 512), tokenizer.pad_token_id), implementation).item()
                 for e in examples]
        [row] = pack(examples, 512)
        packed = per_example_losses(model, row, tokenizer.pad_token_id, implementation)
    attention.restore(model, before)
    assert packed == pytest.approx(alone, rel=1e-5)


def test_the_padding_free_layout_keeps_examples_and_rows_apart(tokenizer):
    """flash_varlen's layout (all rows of a micro-batch as one row, boundaries only in the position ids),
    checked on CPU with the dense mask its position ids imply: the loss of a 2-row micro-batch with a short,
    padded row equals the rows' losses one at a time."""
    model = tiny(tokenizer, seed=3)
    rows = pack(examples_of(tokenizer, 5), 48)
    assert len(rows) >= 3 and len(rows[-1].input_ids) < 48  # a straddling example and a padded last row
    batch = collate([rows[0], rows[-1]], tokenizer.pad_token_id)
    inputs, labels = attention.model_inputs(batch, "flash_varlen")
    assert inputs["input_ids"].shape == labels.shape == (1, 2 * 48) and "attention_mask" not in inputs
    inputs["attention_mask"] = attention.dense_mask(attention.segment_ids(inputs["position_ids"]))
    with torch.no_grad():
        logits = model(**inputs).logits[0, :-1]
        flat = F.cross_entropy(logits, labels[0, 1:], ignore_index=IGNORE, reduction="sum").item()
        one_by_one = sum(token_loss_sum(model, collate([r], tokenizer.pad_token_id)).item() for r in (rows[0], rows[-1]))
    assert flat == pytest.approx(one_by_one, rel=1e-5)


def test_training_records_the_implementation_that_ran(tokenizer):
    rows = pack(examples_of(tokenizer, 4), 32)[:4]
    model = tiny(tokenizer).train()
    stats = train(model, rows, TrainConfig(rows_per_step=2, block_length=32), tokenizer.pad_token_id, CPU)
    assert (stats.attention, stats.loss) == ("sdpa_mask", "chunked")
    assert dataclasses.asdict(stats)["attention"] == "sdpa_mask"  # the training record's field


@pytest.mark.slow  # loads SmolLM2-135M (~10 s) and compiles FlexAttention for its shape
def test_flex_forward_gives_the_dense_mask_logits_on_smollm2():
    from src.models.load import load_tokenizer

    cfg = model_config_by_name("smollm2_135m")
    tokenizer = load_tokenizer(cfg, CACHE)
    model = load_model(cfg, tokenizer, CACHE, CPU).eval()
    [row] = pack(examples_of(tokenizer), 512)
    batch = collate([row], tokenizer.pad_token_id)
    with torch.no_grad():
        dense = model(**attention.model_inputs(batch, "sdpa_mask")[0]).logits
        before = attention.use(model, "flex")
        flex = model(**attention.model_inputs(batch, "flex")[0]).logits
        packed = per_example_losses(model, row, tokenizer.pad_token_id, "flex")
        alone = [token_loss_sum(model, collate(pack([e], 512), tokenizer.pad_token_id), "flex").item()
                 for e in examples_of(tokenizer)]
    attention.restore(model, before)
    assert (flex - dense).abs().max() < 1e-4
    assert packed == pytest.approx(alone, rel=1e-4)


def gradients(model, batch, implementation):
    model.zero_grad()
    token_loss_sum(model, batch, implementation).backward()
    return [p.grad.clone() for p in model.parameters()]


@GPU_ONLY
@pytest.mark.parametrize("implementation", ["flex", "flash_varlen"])
def test_gpu_implementations_give_the_dense_mask_gradients(tokenizer, implementation):
    if implementation == "flash_varlen" and not attention.flash_attn_available():
        pytest.skip("flash_attn not installed (pip install '.[flash]')")
    gpu = torch.device("cuda")
    dtype = torch.bfloat16 if implementation == "flash_varlen" else torch.float32  # FlashAttention: 16-bit only
    model = load_model(model_config_by_name("tiny"), tokenizer, CACHE, gpu, seed=4).to(dtype).train()
    rows = pack(examples_of(tokenizer, 6), 64)
    batch = {k: v.to(gpu) for k, v in collate(rows[:3], tokenizer.pad_token_id).items()}
    dense = gradients(model, batch, "sdpa_mask")
    before = attention.use(model, attention.resolve(implementation, gpu))
    other = gradients(model, batch, implementation)
    attention.restore(model, before)
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2  # bf16 keeps 8 bits of mantissa
    for a, b in zip(dense, other, strict=True):
        assert (a - b).abs().max() <= tolerance * max(1.0, a.abs().max().item())


def test_a_failed_run_gives_the_model_its_own_attention_back(tokenizer, monkeypatch):
    # a training-only implementation switched on for the run (here eager, so it runs on CPU), then a
    # failure mid-run: the caller's model must evaluate on its own implementation again
    from src.training import loop

    rows = pack(examples_of(tokenizer, 4), 32)[:4]
    model = tiny(tokenizer).train()
    own = model.config._attn_implementation

    def switch(m, implementation):
        m.set_attn_implementation("eager")
        return own

    monkeypatch.setattr(loop.attention, "use", switch)

    def fail(record):
        assert model.config._attn_implementation == "eager"  # the run's implementation is on
        raise RuntimeError("stopped mid-run")

    with pytest.raises(RuntimeError, match="stopped mid-run"):
        train(model, rows, TrainConfig(rows_per_step=2, block_length=32, log_every=1), tokenizer.pad_token_id, CPU,
              on_step=fail)
    assert own != "eager" and model.config._attn_implementation == own
