"""Collate helpers: padding to the batch's longest, the contract's field names, device moves."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from twelve.datasets.batch import (
    MODEL_INPUT_NAMES,
    AnswerBatch,
    model_input_fields,
    pad_regions,
    pad_rows,
    pad_token_ids,
)
from twelve.datasets.regions import ImageRegions


def _regions(n: int, dim: int = 3, image_id: str = "1") -> ImageRegions:
    return ImageRegions(
        image_id,
        np.full((n, dim), n, dtype=np.float32),
        np.full((n, 5), 0.5, dtype=np.float32),
        np.zeros((n, 4), dtype=np.float32),
    )


def test_text_is_padded_at_the_end_to_the_longest() -> None:
    ids, mask = pad_token_ids([np.array([101, 5, 102]), np.array([101, 102])])
    assert ids.tolist() == [[101, 5, 102], [101, 102, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert ids.dtype == mask.dtype == torch.int64


def test_regions_are_padded_to_the_longest_not_to_r() -> None:
    features, locations, mask = pad_regions([_regions(2), _regions(4)])
    assert features.shape == (2, 4, 3)
    assert locations.shape == (2, 4, 5)
    assert features.dtype == locations.dtype == torch.float32
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert features[0, 2:].abs().sum() == 0
    assert locations[0, 2:].abs().sum() == 0
    with pytest.raises(ValueError, match="4-d features, the batch 3-d"):
        pad_regions([_regions(2), _regions(2, dim=4, image_id="x")])


def test_pad_rows() -> None:
    out = pad_rows([np.array([1.0, 2.0], np.float32), np.array([3.0], np.float32)], 3)
    assert out.tolist() == [[1, 2, 0], [3, 0, 0]]
    assert out.dtype == np.float32


def test_model_inputs_carry_the_contract_names() -> None:
    inputs = model_input_fields([np.array([101, 7, 102])] * 2, [_regions(2), _regions(3)])
    assert tuple(inputs) == MODEL_INPUT_NAMES
    assert inputs["token_type_ids"].tolist() == [[0, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="2 texts but 1 images"):
        model_input_fields([np.array([101, 102])] * 2, [_regions(2)])
    batch = AnswerBatch(
        task="vqa",
        **inputs,
        example_ids=("1", "2"),
        target=torch.zeros(2, 4),
        image_ids=("1", "1"),
    )
    assert batch.model_inputs().keys() == set(MODEL_INPUT_NAMES)
    assert batch.batch_size == batch.num_rows == 2
    moved = batch.to("cpu")
    assert isinstance(moved, AnswerBatch)
    assert moved.example_ids == ("1", "2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.task = "gqa"  # type: ignore[misc]
