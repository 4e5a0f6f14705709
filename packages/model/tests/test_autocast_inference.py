"""Autocast inference keeps each linear layer's cast weights between calls.

The kept copies must give exactly autocast's own result, and must never be stale: an optimizer
step, `load_state_dict`, `.to()` or an in-place edit of a parameter makes a fresh cast.
"""

from __future__ import annotations

from collections.abc import Callable
from unittest import mock

import pytest
import torch
from torch.nn import functional as F  # noqa: N812 (the universal torch idiom)

import twelve.model.reused_memory as reused_memory
from twelve.model.config import ViLBERTConfig
from twelve.model.inputs import ViLBERTInputs
from twelve.model.model import MultiTaskViLBERT
from twelve.model.reused_memory import Linear


def _autocast_logits(model: MultiTaskViLBERT, inputs: ViLBERTInputs, task: str) -> torch.Tensor:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        return model(inputs, task).logits.float()


def _stock_logits(model: MultiTaskViLBERT, inputs: ViLBERTInputs, task: str) -> torch.Tensor:
    with mock.patch.object(reused_memory, "cast_copies_apply", return_value=False):
        return _autocast_logits(model, inputs, task)


def test_linear_keeps_its_cast_weights_while_they_are_unchanged() -> None:
    torch.manual_seed(0)
    layer = Linear(8, 6)
    x = torch.randn(3, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        first = layer(x)
        copies = layer.memory.cast._copies
        second = layer(x)
        assert layer.memory.cast._copies is copies  # no new cast
        expected = F.linear(x, layer.weight, layer.bias)  # autocast's own casts
    assert first.dtype == torch.bfloat16
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    torch.testing.assert_close(second, expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    "change",
    ["in-place", "optimizer", "load_state_dict", "replace data", "bias only"],
)
def test_a_changed_parameter_is_cast_again(change: str) -> None:
    torch.manual_seed(1)
    layer = Linear(8, 6)
    x = torch.randn(4, 8)

    def run() -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return layer(x)

    before = run()
    if change == "in-place":
        with torch.no_grad():
            layer.weight.mul_(2.0)
    elif change == "optimizer":
        optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
        layer(x).square().sum().backward()
        optimizer.step()
    elif change == "load_state_dict":
        other = Linear(8, 6)
        layer.load_state_dict(other.state_dict())
    elif change == "replace data":
        layer.weight.data = torch.randn(6, 8)
    else:
        with torch.no_grad():
            layer.bias.add_(1.0)
    after = run()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = F.linear(x, layer.weight, layer.bias)
    assert not torch.equal(after, before)
    torch.testing.assert_close(after, expected, rtol=0, atol=0)


def test_no_copies_when_gradients_are_on_or_autocast_is_off() -> None:
    layer = Linear(8, 6)
    x = torch.randn(2, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x)  # gradients on: autocast's per-call casts, nothing kept
    with torch.no_grad():
        layer(x)  # no autocast: the float32 weights themselves
    assert layer.memory.cast._copies == ()


@pytest.mark.parametrize("task", ["vqa", "refcoco"])
def test_model_autocast_inference_equals_the_stock_casts(
    tiny_config: ViLBERTConfig,
    make_inputs: Callable[..., ViLBERTInputs],
    randomized: Callable[..., None],
    task: str,
) -> None:
    model = MultiTaskViLBERT(tiny_config).eval()
    randomized(model, std=0.1)
    inputs = make_inputs(tiny_config)
    expected = _stock_logits(model, inputs, task)
    for _ in range(2):  # the second call runs on the kept copies
        torch.testing.assert_close(_autocast_logits(model, inputs, task), expected, rtol=0, atol=0)
    kept = [layer for layer in model.modules() if getattr(layer, "memory", None) is not None]
    assert any(layer.memory.cast._copies for layer in kept)
    model.train()  # weights are about to change: the copies go
    assert all(layer.memory.cast._copies == () for layer in kept)
