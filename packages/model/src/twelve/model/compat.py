"""Drop-in replacements for code written against vilbert-multi-task (`vilbert/vilbert.py`).

`VILBertForVLTasks` keeps the original constructor, `from_pretrained` and forward signature and
returns the original 10-tuple in the original order — every head computed, the masked-LM head
included, and output 3 being the pretraining alignment head when the batch is odd (the
original's quirk). It is backed by twelve's modules, so it loads the original checkpoints and
reproduces their outputs; new code should use `MultiTaskViLBERT`, which runs one head only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from twelve.model.checkpoint import (
    TASK_EMBEDDINGS_KEY,
    load_original_weights,
    read_original_state_dict,
)
from twelve.model.config import ORIGINAL_DEFAULTS, ViLBERTConfig
from twelve.model.errors import ConfigError
from twelve.model.heads import HeadInputs
from twelve.model.inputs import ViLBERTInputs
from twelve.model.model import MultiTaskViLBERT

logger = logging.getLogger(__name__)


class BertConfig:
    """The original attribute-style config: JSON keys as attributes, constructor defaults."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(ORIGINAL_DEFAULTS)
        self.__dict__.update(values)

    @classmethod
    def from_json_file(cls, path: str | Path) -> BertConfig:
        """Read an original JSON config file."""
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"cannot read original config {path}: {error}") from error
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        return cls(**values)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> BertConfig:
        """Build from a plain dict of original keys."""
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """The keys and values, as the original's `to_dict`."""
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"BertConfig({self.to_dict()!r})"


OriginalConfig = BertConfig | Mapping[str, Any] | str | Path


def _original_values(config: OriginalConfig) -> dict[str, Any]:
    if isinstance(config, BertConfig):
        return config.to_dict()
    if isinstance(config, Mapping):
        return {**ORIGINAL_DEFAULTS, **dict(config)}
    if isinstance(config, str | Path):
        return BertConfig.from_json_file(config).to_dict()
    if hasattr(config, "__dict__"):  # an original BertConfig object from vilbert itself
        return {**ORIGINAL_DEFAULTS, **vars(config)}
    raise ConfigError(f"cannot use {type(config).__name__} as an original config")


class VILBertForVLTasks(MultiTaskViLBERT):
    """The original multi-task model class: same constructor, loading and 10-output forward."""

    def __init__(
        self,
        config: OriginalConfig,
        num_labels: int,
        dropout_prob: float = 0.1,
        default_gpu: bool = True,
    ) -> None:
        values = _original_values(config)
        twelve_config = ViLBERTConfig.from_original(values).model_copy(
            update={"head_dropout": dropout_prob}
        )
        super().__init__(twelve_config)
        self.num_labels = num_labels  # stored, unused, as in the original
        self.original_config = values
        self.default_gpu = default_gpu

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | Path,
        config: OriginalConfig,
        num_labels: int = 3129,
        default_gpu: bool = True,
        dropout_prob: float = 0.1,
        **_ignored: Any,
    ) -> VILBertForVLTasks:
        """Load an original checkpoint into a new model, tolerating missing and unexpected
        keys (logged) as the original did; returns the model in eval mode.

        If the checkpoint holds task embeddings the model uses task tokens even when the config
        does not say so (12-in-1 sets them with a command-line flag, not in the JSON).
        """
        state = read_original_state_dict(pretrained_model_name_or_path)
        values = _original_values(config)
        if TASK_EMBEDDINGS_KEY in state:
            values["task_specific_tokens"] = True
        model = cls(values, num_labels, dropout_prob=dropout_prob, default_gpu=default_gpu)
        report = load_original_weights(
            model, state, strict=False, source=str(pretrained_model_name_or_path)
        )
        if default_gpu:
            logger.info("%s", report.summary())
        return model.eval()  # type: ignore[return-value]

    def forward(  # type: ignore[override]
        self,
        input_txt: Tensor,
        input_imgs: Tensor,
        image_loc: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        image_attention_mask: Tensor | None = None,
        co_attention_mask: Tensor | None = None,
        task_ids: Tensor | None = None,
        output_all_encoded_layers: bool = False,
        output_all_attention_masks: bool = False,
    ) -> tuple[Any, ...]:
        """The original 10 outputs: (vil_prediction, vil_prediction_gqa, vil_logit,
        vil_binary_prediction, vil_tri_prediction, vision_prediction, vision_logit,
        linguisic_prediction, linguisic_logit, all_attention_mask).

        `co_attention_mask` is accepted and unused, as in the original.
        """
        del co_attention_mask
        if output_all_encoded_layers:
            raise ValueError(
                "output_all_encoded_layers=True is not supported (the original's heads fail on "
                "the list it produces)"
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_txt)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_txt)
        if image_attention_mask is None:
            image_attention_mask = torch.ones(
                input_imgs.shape[0], input_imgs.shape[1], dtype=torch.long, device=input_imgs.device
            )
        if self.config.task_tokens and task_ids is None:
            raise ValueError("this model uses task tokens: pass task_ids of shape (batch, 1)")
        inputs = ViLBERTInputs(
            input_ids=input_txt,
            token_type_ids=token_type_ids,
            text_mask=attention_mask,
            region_features=input_imgs,
            region_locations=image_loc,
            region_mask=image_attention_mask,
        )
        task_token_ids = task_ids.reshape(-1, 1) if self.config.task_tokens else None
        encoded = self.bert(inputs, task_token_ids, need_weights=output_all_attention_masks)
        text_states, vision_states = encoded.text_states, encoded.vision_states
        assert text_states is not None
        assert vision_states is not None
        fused = self.fuse(encoded)

        linguisic_prediction = self.cls.predictions(text_states)
        vision_prediction = self.cls.imagePredictions(vision_states)
        vil_binary_prediction = self.cls.bi_seq_relationship(self.cls.dropout(fused))

        pooled = HeadInputs(
            pooled=self.dropout(fused), vision_states=None, region_mask=inputs.region_mask
        )
        vil_prediction = self.vil_prediction(pooled)
        vil_prediction_gqa = self.vil_prediction_gqa(pooled)
        if fused.shape[0] % 2 == 0:
            vil_binary_prediction = self.vil_binary_prediction(pooled)
        vil_logit = self.vil_logit(pooled).unsqueeze(-1)
        vil_tri_prediction = self.vil_tri_prediction(pooled)
        regions = HeadInputs(
            pooled=None,
            vision_states=self.dropout(vision_states),
            region_mask=image_attention_mask,
        )
        vision_logit = self.vision_logit(regions).unsqueeze(-1)
        linguisic_logit = self.linguisic_logit(self.dropout(text_states))

        if encoded.attentions is not None:
            maps = encoded.attentions
            all_attention_mask: tuple[list[Any], list[Any], list[Any]] = (
                list(maps.text),
                list(maps.vision),
                list(zip(maps.text_to_vision, maps.vision_to_text, strict=True)),
            )
        else:
            all_attention_mask = ([], [], [])
        return (
            vil_prediction,
            vil_prediction_gqa,
            vil_logit,
            vil_binary_prediction,
            vil_tri_prediction,
            vision_prediction,
            vision_logit,
            linguisic_prediction,
            linguisic_logit,
            all_attention_mask,
        )
