"""The cheap CPU dropout: drop rate, scaling, gradients, reproducibility, evaluation identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from twelve.model import dropout as dropout_module
from twelve.model.dropout import (
    Dropout,
    dropout,
    dropout_add,
    keep_scale,
    lane_words,
    random_lanes,
)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drop_rate_and_scale(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(200_003)  # not a multiple of 4: the last 64-bit word is partly used
    y = dropout(x, p, training=True)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.005
    kept = y[y != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 65536 / (65536 - round(p * 65536))))
    assert abs(y.mean().item() - 1.0) < 0.01  # unbiased


def test_lanes_are_independent() -> None:
    torch.manual_seed(1)
    scale = keep_scale(torch.empty(400_000), 0.1).view(-1, 4)
    for lane in range(4):
        assert abs((scale[:, lane] == 0).float().mean().item() - 0.1) < 0.005


def test_random_lanes_are_uniform_over_all_16_bits() -> None:
    torch.manual_seed(5)
    lanes = random_lanes(400_001).long()
    assert lanes.shape == (400_001,)
    assert lanes.min().item() == -(2**15)
    assert lanes.max().item() == 2**15 - 1
    for bit in range(16):  # every bit, the sign bit too, is set half the time
        share = ((lanes >> bit) & 1).float().mean().item()
        assert abs(share - 0.5) < 0.005, bit
    assert random_lanes(0).numel() == 0


def test_masks_follow_torch_seed() -> None:
    torch.manual_seed(6)
    first = keep_scale(torch.empty(1000), 0.1)
    second = keep_scale(torch.empty(1000), 0.1)
    torch.manual_seed(6)
    assert torch.equal(keep_scale(torch.empty(1000), 0.1), first)
    assert not torch.equal(first, second)


def test_backward_uses_the_forward_mask() -> None:
    torch.manual_seed(2)
    x = torch.randn(64, 32, requires_grad=True)
    y = dropout(x, 0.3, training=True)
    y.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, torch.where(y == 0, 0.0, y / x.detach()))


def test_dropout_add_matches_its_definition() -> None:
    x = torch.randn(16, 24, requires_grad=True)
    residual = torch.randn(16, 24, requires_grad=True)
    torch.manual_seed(3)
    out = dropout_add(x, residual, 0.2, training=True)
    torch.manual_seed(3)
    scale = keep_scale(x.detach(), 0.2)
    torch.testing.assert_close(out, residual + x * scale)
    out.backward(torch.ones_like(out))
    assert x.grad is not None
    assert residual.grad is not None
    torch.testing.assert_close(x.grad, scale)
    torch.testing.assert_close(residual.grad, torch.ones_like(residual))


def test_mixed_precision_residual_stays_in_the_wider_dtype() -> None:
    x = torch.randn(8, 8).bfloat16()
    residual = torch.randn(8, 8)
    assert dropout_add(x, residual, 0.1, training=True).dtype == torch.float32
    assert dropout(x, 0.1, training=True).dtype == torch.bfloat16


def test_seeded_runs_repeat_and_evaluation_is_identity() -> None:
    module = Dropout(0.1)
    x = torch.randn(1000)
    torch.manual_seed(4)
    first = module(x)
    torch.manual_seed(4)
    assert torch.equal(first, module(x))
    module.eval()
    assert module(x) is x
    assert dropout(x, 0.0, training=True) is x
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\)"):
        Dropout(1.0)


def _splitmix64(state: int, count: int) -> list[int]:
    """SplitMix64's stream as usually written (state += γ; mix), in plain Python integers."""
    mask, words = 2**64 - 1, []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        words.append(z ^ (z >> 31))
    return words


@pytest.mark.parametrize("kernels", [True, False])
def test_lane_words_are_splitmix64(kernels: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not kernels:
        monkeypatch.setattr(dropout_module, "_library", lambda: None)
    elif dropout_module._library() is None:
        pytest.skip("CPU kernels unavailable")
    assert _splitmix64(0, 1) == [0xE220A8397B1DCDAF]  # SplitMix64's published first output
    for seed in (0, 12345, 2**63 - 2):
        words = lane_words(seed, 1003).numpy().view(np.uint64).tolist()
        assert words == _splitmix64(seed, 1003)
    assert lane_words(5, 0).numel() == random_lanes(0).numel() == 0
    lanes = random_lanes(10, seed=99)
    word = _splitmix64(99, 1)[0]
    expected = [(word >> (16 * i)) & 0xFFFF for i in range(4)]
    assert [v & 0xFFFF for v in lanes[:4].tolist()] == expected


def test_kernel_masks_equal_the_numpy_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    if dropout_module._library() is None:
        pytest.skip("CPU kernels unavailable")
    like = torch.empty(3, 4097)  # blocks of 4096 and a partial last word
    torch.manual_seed(7)
    kernel = keep_scale(like, 0.3)
    kernel_lanes = random_lanes(like.numel())
    monkeypatch.setattr(dropout_module, "_library", lambda: None)
    torch.manual_seed(7)
    assert torch.equal(keep_scale(like, 0.3), kernel)
    assert torch.equal(random_lanes(like.numel()), kernel_lanes)
