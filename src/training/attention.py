"""How attention keeps packed examples apart: `train.attention`.

A packed row holds several examples end to end; a token may attend only to earlier tokens of its own
example (document-causal). Three ways to get that, chosen by `train.attention`:

- sdpa_mask: a dense [batch, 1, L, L] boolean block-diagonal mask (src/data/packing.py collate) through
  PyTorch SDPA. Runs everywhere; the explicit mask keeps SDPA off its flash kernels, and its memory
  grows with L^2.
- flex: PyTorch FlexAttention with a BlockMask built from the rows' segment ids (transformers'
  `flex_attention` implementation, compiled once by transformers): fully masked blocks are skipped.
  Forward runs on CPU; its backward needs a GPU ("FlexAttention does not support backward on CPU").
- flash_varlen: transformers' padding-free path: the micro-batch is laid out as one row of
  concatenated examples, and FlashAttention's variable-length kernel finds the example boundaries
  from the position ids (each example restarts at 0). Needs a GPU and the flash_attn package (the
  optional extra `flash`).
- auto: sdpa_mask on CPU; on a GPU flash_varlen where flash_attn imports, else flex.

Segment ids are read back from the position ids (a new piece starts wherever a position is 0), so the
collated batch needs nothing new; a pad (position 0) becomes a segment of its own and attends only to
itself, exactly as the dense mask has it.
"""

from __future__ import annotations

import importlib.util

import torch

from src.config import ConfigError

CHOICES = ("auto", "sdpa_mask", "flex", "flash_varlen")
# train.attention -> transformers' attn_implementation name
HF_IMPLEMENTATION = {"sdpa_mask": "sdpa", "flex": "flex_attention", "flash_varlen": "flash_attention_2"}


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def resolve(setting: str, device: torch.device, half: bool = True) -> str:
    """The implementation that runs for `train.attention` on `device` (auto picks; others are checked).
    `half`: the attention runs in bf16/fp16 (train.precision=bf16 or 16-bit weights), which FlashAttention needs."""
    if setting == "auto":
        if device.type != "cuda":
            return "sdpa_mask"
        return "flash_varlen" if flash_attn_available() and half else "flex"
    if setting == "flash_varlen":
        if device.type != "cuda":
            raise ConfigError("train.attention=flash_varlen needs a CUDA GPU (FlashAttention has no CPU kernel); "
                              "use train.attention=sdpa_mask or auto on CPU")
        if not flash_attn_available():
            raise ConfigError("train.attention=flash_varlen needs the flash_attn package: "
                              "pip install '.[flash]' (or train.attention=flex)")
        if not half:
            raise ConfigError("train.attention=flash_varlen needs 16-bit attention (FlashAttention has no fp32 "
                              "kernel): set train.precision=bf16, or train.attention=flex")
    if setting == "flex" and device.type != "cuda":
        raise ConfigError("train.attention=flex trains only on a GPU: FlexAttention has no backward on CPU "
                          "(torch raises 'FlexAttention does not support backward on CPU'); use sdpa_mask or auto")
    return setting


def use(model: torch.nn.Module, implementation: str) -> str | None:
    """Switch a transformers model to `implementation`; returns the attn_implementation it had, to restore
    after training (evaluation and generation run on the model's own), or None where nothing changed:
    sdpa_mask keeps the model's own implementation (sdpa or eager; both take the dense mask)."""
    if implementation == "sdpa_mask":
        return None
    if not hasattr(model, "set_attn_implementation"):
        raise ConfigError(f"train.attention={implementation} needs a transformers model; use train.attention=sdpa_mask")
    before = model.config._attn_implementation
    model.set_attn_implementation(HF_IMPLEMENTATION[implementation])
    return before


def restore(model: torch.nn.Module, before: str | None) -> None:
    if before is not None:
        model.set_attn_implementation(before)


def segment_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """[batch, L] segment ids, 0, 1, 2, ... per row: a new segment wherever the position restarts at 0."""
    return torch.cumsum(position_ids == 0, dim=-1) - 1


def dense_mask(segments: torch.Tensor) -> torch.Tensor:
    """[batch, 1, L, L] document-causal boolean mask (True: may attend) from segment ids."""
    length = segments.shape[-1]
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=segments.device))
    return ((segments[:, :, None] == segments[:, None, :]) & causal)[:, None]


def document_block_mask(segments: torch.Tensor, block_size: int = 128):
    """FlexAttention BlockMask of the document-causal mask: query q may see key k iff k <= q and both lie in
    the same segment. create_block_mask evaluates the mask eagerly (a [batch, L, L] boolean, 16 MB for 4 rows
    of 2048, freed at once): its compiled evaluation keeps no such tensor but costs 20-30 s of compilation
    per new shape on CPU, more than the whole mask costs."""
    from torch.nn.attention.flex_attention import create_block_mask

    def document_causal(batch, head, q, k):
        return (k <= q) & (segments[batch, q] == segments[batch, k])

    batch, length = segments.shape
    return create_block_mask(document_causal, B=batch, H=None, Q_LEN=length, KV_LEN=length,
                             device=segments.device, BLOCK_SIZE=block_size, _compile=False)


def model_inputs(batch: dict[str, torch.Tensor], implementation: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(the model's keyword inputs, the labels aligned with them) for a collated micro-batch."""
    labels = batch["labels"]
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    if implementation == "sdpa_mask":
        inputs["attention_mask"] = batch["attention_mask"]
    elif implementation == "flex":
        inputs["attention_mask"] = document_block_mask(segment_ids(batch["position_ids"]))
    elif implementation == "flash_varlen":
        # One row of all the micro-batch's tokens: the first token of every row has position 0 and label
        # IGNORE (src/data/packing.py), so no loss crosses a row boundary and no attention does either.
        inputs = {key: value.reshape(1, -1) for key, value in inputs.items()}
        labels = labels.reshape(1, -1)
    else:
        raise ValueError(f"unknown attention implementation {implementation!r}")
    return inputs, labels
