"""Parity with the original computation (the eager re-statement in `original_reference.py`)."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import torch

from twelve.model.compat import VILBertForVLTasks
from twelve.model.config import ViLBERTConfig
from twelve.model.inputs import ViLBERTInputs
from twelve.model.model import MultiTaskViLBERT

TOLERANCE = 1e-4
ORIGINAL_SHAPES = {
    0: lambda b, t, r: (b, 3129),
    1: lambda b, t, r: (b, 1533),
    2: lambda b, t, r: (b, 1),
    4: lambda b, t, r: (b, 3),
    5: lambda b, t, r: (b, r, 1601),
    6: lambda b, t, r: (b, r, 1),
    7: lambda b, t, r: (b, t + 1, 60),
    8: lambda b, t, r: (b, t + 1, 1),
}


def _compat(original: dict[str, Any], randomized: Callable[..., None]) -> VILBertForVLTasks:
    model = VILBertForVLTasks(original, num_labels=3129).eval()
    randomized(model)
    return model


def _task_ids(batch: int, token: int = 9) -> torch.Tensor:
    return torch.full((batch, 1), token, dtype=torch.long)


def _run_both(
    model: VILBertForVLTasks,
    reference: ModuleType,
    original: dict[str, Any],
    inputs: ViLBERTInputs,
    task_ids: torch.Tensor | None,
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    args = (
        inputs.input_ids,
        inputs.region_features,
        inputs.region_locations,
        inputs.token_type_ids,
        inputs.text_mask,
        inputs.region_mask,
    )
    with torch.no_grad():
        ours = model(*args, None, task_ids)
        theirs = reference.original_forward(model.state_dict(), original, *args, task_ids)
    return ours, theirs


@pytest.mark.parametrize("batch", [4, 3])
def test_compat_reproduces_the_original_outputs(
    batch: int,
    tiny_original: dict[str, Any],
    reference: ModuleType,
    make_inputs: Callable[..., ViLBERTInputs],
    randomized: Callable[..., None],
) -> None:
    model = _compat(tiny_original, randomized)
    inputs = make_inputs(model.config, batch=batch, length=7, regions=6)
    ours, theirs = _run_both(model, reference, tiny_original, inputs, _task_ids(batch))
    assert len(ours) == 10
    for index in range(9):
        assert ours[index].shape == theirs[index].shape, index
        torch.testing.assert_close(ours[index], theirs[index], atol=TOLERANCE, rtol=TOLERANCE)
    for index, shape in ORIGINAL_SHAPES.items():
        assert tuple(ours[index].shape) == shape(batch, 7, 6), index
    # Output 3: the NLVR2 pair head for an even batch, the pretraining alignment head otherwise.
    assert tuple(ours[3].shape) == ((batch // 2, 2) if batch % 2 == 0 else (batch, 2))
    assert ours[9] == ([], [], [])


def test_compat_odd_batch_output_3_is_the_pretraining_alignment_head(
    tiny_original: dict[str, Any],
    make_inputs: Callable[..., ViLBERTInputs],
    randomized: Callable[..., None],
) -> None:
    model = _compat(tiny_original, randomized)
    inputs = make_inputs(model.config, batch=3)
    with torch.no_grad():
        outputs = model(
            inputs.input_ids,
            inputs.region_features,
            inputs.region_locations,
            inputs.token_type_ids,
            inputs.text_mask,
            inputs.region_mask,
            None,
            _task_ids(3),
        )
        fused = model.fuse(model.bert(inputs, _task_ids(3)))
        torch.testing.assert_close(outputs[3], model.cls.bi_seq_relationship(fused))


@pytest.mark.parametrize(
    "variant",
    [{"fusion_method": "sum"}, {"task_specific_tokens": False}, {"v_biattention_id": [1, 2]}],
)
def test_compat_parity_in_other_configurations(
    variant: dict[str, Any],
    tiny_original: dict[str, Any],
    reference: ModuleType,
    make_inputs: Callable[..., ViLBERTInputs],
    randomized: Callable[..., None],
) -> None:
    original = {**tiny_original, **variant}
    model = _compat(original, randomized)
    inputs = make_inputs(model.config, batch=2)
    task_ids = _task_ids(2) if original["task_specific_tokens"] else None
    ours, theirs = _run_both(model, reference, original, inputs, task_ids)
    for index in range(9):
        torch.testing.assert_close(ours[index], theirs[index], atol=TOLERANCE, rtol=TOLERANCE)


def test_parity_is_exact_in_float64(
    tiny_original: dict[str, Any],
    reference: ModuleType,
    make_inputs: Callable[..., ViLBERTInputs],
    randomized: Callable[..., None],
) -> None:
    model = _compat(tiny_original, randomized).double()
    inputs = make_inputs(model.config, batch=2)
    inputs = ViLBERTInputs(
        input_ids=inputs.input_ids,
        token_type_ids=inputs.token_type_ids,
        text_mask=inputs.text_mask,
        region_features=inputs.region_features.double(),
        region_locations=inputs.region_locations.double(),
        region_mask=inputs.region_mask,
    )
    ours, theirs = _run_both(model, reference, tiny_original, inputs, _task_ids(2))
    for index in range(9):
        torch.testing.assert_close(ours[index], theirs[index].double(), atol=1e-9, rtol=1e-9)


TASK_OUTPUT = {  # task → (index in the original tuple, how to read our logits there)
    "vqa": 0,
    "gqa": 1,
    "retrieval_coco": 2,
    "nlvr2": 3,
    "snli_ve": 4,
    "refcoco": 6,
}


@pytest.mark.parametrize("task", sorted(TASK_OUTPUT))
def test_multitask_model_matches_the_original_per_task(
    task: str,
    tiny_original: dict[str, Any],
    tiny_config: ViLBERTConfig,
    reference: ModuleType,
    make_inputs: Callable[..., ViLBERTInputs],
    randomized: Callable[..., None],
) -> None:
    model = MultiTaskViLBERT(tiny_config).eval()
    randomized(model)
    inputs = make_inputs(tiny_config, batch=4)
    token = tiny_config.tasks[task].token_id
    with torch.no_grad():
        logits = model(inputs, task).logits
        theirs = reference.original_forward(
            model.state_dict(),
            tiny_original,
            inputs.input_ids,
            inputs.region_features,
            inputs.region_locations,
            inputs.token_type_ids,
            inputs.text_mask,
            inputs.region_mask,
            _task_ids(4, token),
        )[TASK_OUTPUT[task]]
    expected = theirs.squeeze(-1) if task in ("retrieval_coco", "refcoco") else theirs
    torch.testing.assert_close(logits, expected, atol=TOLERANCE, rtol=TOLERANCE)


@pytest.mark.parametrize("train", [False, True])
def test_sdpa_and_eager_attention_agree(
    train: bool,
    tiny_config: ViLBERTConfig,
    make_inputs: Callable[..., ViLBERTInputs],
    randomized: Callable[..., None],
) -> None:
    model = MultiTaskViLBERT(tiny_config)
    randomized(model, std=0.3)
    if train:  # gradients agree too (dropout off so both paths see the same computation)
        model = MultiTaskViLBERT(
            tiny_config.model_copy(
                update={
                    "text": tiny_config.text.model_copy(
                        update={"attention_dropout": 0.0, "hidden_dropout": 0.0}
                    ),
                    "vision": tiny_config.vision.model_copy(
                        update={
                            "attention_dropout": 0.0,
                            "hidden_dropout": 0.0,
                            "embedding_dropout": 0.0,
                        }
                    ),
                    "head_dropout": 0.0,
                }
            )
        )
        randomized(model, std=0.3)
        model.train()
    else:
        model.eval()
    inputs = make_inputs(tiny_config, batch=4)
    results = {}
    for implementation in ("sdpa", "eager"):
        model.set_attention_implementation(implementation)
        model.zero_grad()
        logits = model(inputs, "vqa").logits
        if train:
            logits.square().mean().backward()
        results[implementation] = (
            logits.detach(),
            [p.grad.clone() for p in model.parameters() if p.grad is not None],
        )
    torch.testing.assert_close(results["sdpa"][0], results["eager"][0], atol=1e-5, rtol=1e-5)
    assert len(results["sdpa"][1]) == len(results["eager"][1])
    for a, b in zip(results["sdpa"][1], results["eager"][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_attention_maps_are_returned_on_request(
    tiny_config: ViLBERTConfig,
    make_inputs: Callable[..., ViLBERTInputs],
    randomized: Callable[..., None],
) -> None:
    model = MultiTaskViLBERT(tiny_config).eval()
    randomized(model)
    inputs = make_inputs(tiny_config, batch=2, length=7, regions=6)
    with torch.no_grad():
        plain = model(inputs, "vqa")
        mapped = model(inputs, "vqa", output_attentions=True)
    assert plain.attentions is None
    torch.testing.assert_close(plain.logits, mapped.logits, atol=1e-5, rtol=1e-5)
    maps = mapped.attentions
    assert maps is not None
    assert len(maps.text) == tiny_config.text.num_layers
    assert len(maps.vision) == tiny_config.vision.num_layers
    assert len(maps.text_to_vision) == len(maps.vision_to_text) == 2
    assert maps.text[0].shape == (2, 2, 8, 8)
    assert maps.vision[0].shape == (2, 4, 6, 6)
    assert maps.text_to_vision[0].shape == (2, 2, 8, 6)
    assert maps.vision_to_text[0].shape == (2, 2, 6, 8)
    torch.testing.assert_close(maps.text[0].sum(-1), torch.ones(2, 2, 8))
    # padded regions of row 1 get (almost) no attention
    assert maps.text_to_vision[0][1, :, :, 4:].max() < 1e-3
