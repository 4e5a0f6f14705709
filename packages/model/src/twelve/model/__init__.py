"""twelve.model: the multi-task ViLBERT encoder and task heads, faithful to the original checkpoints.

Public names are imported lazily, so `import twelve.model.cli` (the `twelve` command) stays free
of torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ViLBERTConfig": "twelve.model.config",
    "TextConfig": "twelve.model.config",
    "VisionConfig": "twelve.model.config",
    "CoAttentionConfig": "twelve.model.config",
    "AnswerHeadSpec": "twelve.model.config",
    "AlignmentHeadSpec": "twelve.model.config",
    "RegionHeadSpec": "twelve.model.config",
    "PairHeadSpec": "twelve.model.config",
    "ClassifierHeadSpec": "twelve.model.config",
    "TaskBinding": "twelve.model.config",
    "preset_names": "twelve.model.config",
    "ViLBERTInputs": "twelve.model.inputs",
    "TaskOutput": "twelve.model.inputs",
    "PretrainingOutput": "twelve.model.inputs",
    "AttentionMaps": "twelve.model.inputs",
    "MultiTaskViLBERT": "twelve.model.model",
    "LoadReport": "twelve.model.checkpoint",
    "load_original": "twelve.model.checkpoint",
    "load_original_weights": "twelve.model.checkpoint",
    "load_pretrained": "twelve.model.checkpoint",
    "save_pretrained": "twelve.model.checkpoint",
    "ModelError": "twelve.model.errors",
    "ConfigError": "twelve.model.errors",
    "CheckpointError": "twelve.model.errors",
    "UnknownTaskError": "twelve.model.errors",
}

__all__ = [
    "AlignmentHeadSpec",
    "AnswerHeadSpec",
    "AttentionMaps",
    "CheckpointError",
    "ClassifierHeadSpec",
    "CoAttentionConfig",
    "ConfigError",
    "LoadReport",
    "ModelError",
    "MultiTaskViLBERT",
    "PairHeadSpec",
    "PretrainingOutput",
    "RegionHeadSpec",
    "TaskBinding",
    "TaskOutput",
    "TextConfig",
    "UnknownTaskError",
    "ViLBERTConfig",
    "ViLBERTInputs",
    "VisionConfig",
    "load_original",
    "load_original_weights",
    "load_pretrained",
    "preset_names",
    "save_pretrained",
]

if TYPE_CHECKING:
    from twelve.model.checkpoint import (
        LoadReport,
        load_original,
        load_original_weights,
        load_pretrained,
        save_pretrained,
    )
    from twelve.model.config import (
        AlignmentHeadSpec,
        AnswerHeadSpec,
        ClassifierHeadSpec,
        CoAttentionConfig,
        PairHeadSpec,
        RegionHeadSpec,
        TaskBinding,
        TextConfig,
        ViLBERTConfig,
        VisionConfig,
        preset_names,
    )
    from twelve.model.errors import CheckpointError, ConfigError, ModelError, UnknownTaskError
    from twelve.model.inputs import AttentionMaps, PretrainingOutput, TaskOutput, ViLBERTInputs
    from twelve.model.model import MultiTaskViLBERT


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'twelve.model' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
