"""`PackedLinear`: several projections of one input in a single GEMM, saved under their own names.

The query, key and value projections of every attention block read the same input; one
(3·out, in) weight makes them one matrix multiply forward and backward instead of three. The
checkpoints keep the original names (`…self.query.weight`, `…biattention.key1.bias`): the
state-dict hooks below split the packed tensors on save and pack the parts on load, so
`state_dict()` and `load_state_dict()` speak the original key names while the parameters are
packed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from twelve.model.reused_memory import LinearMemory, ResidualHandoff, linear

_SUFFIXES = ("weight", "bias")


class PackedLinear(nn.Module):
    """Linear layers sharing an input, stored packed as one (parts·out, in) weight.

    The module that owns it must call `expose_packed_parts(owner)` once its children exist, so
    that the parts are saved and loaded as the owner's `<part>.weight` / `<part>.bias` keys.
    """

    def __init__(self, in_features: int, out_features: int, part_names: tuple[str, ...]) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.part_names = part_names
        total = out_features * len(part_names)
        self.weight = nn.Parameter(torch.empty(total, in_features))
        self.bias = nn.Parameter(torch.empty(total))
        self.memory = LinearMemory()

    def forward(
        self, x: Tensor, with_bias: bool = True, handoff: ResidualHandoff | None = None
    ) -> Tensor:
        """All parts at once: (…, in) → (…, parts·out), parts concatenated in order; without
        the bias when not `with_bias` (for a consumer that adds it itself); `handoff`: see
        `reused_memory.linear`."""
        return linear(x, self.weight, self.bias if with_bias else None, self.memory, handoff)

    def part_shape(self, suffix: str) -> tuple[int, ...]:
        """Shape of one part's `weight` or `bias` as stored in checkpoints."""
        return (self.out_features, self.in_features) if suffix == "weight" else (self.out_features,)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"parts={list(self.part_names)}"
        )


def expose_packed_parts(owner: nn.Module) -> None:
    """Make `owner` save and load its PackedLinear children under the parts' own names."""
    owner.register_state_dict_post_hook(_split_on_save)
    owner.register_load_state_dict_pre_hook(_pack_on_load)


def _packed_children(owner: nn.Module) -> list[tuple[str, PackedLinear]]:
    return [
        (name, child) for name, child in owner.named_children() if isinstance(child, PackedLinear)
    ]


def _split_on_save(
    owner: nn.Module, state_dict: dict[str, Any], prefix: str, _local_metadata: Any
) -> None:
    for child_name, packed in _packed_children(owner):
        tensors = {suffix: state_dict.pop(f"{prefix}{child_name}.{suffix}") for suffix in _SUFFIXES}
        for index, part in enumerate(packed.part_names):
            rows = slice(index * packed.out_features, (index + 1) * packed.out_features)
            for suffix in _SUFFIXES:
                state_dict[f"{prefix}{part}.{suffix}"] = tensors[suffix][rows]


def _pack_on_load(
    owner: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    _local_metadata: Any,
    strict: bool,
    missing_keys: list[str],
    _unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    for child_name, packed in _packed_children(owner):
        for suffix in _SUFFIXES:
            _pack_one(
                packed,
                f"{prefix}{child_name}.{suffix}",
                prefix,
                suffix,
                state_dict,
                strict,
                missing_keys,
                error_msgs,
            )


def _pack_one(
    packed: PackedLinear,
    packed_key: str,
    prefix: str,
    suffix: str,
    state_dict: dict[str, Any],
    strict: bool,
    missing_keys: list[str],
    error_msgs: list[str],
) -> None:
    current: Tensor = getattr(packed, suffix)
    keys = [f"{prefix}{part}.{suffix}" for part in packed.part_names]
    if not any(key in state_dict for key in keys):
        if strict:
            missing_keys.extend(keys)
            # Keep torch from also reporting the internal packed name.
            state_dict[packed_key] = current.detach()
        return
    expected = packed.part_shape(suffix)
    parts: list[Tensor] = []
    usable = True
    for index, key in enumerate(keys):
        if key not in state_dict:
            if strict:
                missing_keys.append(key)
            if current.is_meta:
                error_msgs.append(
                    f"cannot load {key}: missing, and the model is on the meta device"
                )
                usable = False
            rows = slice(index * packed.out_features, (index + 1) * packed.out_features)
            parts.append(current.detach()[rows])
            continue
        value = state_dict.pop(key)
        if tuple(value.shape) != expected:
            error_msgs.append(
                f"size mismatch for {key}: copying a param with shape {tuple(value.shape)} "
                f"from checkpoint, the shape in current model is {expected}."
            )
            usable = False
        parts.append(value)
    if not usable:
        state_dict[packed_key] = current.detach()
        return
    state_dict[packed_key] = torch.cat(parts, dim=0)
