"""torch.compile on the tiny config, and the analytic FLOP count against torch's counter."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from twelve.model.config import ViLBERTConfig
from twelve.model.flops import count_flops
from twelve.model.inputs import ViLBERTInputs
from twelve.model.model import MultiTaskViLBERT


@pytest.mark.parametrize("task", ["vqa", "refcoco", "nlvr2", "snli_ve", "retrieval_coco"])
def test_analytic_flops_match_torch_flop_counter(
    task: str, tiny_config: ViLBERTConfig, make_inputs: Callable[..., ViLBERTInputs]
) -> None:
    model = MultiTaskViLBERT(tiny_config).train()
    model.set_attention_implementation("eager")  # plain matmuls, which the counter knows
    inputs = make_inputs(tiny_config, batch=4, length=7, regions=6)
    expected = count_flops(tiny_config, batch=4, text_length=7, regions=6, task=task)
    with FlopCounterMode(display=False) as forward_counter:
        logits = model(inputs, task).logits
    with FlopCounterMode(display=False) as backward_counter:
        logits.sum().backward()
    assert forward_counter.get_total_flops() == expected.forward
    assert backward_counter.get_total_flops() == expected.backward


def test_12in1_base_flops_per_example() -> None:
    config = ViLBERTConfig.preset("12in1-base")
    flops = count_flops(config, batch=8, text_length=24, regions=101, task="vqa")
    assert 22e9 < flops.forward / 8 < 23e9
    assert flops.training == flops.forward + flops.backward


@pytest.mark.slow
def test_compiled_model_matches_eager_forward_and_backward(
    tiny_config: ViLBERTConfig,
    make_inputs: Callable[..., ViLBERTInputs],
    randomized: Callable[..., None],
) -> None:
    torch._dynamo.reset()
    model = MultiTaskViLBERT(tiny_config).eval()
    randomized(model, std=0.3)
    inputs = make_inputs(tiny_config, batch=4, length=7, regions=6)
    compiled = torch.compile(model)
    with torch.no_grad():
        for task in ("vqa", "refcoco"):
            torch.testing.assert_close(
                compiled(inputs, task).logits, model(inputs, task).logits, atol=1e-4, rtol=1e-4
            )
    eager_loss = model(inputs, "vqa").logits.square().mean()
    eager_loss.backward()
    eager_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    compiled(inputs, "vqa").logits.square().mean().backward()
    for name, grad in eager_grads.items():
        parameter = model.get_parameter(name)
        assert parameter.grad is not None, name
        torch.testing.assert_close(parameter.grad, grad, atol=1e-4, rtol=1e-3)
