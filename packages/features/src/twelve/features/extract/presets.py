"""The detector configurations shipped with twelve (YAML files in `configs/`), by name."""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from typing import Final

from pydantic import BaseModel, ConfigDict


class DetectorPreset(BaseModel):
    """A shipped detector configuration: its name, YAML file and a one-line description."""

    model_config = ConfigDict(frozen=True)

    name: str
    file: str
    summary: str

    def resource(self) -> Traversable:
        """The packaged YAML file (use `importlib.resources.as_file` for a real path)."""
        return resources.files(__package__) / "configs" / self.file


PRESETS: Final = {
    preset.name: preset
    for preset in (
        DetectorPreset(
            name="vg-x152-fpn",
            file="vg-x152-fpn.yaml",
            summary="12-in-1 style: Visual Genome ResNeXt-152 FPN, 1600 classes, fc6 2048-d",
        ),
        DetectorPreset(
            name="butd-r101-c4",
            file="butd-r101-c4.yaml",
            summary="bottom-up attention style: ResNet-101 C4, 1600 classes, 400 attributes",
        ),
    )
}
