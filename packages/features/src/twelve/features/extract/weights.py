"""Loading detector weights from a user's file without running code from it.

`.pth`/`.pt` checkpoints (detectron2's `{"model": state_dict, ...}` or a bare state dict)
load with `torch.load(weights_only=True)`. `.pkl` files (detectron2 model zoo,
bottom-up-attention conversions) are pickles of numpy arrays: they load only with
`trust_pickle=True`, through the restricted unpickler that admits numpy arrays and builtins.
Names must match the model exactly; every mismatch is reported at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from twelve.features.safe_pickle import restricted_load

PICKLE_SUFFIXES = (".pkl", ".pickle")


class WeightsError(ValueError):
    """A weights file cannot be read or does not fit the detector built from the config."""


def read_state_dict(path: Path, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, by parameter name (a leading `module.` is dropped)."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not trust_pickle:
            raise WeightsError(
                f"{path} is a pickle, which can run code when loaded; if you trust its source, "
                "pass --trust-pickle (a restricted unpickler admits only numpy arrays and "
                "builtins), or convert it to a .pth state dict"
            )
        loaded: object = restricted_load(path, allow_numpy=True)
    else:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several types for foreign or unsafe files
            raise WeightsError(
                f"{path}: cannot load as a weights-only torch file ({error})"
            ) from None
    if isinstance(loaded, Mapping) and isinstance(loaded.get("model"), Mapping):
        loaded = loaded["model"]
    if not isinstance(loaded, Mapping):
        raise WeightsError(
            f"{path}: expected a state dict (name → tensor), got {type(loaded).__name__}"
        )
    state: dict[str, torch.Tensor] = {}
    for name, value in loaded.items():
        if not isinstance(name, str):
            raise WeightsError(f"{path}: parameter name {name!r} is not a string")
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor")
        state[name.removeprefix("module.")] = value
    return state


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" … (+{len(names) - limit} more)" if len(names) > limit else "")


def load_weights(model: nn.Module, path: Path, *, trust_pickle: bool = False) -> None:
    """Copy a checkpoint into `model`, refusing missing, unexpected or mis-shaped tensors."""
    state = read_state_dict(path, trust_pickle=trust_pickle)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(
        f"{name} {tuple(state[name].shape)} vs model {tuple(expected[name].shape)}"
        for name in set(state) & set(expected)
        if state[name].shape != expected[name].shape
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_listing(unexpected)}")
    if mis_shaped:
        problems.append(f"{len(mis_shaped)} with another shape: {_listing(mis_shaped)}")
    if problems:
        raise WeightsError(
            f"{path} does not fit the detector built from the config ("
            + "; ".join(problems)
            + "); check that the config (--config) is the one these weights were trained with"
        )
    converted = {name: state[name].to(expected[name].dtype) for name in expected}
    model.load_state_dict(converted, strict=True)
