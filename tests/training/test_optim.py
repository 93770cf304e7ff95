"""The study's optimizer against a hand computation, and the learning-rate schedules."""

import math

import pytest
import torch

from src.config import TrainConfig
from src.training.optim import PaperAdafactor, lr_multiplier, make_optimizer, warmup_steps


def one_tensor_optimizer(values, **settings):
    param = torch.nn.Parameter(torch.tensor(values, dtype=torch.float32))
    return param, PaperAdafactor([param], **settings)


def step(param, optimizer, grad):
    param.grad = torch.tensor(grad, dtype=torch.float32)
    optimizer.step()


def test_two_steps_match_a_hand_computation():
    param, opt = one_tensor_optimizer([0.3, -0.4], lr=0.01, weight_decay=0.1)  # momentum 0.9, decay 0.95, clip 1

    # Step 1: beta2 = 1 - 1^-0.95 = 0, so v = g^2 and u = g/|g| = [1, -1] (RMS 1: no clip).
    # Scale by lr * RMS(param) = 0.01 * sqrt((0.09 + 0.16) / 2) = 0.0035355339; momentum without
    # debiasing keeps a tenth: m = [0.00035355339, -0.00035355339]; decay lr*wd*param = [0.0003, -0.0004].
    step(param, opt, [0.5, -2.0])
    assert param.tolist() == pytest.approx([0.3 - 0.00035355339 - 0.0003, -0.4 + 0.00035355339 + 0.0004], abs=1e-7)  # float32

    # Step 2, element by element with plain floats.
    p1 = [0.3 - 0.00035355339 - 0.0003, -0.4 + 0.00035355339 + 0.0004]
    g2 = [1.0, 1.0]
    beta2 = 1 - 2 ** -0.95  # 0.482368...
    v = [beta2 * 0.25 + (1 - beta2) * 1.0, beta2 * 4.0 + (1 - beta2) * 1.0]
    u = [g / math.sqrt(vi) for g, vi in zip(g2, v, strict=True)]
    assert math.sqrt(sum(x * x for x in u) / 2) < 1  # RMS(u) 0.99: the clip does not act
    scale = 0.01 * math.sqrt(sum(x * x for x in p1) / 2)
    m = [0.9 * m1 + 0.1 * scale * ui for m1, ui in zip([0.00035355339, -0.00035355339], u, strict=True)]
    expected = [p - mi - 0.01 * 0.1 * p for p, mi in zip(p1, m, strict=True)]
    step(param, opt, g2)
    assert param.tolist() == pytest.approx(expected, abs=1e-7)
    assert opt.state[param]["step"] == 2


def test_update_clip_and_parameter_scale_floor():
    # update_clip 0.5 halves the first update (RMS 1); a zero weight is scaled by the floor 1e-3, not 0
    param, opt = one_tensor_optimizer([0.0, 0.0], lr=0.1, momentum=None, update_clip=0.5)
    step(param, opt, [3.0, -0.2])
    assert param.tolist() == pytest.approx([-0.1 * 1e-3 * 0.5, 0.1 * 1e-3 * 0.5], rel=1e-6)


def test_schedules():
    paper = TrainConfig(warmup_steps=1000, schedule="constant")
    assert lr_multiplier(0, 10, paper) == pytest.approx(0.001)  # a 10-step run never leaves warm-up
    assert lr_multiplier(999, 5000, paper) == 1.0 and lr_multiplier(4999, 5000, paper) == 1.0
    alpaca = TrainConfig(warmup_ratio=0.03, schedule="cosine")
    assert warmup_steps(alpaca, 100) == 3 and warmup_steps(alpaca, 101) == 4
    assert lr_multiplier(2, 100, alpaca) == 1.0
    assert lr_multiplier(3, 100, alpaca) == 1.0  # decay starts after warm-up
    assert lr_multiplier(100, 100, alpaca) == pytest.approx(0.0)
    assert lr_multiplier(3 + 97 // 2, 100, alpaca) == pytest.approx(0.5 * (1 + math.cos(math.pi * 48 / 97)))
    linear = TrainConfig(warmup_steps=0, schedule="linear")
    assert lr_multiplier(25, 100, linear) == pytest.approx(0.75)


def test_the_fused_adamw_steps_as_the_default_one():
    """make_optimizer's AdamW is the fused kernel (faster on CPU and GPU); its steps equal the multi-tensor
    default's to float32 rounding of the same formula (a few ulps of each weight)."""
    torch.manual_seed(0)
    weights = [torch.randn(64, 32), torch.randn(100)]
    fused_params = [torch.nn.Parameter(w.clone()) for w in weights]
    plain_params = [torch.nn.Parameter(w.clone()) for w in weights]
    fused = make_optimizer(fused_params, TrainConfig(lr=1e-2, weight_decay=0.1))
    plain = torch.optim.AdamW(plain_params, lr=1e-2, weight_decay=0.1, foreach=True)
    assert fused.defaults["fused"] is True
    for _ in range(5):
        grads = [torch.randn_like(w) for w in weights]
        for params, opt in ((fused_params, fused), (plain_params, plain)):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            opt.step()
    for a, b, w in zip(fused_params, plain_params, weights, strict=True):
        assert not torch.equal(a, w)  # it moved
        assert (a - b).abs().max() <= 8 * torch.finfo(torch.float32).eps * w.abs().max()
