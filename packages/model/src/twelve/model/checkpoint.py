"""Checkpoints: original vilbert-multi-task `.bin` files and twelve's native directories.

- Original files are read with `torch.load(..., weights_only=True)` (never a full unpickle); a
  `module.` prefix (DataParallel) and old `gamma`/`beta` LayerNorm names are accepted; the tied
  masked-LM decoder key is dropped (the model ties it to the word embeddings, as the original
  re-ties it on load).
- Strictness: by default a multi-task checkpoint must match exactly; a checkpoint holding no task
  head at all (the Conceptual-Captions pretrained `BertForMultiModalPreTraining` file) loads the
  encoder and pretraining heads, and the task heads and task tokens start fresh (logged).
- The native format is a directory: `model.safetensors` (original key names, the tied decoder
  stored once) and `config.json` (a `ViLBERTConfig`). It is written to a temporary directory
  and renamed into place.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from twelve.model.config import ViLBERTConfig
from twelve.model.errors import CheckpointError
from twelve.model.model import MultiTaskViLBERT, dead_parameter_names

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TIED_DECODER_KEY = "cls.predictions.decoder.weight"
WORD_EMBEDDINGS_KEY = "bert.embeddings.word_embeddings.weight"
TASK_EMBEDDINGS_KEY = "bert.embeddings.task_embeddings.weight"

CheckpointKind = Literal["multi-task", "pretrained"]


@dataclass(frozen=True)
class LoadReport:
    """What loading a checkpoint did: the keys it left alone and why."""

    source: str
    kind: CheckpointKind
    """`pretrained`: no task head in the file, so task heads and task tokens start fresh."""
    loaded: int
    """Number of checkpoint tensors copied into the model."""
    missing: tuple[str, ...]
    """Model keys absent from the checkpoint (left as initialised)."""
    unexpected: tuple[str, ...]
    """Checkpoint keys the model does not have (ignored)."""
    ignored: tuple[str, ...]
    """Checkpoint keys dropped on purpose (the tied decoder weight)."""

    def summary(self) -> str:
        """One human-readable paragraph for logs and the command line."""
        lines = [f"loaded {self.loaded} tensors from {self.source} ({self.kind} checkpoint)"]
        if self.ignored:
            lines.append(f"ignored (tied to the word embeddings): {', '.join(self.ignored)}")
        if self.missing:
            lines.append(
                f"{len(self.missing)} missing, left as initialised: {_preview(self.missing)}"
            )
        if self.unexpected:
            lines.append(f"{len(self.unexpected)} unexpected, ignored: {_preview(self.unexpected)}")
        return "\n".join(lines)


def _preview(keys: tuple[str, ...], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


# --------------------------------------------------------------------------- original files


def read_original_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read an original `.bin` state dict safely and normalise its key names."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"original checkpoint {path} does not exist or is not a file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(
            f"cannot read {path} as a weights-only torch checkpoint: {error}"
        ) from error
    return normalise_original_state_dict(loaded, source=str(path))


def normalise_original_state_dict(loaded: Any, *, source: str) -> dict[str, Tensor]:
    """Strip a `module.` prefix and rename `gamma`/`beta`; reject anything but named tensors."""
    if not isinstance(loaded, Mapping):
        raise CheckpointError(
            f"{source}: expected a state dict (name → tensor), found {type(loaded).__name__}"
        )
    state: dict[str, Tensor] = {}
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise CheckpointError(
                f"{source}: entry {key!r} is a {type(value).__name__}, not a named tensor; "
                "expected a plain state dict"
            )
        state[key] = value
    if state and all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    renamed: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.endswith(".gamma"):
            key = key.removesuffix(".gamma") + ".weight"
        elif key.endswith(".beta"):
            key = key.removesuffix(".beta") + ".bias"
        renamed[key] = value
    return renamed


def task_specific_keys(model: MultiTaskViLBERT) -> set[str]:
    """Keys a pretraining checkpoint lacks: task heads, `linguisic_logit`, task embeddings."""
    prefixes = (*(f"{name}." for name in model.config.heads), "linguisic_logit.")
    keys = {key for key in model.state_dict() if key.startswith(prefixes)}
    if model.config.task_tokens:
        keys.add(TASK_EMBEDDINGS_KEY)
    return keys


def load_original_weights(
    model: MultiTaskViLBERT,
    state: Mapping[str, Tensor],
    *,
    strict: bool | None = None,
    source: str = "state dict",
) -> LoadReport:
    """Copy an original state dict into `model` and report what did not fit.

    `strict=None` (default): a checkpoint with task heads must match exactly; one without any
    task head (pretrained) may lack exactly the task-specific keys. `strict=True`: every key must
    match. `strict=False`: load what fits and report the rest. Wrong shapes always fail.
    """
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    ignored = tuple(key for key in (TIED_DECODER_KEY,) if key in state)
    if ignored and not _same_tensor(state[TIED_DECODER_KEY], state.get(WORD_EMBEDDINGS_KEY)):
        logger.warning(
            "%s: %s differs from %s; the model ties them, so the word embeddings are used",
            source,
            TIED_DECODER_KEY,
            WORD_EMBEDDINGS_KEY,
        )
    incoming = {key: value for key, value in state.items() if key != TIED_DECODER_KEY}
    wrong_shapes = [
        f"{key}: checkpoint {tuple(value.shape)}, model {expected[key]}"
        for key, value in incoming.items()
        if key in expected and tuple(value.shape) != expected[key]
    ]
    if wrong_shapes:
        raise CheckpointError(
            f"{source}: {len(wrong_shapes)} tensors have the wrong shape for this model config:\n  "
            + "\n  ".join(wrong_shapes)
        )
    missing = tuple(key for key in expected if key not in incoming and key != TIED_DECODER_KEY)
    unexpected = tuple(key for key in incoming if key not in expected)
    task_keys = task_specific_keys(model)
    head_keys = {key for key in task_keys if key != TASK_EMBEDDINGS_KEY}
    kind: CheckpointKind = "pretrained" if head_keys.isdisjoint(incoming) else "multi-task"
    if strict is None:
        # The dead q_dense weights never affect an output; a file without them is fine.
        allowed_missing = set(dead_parameter_names(model))
        if kind == "pretrained":
            allowed_missing |= task_keys
        problems = [key for key in missing if key not in allowed_missing]
        fail = bool(problems or unexpected)
    else:
        problems = list(missing)
        fail = strict and bool(missing or unexpected)
    if fail:
        raise CheckpointError(
            f"{source} does not match the model ({kind} checkpoint):\n"
            + (f"  missing ({len(problems)}): {_preview(tuple(problems))}\n" if problems else "")
            + (f"  unexpected ({len(unexpected)}): {_preview(unexpected)}\n" if unexpected else "")
            + "  pass strict=False (--no-strict) to load the matching tensors anyway"
        )
    result = model.load_state_dict(
        {key: value for key, value in incoming.items() if key in expected}, strict=False
    )
    if result.unexpected_keys:  # cannot happen after the filtering above
        raise CheckpointError(f"{source}: unexpected keys {result.unexpected_keys}")
    model.tie_weights()
    report = LoadReport(
        source=source,
        kind=kind,
        loaded=len(incoming) - len(unexpected),
        missing=missing,
        unexpected=unexpected,
        ignored=ignored,
    )
    if kind == "pretrained" and missing:
        logger.info(
            "%s is a pretrained checkpoint without task heads: the task heads and task tokens "
            "start fresh (%d tensors)",
            source,
            len(missing),
        )
    elif missing or unexpected:
        logger.warning("%s", report.summary())
    return report


def _same_tensor(a: Tensor, b: Tensor | None) -> bool:
    if b is None or a.shape != b.shape:
        return False
    return a.data_ptr() == b.data_ptr() or bool(torch.equal(a, b))


def load_original(
    weights: str | Path,
    config: str | Path | Mapping[str, Any] | ViLBERTConfig,
    *,
    strict: bool | None = None,
) -> tuple[MultiTaskViLBERT, LoadReport]:
    """Build a model from an original config and load an original `.bin` checkpoint into it.

    Task tokens follow the checkpoint: a file holding `task_embeddings` (12-in-1 was trained
    with `--task_specific_tokens`, a flag absent from the JSON) turns them on.
    """
    state = read_original_state_dict(weights)
    if isinstance(config, ViLBERTConfig):
        model_config = config
    else:
        has_task_tokens = TASK_EMBEDDINGS_KEY in state
        model_config = ViLBERTConfig.from_original(
            config, task_tokens=True if has_task_tokens else None
        )
    model = MultiTaskViLBERT(model_config)
    report = load_original_weights(model, state, strict=strict, source=str(weights))
    return model.eval(), report


# --------------------------------------------------------------------------- native format


def save_pretrained(
    model: MultiTaskViLBERT, directory: str | Path, *, overwrite: bool = False
) -> None:
    """Write `model.safetensors` + `config.json` into `directory`, atomically."""
    directory = Path(directory)
    if directory.exists() and not overwrite:
        raise FileExistsError(f"{directory} already exists; choose another path or overwrite")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        key: value.detach().to("cpu").contiguous().clone()
        for key, value in model.state_dict().items()
        if key != TIED_DECODER_KEY
    }
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        save_file(tensors, str(staging / WEIGHTS_NAME), metadata={"format": "pt"})
        (staging / CONFIG_NAME).write_text(model.config.to_json_text())
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            directory.rename(old)
            staging.rename(directory)
            shutil.rmtree(old)
        else:
            staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def load_pretrained(directory: str | Path, *, dtype: torch.dtype | None = None) -> MultiTaskViLBERT:
    """Load a twelve model directory (written by `save_pretrained`) in evaluation mode."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a twelve model directory")
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for needed in (config_path, weights_path):
        if not needed.is_file():
            raise CheckpointError(f"{directory} lacks {needed.name}; not a twelve model directory")
    config = ViLBERTConfig.from_json_file(config_path)
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"cannot read {weights_path}: {error}") from error
    if dtype is not None:
        state = {key: value.to(dtype) for key, value in state.items()}
    with torch.device("meta"):
        model = MultiTaskViLBERT(config)
    state[TIED_DECODER_KEY] = state.get(WORD_EMBEDDINGS_KEY, torch.empty(0))
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise CheckpointError(f"{weights_path} does not fit {config_path}:\n{error}") from error
    model.tie_weights()
    return model.eval()
