"""`describe`: the facts `twelve model info` shows about a model directory or preset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from twelve.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from twelve.model.config import ViLBERTConfig, preset_names
from twelve.model.errors import CheckpointError, ConfigError
from twelve.model.model import MultiTaskViLBERT


def describe(target: str | Path) -> dict[str, Any]:
    """Config, parameter counts, heads with their tasks, and weight-file facts of `target`
    (a twelve model directory or a preset name); builds the model on the meta device only."""
    path = Path(target)
    weights: dict[str, Any] | None = None
    if path.is_dir():
        config_path = path / CONFIG_NAME
        if not config_path.is_file():
            raise CheckpointError(f"{path} lacks {CONFIG_NAME}; not a twelve model directory")
        config = ViLBERTConfig.from_json_file(config_path)
        source = f"model directory {path}"
        weights = _weights_facts(path / WEIGHTS_NAME)
    elif str(target) in preset_names():
        config = ViLBERTConfig.preset(str(target))
        source = f"preset {target}"
    else:
        raise ConfigError(
            f"{target!r} is neither a model directory nor a preset (presets: {preset_names()})"
        )
    with torch.device("meta"):
        model = MultiTaskViLBERT(config)
    per_module = model.parameter_counts()
    heads = {
        name: {
            "spec": spec.model_dump(),
            "parameters": per_module.get(name, 0),
            "tasks": [
                {"task": task, "token_id": config.tasks[task].token_id}
                for task in config.tasks_of_head(name)
            ],
        }
        for name, spec in config.heads.items()
    }
    description: dict[str, Any] = {
        "source": source,
        "config": config.model_dump(mode="json"),
        "parameters": {
            "total": model.num_parameters(),
            "trainable": model.num_parameters(trainable_only=True),
            "per_module": per_module,
        },
        "heads": heads,
    }
    if weights is not None:
        description["weights"] = weights
    return description


def _weights_facts(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; not a complete twelve model directory")
    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
            dtypes = sorted({str(handle.get_slice(key).get_dtype()) for key in keys})
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"cannot read {path}: {error}") from error
    return {"file": str(path), "bytes": path.stat().st_size, "tensors": len(keys), "dtypes": dtypes}
