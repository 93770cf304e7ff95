"""Cross-entropy over the vocabulary projection without the whole [tokens, vocab] logits: `train.loss`.

The head of a 50K-vocabulary model turns each loss-bearing token into 50K float logits, and the usual
loss keeps them (and their softmax gradient) alive through backward: at 2048-token rows that is the
largest tensor of a small model's step. Choices:

- full: head(hidden) then F.cross_entropy, as everyone does.
- chunked: `chunked_linear_cross_entropy` below: a custom autograd function that walks the tokens in
  chunks, and per chunk computes the logits, the loss and, right away, the gradient with respect to the
  hidden states and the head (softmax - one-hot, two matmuls); only the gradients are kept, so the
  peak holds one chunk's logits. No recomputation: the same matmuls as the full loss's forward and
  backward.
- liger: Liger-Kernel's fused linear cross-entropy (Triton, so a GPU only; the optional extra `liger`).
- auto: liger on a GPU where liger_kernel imports, else chunked.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

from src.config import ConfigError

CHOICES = ("auto", "full", "chunked", "liger")
CHUNK_TOKENS = 1024  # logits of one chunk: 1024 x 49152 x 4 bytes = 200 MB for SmolLM2's vocabulary


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def resolve(setting: str, device: torch.device) -> str:
    if setting == "auto":
        return "liger" if device.type == "cuda" and liger_available() else "chunked"
    if setting == "liger" and (device.type != "cuda" or not liger_available()):
        raise ConfigError("train.loss=liger needs a CUDA GPU and the liger_kernel package (pip install '.[liger]'); "
                          "train.loss=chunked gives the same loss without it")
    return setting


def linear_cross_entropy_sum(hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor,
                             implementation: str) -> torch.Tensor:
    """sum over tokens of -log softmax(head(hidden))[target] (float32); hidden [n, d], targets [n] (all real)."""
    if implementation == "full":
        return F.cross_entropy(head(hidden).float(), targets, reduction="sum")
    if implementation == "chunked":
        return chunked_linear_cross_entropy(hidden, head.weight, head.bias, targets)
    if implementation == "liger":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        return LigerFusedLinearCrossEntropyLoss(reduction="sum")(head.weight, hidden, targets, head.bias)
    raise ValueError(f"unknown loss implementation {implementation!r}")


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                 targets: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, bias, targets, chunk or CHUNK_TOKENS)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Forward computes the loss and (when autograd wants them) the input gradients chunk by chunk;
    backward only scales them by the incoming gradient. Matmuls run under the caller's autocast, as
    the head's would; softmax and the loss in float32, as F.cross_entropy(logits.float()) does."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk):
        want_hidden, want_weight, want_bias = ctx.needs_input_grad[:3]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if want_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if want_bias else None
        for start in range(0, hidden.shape[0], chunk):
            h, t = hidden[start:start + chunk], targets[start:start + chunk]
            logits = F.linear(h, weight, bias)
            compute_dtype = logits.dtype  # bf16 under autocast: the head's backward matmuls run in it too
            logits = logits.float()
            log_norm = torch.logsumexp(logits, dim=-1)
            total += (log_norm - logits.gather(1, t[:, None]).squeeze(1)).sum()
            if not (want_hidden or want_weight or want_bias):
                continue
            # d loss / d logits = softmax - one-hot, computed in place over the chunk's logits
            grad_logits = logits.sub_(log_norm[:, None]).exp_()
            grad_logits[torch.arange(len(t), device=t.device), t] -= 1.0
            if want_bias:
                grad_bias += grad_logits.sum(0)
            grad_logits = grad_logits.to(compute_dtype)
            if want_hidden:
                grad_hidden[start:start + chunk] = grad_logits @ weight.to(compute_dtype)
            if want_weight:
                grad_weight += (grad_logits.T @ h.to(compute_dtype)).float()
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.dtypes
        scale = grad_output.float()
        return (grad_hidden * scale.to(grad_hidden.dtype) if grad_hidden is not None else None,
                (grad_weight * scale).to(weight_dtype) if grad_weight is not None else None,
                (grad_bias * scale).to(bias_dtype) if grad_bias is not None else None,
                None, None)
