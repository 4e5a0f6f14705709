"""Fixtures of twelve-model tests: a tiny original config, random weights, inputs, the reference."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from twelve.model.config import ViLBERTConfig
from twelve.model.inputs import ViLBERTInputs

_REFERENCE_NAME = "twelve_model_tests_original_reference"
HERE = Path(__file__).parent

# A tiny original-format config: every width differs so that a wrong wiring fails loudly.
TINY_ORIGINAL: dict[str, Any] = {
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "max_position_embeddings": 40,
    "num_attention_heads": 2,
    "num_hidden_layers": 4,
    "type_vocab_size": 2,
    "vocab_size": 60,
    "v_feature_size": 24,
    "v_target_size": 1601,
    "v_hidden_size": 48,
    "v_num_hidden_layers": 3,
    "v_num_attention_heads": 4,
    "v_intermediate_size": 56,
    "bi_hidden_size": 40,
    "bi_num_attention_heads": 2,
    "bi_intermediate_size": 1024,
    "bi_attention_type": 1,
    "v_attention_probs_dropout_prob": 0.1,
    "v_hidden_act": "gelu",
    "v_hidden_dropout_prob": 0.1,
    "v_initializer_range": 0.02,
    "v_biattention_id": [0, 1],
    "t_biattention_id": [2, 3],
    "pooling_method": "mul",
}


def load_reference() -> ModuleType:
    """Import `original_reference.py` by path (tests run with --import-mode=importlib)."""
    if _REFERENCE_NAME in sys.modules:
        return sys.modules[_REFERENCE_NAME]
    spec = importlib.util.spec_from_file_location(_REFERENCE_NAME, HERE / "original_reference.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_REFERENCE_NAME] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def reference() -> ModuleType:
    """The eager re-statement of the original forward."""
    return load_reference()


@pytest.fixture
def tiny_original() -> dict[str, Any]:
    """The tiny original config with task tokens on (as the 12-in-1 run)."""
    return {**TINY_ORIGINAL, "task_specific_tokens": True}


@pytest.fixture
def tiny_config(tiny_original: dict[str, Any]) -> ViLBERTConfig:
    """The same tiny architecture as a twelve config."""
    return ViLBERTConfig.from_original(tiny_original)


def randomize(module: torch.nn.Module, seed: int = 0, std: float = 0.5) -> None:
    """Give every parameter a large random value (the default init makes outputs too flat to
    tell implementations apart)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)


@pytest.fixture
def make_inputs() -> Callable[..., ViLBERTInputs]:
    """Random inputs with padding in some rows."""

    def build(
        config: ViLBERTConfig, batch: int = 4, length: int = 7, regions: int = 6, seed: int = 1
    ) -> ViLBERTInputs:
        generator = torch.Generator().manual_seed(seed)
        vocab = config.text.vocab_size
        input_ids = torch.randint(5, vocab, (batch, length), generator=generator)
        text_mask = torch.ones(batch, length, dtype=torch.long)
        region_mask = torch.ones(batch, regions, dtype=torch.long)
        if batch > 1:
            text_mask[0, length - 2 :] = 0
            input_ids[0, length - 2 :] = 0
            region_mask[1, regions - 2 :] = 0
        return ViLBERTInputs(
            input_ids=input_ids,
            token_type_ids=torch.zeros(batch, length, dtype=torch.long),
            text_mask=text_mask,
            region_features=torch.randn(
                batch, regions, config.vision.feature_size, generator=generator
            ),
            region_locations=torch.rand(batch, regions, 5, generator=generator),
            region_mask=region_mask,
        )

    return build


@pytest.fixture
def randomized() -> Callable[..., None]:
    """`randomize` as a fixture."""
    return randomize
