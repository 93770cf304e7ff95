"""train.loss: the chunked linear cross-entropy gives the full computation's loss and gradients, and no
tensor it creates holds more than one chunk's logits."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from src.config import ConfigError, TrainConfig
from src.data.packing import collate, pack
from src.data.template import IGNORE, Rendered
from src.models.load import load_model
from src.models.sources import model_config_by_name
from src.training import loss
from src.training.loop import token_loss_sum
from tests.conftest import CACHE

EPS32 = torch.finfo(torch.float32).eps


def gamma(k: int) -> float:
    """Higham's bound on the relative rounding of a k-term float32 sum: |computed - exact| <= gamma_k * sum|terms|."""
    return k * EPS32 / (1 - k * EPS32)


def problem(n=300, d=32, vocab=1000, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g, requires_grad=True)
    head = torch.nn.Linear(d, vocab, bias=bias)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, d, generator=g) / math.sqrt(d) * 3)  # peaked softmaxes, like a trained head
        if bias:
            head.bias.copy_(torch.randn(vocab, generator=g))
    targets = torch.randint(0, vocab, (n,), generator=g)
    return hidden, head, targets


def loss_and_grads(hidden, head, targets, implementation, scale=1.0):
    for t in (hidden, *head.parameters()):
        t.grad = None
    value = loss.linear_cross_entropy_sum(hidden, head, targets, implementation)
    (scale * value).backward()
    return value.detach(), [hidden.grad.clone(), *(p.grad.clone() for p in head.parameters())]


@pytest.mark.parametrize("bias", [True, False])
def test_chunked_loss_and_gradients_equal_the_full_computation(bias, monkeypatch):
    monkeypatch.setattr(loss, "CHUNK_TOKENS", 64)  # 300 tokens: 4 whole chunks and a partial one
    hidden, head, targets = problem(bias=bias)
    n, d = hidden.shape
    vocab = head.weight.shape[0]
    full, full_grads = loss_and_grads(hidden, head, targets, "full", scale=3.0)
    chunked, chunked_grads = loss_and_grads(hidden, head, targets, "chunked", scale=3.0)
    with torch.no_grad():
        logits = head(hidden)
        probs = logits.softmax(-1)
        # Both compute the same per-token logits (a d-term dot product each), softmax and products; they may
        # differ in the order of every sum. Bounds, each twice Higham's (once for each side's rounding):
        # loss: the n per-token losses, each a logsumexp over the vocabulary
        per_token = torch.logsumexp(logits, -1).abs() + logits.gather(1, targets[:, None]).abs().squeeze(1)
        loss_tol = 2 * gamma(n + vocab + d) * per_token.sum()
        # d loss / d logits = softmax - one-hot, |.| <= 1 per token: a logit's rounding (gamma_d of its terms)
        # moves it by at most that much times the logits' sum of absolute terms
        logit_error = 2 * gamma(d) * (hidden.abs() @ head.weight.abs().T)
        grad_logits_abs = probs + F.one_hot(targets, vocab) + logit_error
        tolerances = [2 * gamma(vocab) * 3 * grad_logits_abs @ head.weight.abs(),  # hidden: a sum over the vocabulary
                      2 * gamma(n) * 3 * grad_logits_abs.T @ hidden.abs()]  # head: a sum over the tokens
        if bias:
            tolerances.append(2 * gamma(n) * 3 * grad_logits_abs.sum(0))
    assert abs(chunked - full) <= loss_tol
    for name, a, b, tol in zip(["hidden", "weight", "bias"], chunked_grads, full_grads, tolerances, strict=False):
        assert ((a - b).abs() <= tol).all(), name
    # the tolerance is far below what a wrong chunk boundary would move: dropping the last chunk's tokens
    short, _ = loss_and_grads(hidden[:256].detach().requires_grad_(), head, targets[:256], "full")
    assert abs(short - full) > 100 * loss_tol


class LargestTensor(TorchDispatchMode):
    """The largest number of elements of any tensor an operation returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_chunked_loss_never_holds_all_logits(monkeypatch):
    monkeypatch.setattr(loss, "CHUNK_TOKENS", 64)
    hidden, head, targets = problem(n=640, d=16, vocab=2000)
    sizes = {}
    for implementation in ("full", "chunked"):
        with LargestTensor() as seen:
            loss.linear_cross_entropy_sum(hidden, head, targets, implementation).backward()
        sizes[implementation] = seen.largest
    assert sizes["full"] == 640 * 2000  # the [tokens, vocab] logits
    assert sizes["chunked"] == 64 * 2000  # one chunk's


def test_bf16_autocast_matches_the_full_loss_to_bf16_rounding():
    hidden, head, targets = problem(bias=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        full, full_grads = loss_and_grads(hidden, head, targets, "full")
        chunked, chunked_grads = loss_and_grads(hidden, head, targets, "chunked")
    # bf16 keeps 8 bits: the logits themselves carry ~2^-8 relative error, identical on both sides here
    # (same matmul inputs), so what differs is the accumulation order in float32
    assert chunked == pytest.approx(full.item(), rel=1e-5)
    for a, b in zip(chunked_grads, full_grads, strict=True):
        assert (a.float() - b.float()).abs().max() <= 2 ** -7 * b.float().abs().max()


def test_the_loop_loss_is_the_same_with_chunks(tokenizer, monkeypatch):
    monkeypatch.setattr(loss, "CHUNK_TOKENS", 16)
    model = load_model(model_config_by_name("tiny"), tokenizer, CACHE, torch.device("cpu"), seed=1)
    examples = [Rendered(list(range(5, 45)), [IGNORE] * 12 + list(range(17, 45))),
                Rendered(list(range(50, 81)), [IGNORE] * 4 + list(range(54, 81)))]
    batch = collate(pack(examples, 32), tokenizer.pad_token_id)
    results = {}
    for implementation in ("full", "chunked"):
        model.zero_grad()
        value = token_loss_sum(model, batch, "sdpa_mask", implementation)
        value.backward()
        results[implementation] = (value.item(), [p.grad.clone() for p in model.parameters()])
    assert results["chunked"][0] == pytest.approx(results["full"][0], rel=1e-6)
    # per tensor, relative to its largest entry: the head's gradient is a sum over the batch's loss tokens in
    # another order (gamma_n, 6e-6 for these ~50), carried back through two layers; a wrong chunk moves it by O(1)
    n = int((batch["labels"][:, 1:] != IGNORE).sum())
    for a, b in zip(results["chunked"][1], results["full"][1], strict=True):
        assert (a - b).abs().max() <= 2 * gamma(n) * b.abs().max()


def test_auto_is_chunked_on_cpu_and_liger_says_what_it_needs():
    assert loss.resolve("auto", torch.device("cpu")) == "chunked"
    with pytest.raises(ConfigError, match="train.loss=liger needs a CUDA GPU and the liger_kernel package"):
        loss.resolve("liger", torch.device("cpu"))
    with pytest.raises(ConfigError, match="train.loss: 'fused' is not one of"):
        TrainConfig(loss="fused").validate()
