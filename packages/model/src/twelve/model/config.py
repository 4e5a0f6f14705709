"""`ViLBERTConfig`: the whole architecture as data (streams, co-attention, heads, tasks).

Presets ship as JSON files next to this module (`presets/<name>.json`); `from_original` reads the
JSON configs of vilbert-multi-task and applies the original constructor's defaults (original-system
§1.1). Head specs carry a `kind` discriminator; the task → head and task → task-token-id maps live
here so that a config validates before any module is built.
"""

from __future__ import annotations

import itertools
import json
import keyword
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from twelve.model.errors import ConfigError, UnknownTaskError

PositiveInt = Annotated[int, Field(gt=0)]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]

HeadKind = Literal["answer", "alignment", "region", "pair", "classifier"]
Fusion = Literal["mul", "sum"]

# Module names owned by the model itself; a head may not take one of them.
RESERVED_MODULE_NAMES = frozenset({"bert", "cls", "linguisic_logit", "dropout"})


def _check_heads(width: int, heads: int, stream: str) -> None:
    if width % heads:
        raise ValueError(f"{stream} hidden_size {width} is not divisible by num_heads {heads}")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TextConfig(_Frozen):
    """The BERT text stream: vocabulary, width, depth, heads and dropouts."""

    vocab_size: PositiveInt = 30522
    hidden_size: PositiveInt = 768
    num_layers: PositiveInt = 12
    num_heads: PositiveInt = 12
    intermediate_size: PositiveInt = 3072
    max_position_embeddings: PositiveInt = 512
    type_vocab_size: PositiveInt = 2
    hidden_dropout: Probability = 0.1
    """Embedding dropout and the dropout after every text sublayer."""
    attention_dropout: Probability = 0.1
    """Text self-attention probabilities and the image-queries-over-text co-attention."""

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TextConfig:
        _check_heads(self.hidden_size, self.num_heads, "text")
        return self


class VisionConfig(_Frozen):
    """The region stream: feature size, width, depth, heads and dropouts."""

    feature_size: PositiveInt = 2048
    hidden_size: PositiveInt = 1024
    num_layers: PositiveInt = 6
    num_heads: PositiveInt = 8
    intermediate_size: PositiveInt = 1024
    hidden_dropout: Probability = 0.1
    """Dropout after every visual sublayer."""
    attention_dropout: Probability = 0.1
    """Visual self-attention probabilities and the text-queries-over-image co-attention."""
    embedding_dropout: Probability = 0.1
    """Region-embedding dropout (the original uses the *text* `hidden_dropout_prob` here)."""

    @model_validator(mode="after")
    def _heads_divide_width(self) -> VisionConfig:
        _check_heads(self.hidden_size, self.num_heads, "vision")
        return self


class CoAttentionConfig(_Frozen):
    """Where the co-attention blocks sit between the two streams, and their width."""

    hidden_size: PositiveInt = 1024
    num_heads: PositiveInt = 8
    vision_layer_ids: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    """Visual-layer index before which each co-attention block runs (`v_biattention_id`)."""
    text_layer_ids: tuple[int, ...] = (6, 7, 8, 9, 10, 11)
    """Text-layer index before which each co-attention block runs (`t_biattention_id`)."""

    @model_validator(mode="after")
    def _consistent(self) -> CoAttentionConfig:
        _check_heads(self.hidden_size, self.num_heads, "co-attention")
        if len(self.vision_layer_ids) != len(self.text_layer_ids):
            raise ValueError(
                f"co_attention.vision_layer_ids has {len(self.vision_layer_ids)} entries and "
                f"text_layer_ids {len(self.text_layer_ids)}; each block needs one of each"
            )
        for name, ids in (("vision", self.vision_layer_ids), ("text", self.text_layer_ids)):
            if any(b < a for a, b in itertools.pairwise(ids)) or any(i < 0 for i in ids):
                raise ValueError(f"co_attention.{name}_layer_ids must be non-negative and sorted")
        return self

    @property
    def num_layers(self) -> int:
        """Number of co-attention blocks."""
        return len(self.text_layer_ids)


class AnswerHeadSpec(_Frozen):
    """Answer classifier over the fused pooled vector (VQA-style: Linear, GeLU, LN, Linear)."""

    kind: Literal["answer"] = "answer"
    num_answers: PositiveInt
    hidden_size: PositiveInt


class AlignmentHeadSpec(_Frozen):
    """One image-text alignment score per row (retrieval): Linear(pooled → 1)."""

    kind: Literal["alignment"] = "alignment"


class RegionHeadSpec(_Frozen):
    """One score per region from the final visual states, −10000 added on padded regions."""

    kind: Literal["region"] = "region"


class PairHeadSpec(_Frozen):
    """Classifier over two images: rows (2B, P) are paired into (B, 2P) (NLVR2)."""

    kind: Literal["pair"] = "pair"
    num_classes: PositiveInt = 2
    hidden_size: PositiveInt


class ClassifierHeadSpec(_Frozen):
    """Plain linear classifier over the fused pooled vector (SNLI-VE)."""

    kind: Literal["classifier"] = "classifier"
    num_classes: PositiveInt


HeadSpec = Annotated[
    AnswerHeadSpec | AlignmentHeadSpec | RegionHeadSpec | PairHeadSpec | ClassifierHeadSpec,
    Field(discriminator="kind"),
]


class TaskBinding(_Frozen):
    """Which head a task uses and which task-token id the checkpoints expect for it."""

    head: str
    token_id: Annotated[int, Field(ge=0)]


def _default_heads() -> dict[str, HeadSpec]:
    return {
        "vil_prediction": AnswerHeadSpec(num_answers=3129, hidden_size=2048),
        "vil_prediction_gqa": AnswerHeadSpec(num_answers=1533, hidden_size=2048),
        "vil_binary_prediction": PairHeadSpec(num_classes=2, hidden_size=2048),
        "vil_logit": AlignmentHeadSpec(),
        "vil_tri_prediction": ClassifierHeadSpec(num_classes=3),
        "vision_logit": RegionHeadSpec(),
    }


def default_tasks() -> dict[str, TaskBinding]:
    """The 12-in-1 task set: stable task name → original head and task-token id."""
    table = {
        "vqa": ("vil_prediction", 1),
        "vg_qa": ("vil_prediction", 2),
        "visual7w": ("vision_logit", 4),
        "retrieval_coco": ("vil_logit", 7),
        "retrieval_flickr30k": ("vil_logit", 8),
        "refcoco": ("vision_logit", 9),
        "refcoco+": ("vision_logit", 10),
        "refcocog": ("vision_logit", 11),
        "nlvr2": ("vil_binary_prediction", 12),
        "snli_ve": ("vil_tri_prediction", 13),
        "gqa": ("vil_prediction_gqa", 15),
        "guesswhat": ("vision_logit", 17),
    }
    return {name: TaskBinding(head=head, token_id=tid) for name, (head, tid) in table.items()}


class ViLBERTConfig(_Frozen):
    """Everything that defines a ViLBERT multi-task model; presets and checkpoints carry one."""

    text: TextConfig = Field(default_factory=TextConfig)
    vision: VisionConfig = Field(default_factory=VisionConfig)
    co_attention: CoAttentionConfig = Field(default_factory=CoAttentionConfig)
    pooled_size: PositiveInt = 1024
    """Width of both poolers' outputs and of the fused vector (`bi_hidden_size`)."""
    fusion: Fusion = "mul"
    head_dropout: Probability = 0.1
    """Dropout on the fused pooled vector and on the sequence states fed to per-token heads."""
    layer_norm_eps: Annotated[float, Field(gt=0.0)] = 1e-12
    initializer_range: Annotated[float, Field(gt=0.0)] = 0.02
    task_tokens: bool = True
    """Insert a learned task token after [CLS] (the 12-in-1 `--task_specific_tokens`)."""
    task_token_table_size: PositiveInt = 20
    image_target_size: PositiveInt = 1601
    """Classes of the pretraining image-prediction head (`v_target_size`)."""
    heads: dict[str, HeadSpec] = Field(default_factory=_default_heads)
    """Head module name (kept as in the original checkpoints) → head spec."""
    tasks: dict[str, TaskBinding] = Field(default_factory=default_tasks)
    """Stable task name → head and task-token id."""

    @model_validator(mode="after")
    def _consistent(self) -> ViLBERTConfig:
        co = self.co_attention
        if co.vision_layer_ids and max(co.vision_layer_ids) >= self.vision.num_layers:
            raise ValueError(
                f"co_attention.vision_layer_ids {list(co.vision_layer_ids)} refers to a visual "
                f"layer >= vision.num_layers ({self.vision.num_layers})"
            )
        if co.text_layer_ids and max(co.text_layer_ids) >= self.text.num_layers:
            raise ValueError(
                f"co_attention.text_layer_ids {list(co.text_layer_ids)} refers to a text "
                f"layer >= text.num_layers ({self.text.num_layers})"
            )
        for name in self.heads:
            if not name.isidentifier() or keyword.iskeyword(name) or name in RESERVED_MODULE_NAMES:
                raise ValueError(
                    f"head name {name!r} must be a Python identifier other than "
                    f"{sorted(RESERVED_MODULE_NAMES)} (it becomes a module name)"
                )
        for task, binding in self.tasks.items():
            if binding.head not in self.heads:
                raise ValueError(
                    f"task {task!r} uses head {binding.head!r}, which is not among the heads "
                    f"{sorted(self.heads)}"
                )
            if self.task_tokens and binding.token_id >= self.task_token_table_size:
                raise ValueError(
                    f"task {task!r} has token_id {binding.token_id}, outside the task-token "
                    f"table of size {self.task_token_table_size}"
                )
        return self

    # ----------------------------------------------------------------------------- loading

    @classmethod
    def preset(cls, name: str) -> ViLBERTConfig:
        """Load a built-in preset (`12in1-base`, `tiny`) shipped as package data."""
        available = preset_names()
        if name not in available:
            raise ConfigError(f"unknown model preset {name!r}; available presets: {available}")
        text = resources.files("twelve.model").joinpath("presets", f"{name}.json").read_text()
        return cls.from_json_text(text, source=f"preset {name!r}")

    @classmethod
    def from_json_file(cls, path: str | Path) -> ViLBERTConfig:
        """Read a twelve config JSON file (as written by `save_pretrained`)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise ConfigError(f"cannot read model config {path}: {error}") from error
        return cls.from_json_text(text, source=str(path))

    @classmethod
    def from_json_text(cls, text: str, *, source: str) -> ViLBERTConfig:
        """Parse and validate a twelve config from JSON text, naming `source` on errors."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{source}: not valid JSON: {error}") from error
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise ConfigError(f"{source}: invalid model config:\n{error}") from error

    def to_json_text(self) -> str:
        """Serialize to the JSON text stored next to the weights."""
        return self.model_dump_json(indent=2) + "\n"

    @classmethod
    def from_original(
        cls, source: str | Path | Mapping[str, Any], *, task_tokens: bool | None = None
    ) -> ViLBERTConfig:
        """Read an original vilbert-multi-task JSON config (path or dict) with its defaults.

        `task_tokens` overrides `task_specific_tokens` (a command-line flag in the original,
        usually absent from the JSON file).
        """
        return _from_original(cls, source, task_tokens=task_tokens)

    # ----------------------------------------------------------------------------- queries

    def head_for(self, task: str) -> str:
        """Name of the head module that serves `task`; raises for an unknown task."""
        binding = self.tasks.get(task)
        if binding is None:
            raise UnknownTaskError(task, sorted(self.tasks))
        return binding.head

    def tasks_of_head(self, head: str) -> list[str]:
        """Tasks served by one head, in config order."""
        return [task for task, binding in self.tasks.items() if binding.head == head]


def preset_names() -> list[str]:
    """Names of the presets shipped with the package."""
    folder = resources.files("twelve.model").joinpath("presets")
    return sorted(
        p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json")
    )


# ------------------------------------------------------------------------- original configs

# Keys every original config file sets (`config/bert_base_6layer_6conect.json` and its siblings);
# a file without one of them is rejected rather than guessed.
ORIGINAL_REQUIRED_KEYS: tuple[str, ...] = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "v_feature_size",
    "v_hidden_size",
    "v_num_hidden_layers",
    "v_num_attention_heads",
    "v_intermediate_size",
    "v_hidden_act",
    "v_hidden_dropout_prob",
    "v_attention_probs_dropout_prob",
    "bi_hidden_size",
    "bi_num_attention_heads",
    "v_biattention_id",
    "t_biattention_id",
)

# Constructor defaults of the original `BertConfig` for keys its JSON files do not set
# (original-system §1.1: `from_json_file` starts from `BertConfig(-1)`).
ORIGINAL_DEFAULTS: dict[str, Any] = {
    "visual_target": 0,
    "fast_mode": False,
    "fixed_v_layer": 0,
    "fixed_t_layer": 0,
    "in_batch_pairs": False,
    "fusion_method": "mul",
    "dynamic_attention": False,
    "with_coattention": True,
    "objective": 0,
    "num_negative": 128,
    "model": "bert",
    "task_specific_tokens": False,
    "visualization": False,
}

# Keys that change the computation in ways twelve does not implement.
_UNSUPPORTED: dict[str, Any] = {"dynamic_attention": False, "with_coattention": True}


def _from_original(
    cls: type[ViLBERTConfig], source: str | Path | Mapping[str, Any], *, task_tokens: bool | None
) -> ViLBERTConfig:
    if isinstance(source, Mapping):
        raw = dict(source)
        where = "original config"
    else:
        path = Path(source)
        where = str(path)
        try:
            raw = json.loads(path.read_text())
        except OSError as error:
            raise ConfigError(f"cannot read original config {path}: {error}") from error
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: not valid JSON: {error}") from error
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a JSON object, found {type(raw).__name__}")
    missing = [key for key in ORIGINAL_REQUIRED_KEYS if key not in raw]
    if missing:
        raise ConfigError(f"{where}: original config lacks the keys {missing}")
    values = {**ORIGINAL_DEFAULTS, **raw}
    for key, supported in _UNSUPPORTED.items():
        if values[key] != supported:
            raise ConfigError(
                f"{where}: {key}={values[key]!r} is not supported by twelve "
                f"(only {key}={supported!r}, the 12-in-1 setting)"
            )
    for key in ("hidden_act", "v_hidden_act"):
        if values[key] != "gelu":
            raise ConfigError(f"{where}: {key}={values[key]!r}; only 'gelu' is supported")
    if values["fusion_method"] not in ("mul", "sum"):
        raise ConfigError(
            f"{where}: fusion_method={values['fusion_method']!r}; the original accepts "
            "only 'mul' or 'sum'"
        )
    # The training script forces v_target_size by `visual_target` (0 → 1601 classes, else 2048).
    image_target = 1601 if values["visual_target"] == 0 else 2048
    bi = values["bi_hidden_size"]
    try:
        return cls(
            text=TextConfig(
                vocab_size=values["vocab_size"],
                hidden_size=values["hidden_size"],
                num_layers=values["num_hidden_layers"],
                num_heads=values["num_attention_heads"],
                intermediate_size=values["intermediate_size"],
                max_position_embeddings=values["max_position_embeddings"],
                type_vocab_size=values["type_vocab_size"],
                hidden_dropout=values["hidden_dropout_prob"],
                attention_dropout=values["attention_probs_dropout_prob"],
            ),
            vision=VisionConfig(
                feature_size=values["v_feature_size"],
                hidden_size=values["v_hidden_size"],
                num_layers=values["v_num_hidden_layers"],
                num_heads=values["v_num_attention_heads"],
                intermediate_size=values["v_intermediate_size"],
                hidden_dropout=values["v_hidden_dropout_prob"],
                attention_dropout=values["v_attention_probs_dropout_prob"],
                embedding_dropout=values["hidden_dropout_prob"],
            ),
            co_attention=CoAttentionConfig(
                hidden_size=bi,
                num_heads=values["bi_num_attention_heads"],
                vision_layer_ids=tuple(values["v_biattention_id"]),
                text_layer_ids=tuple(values["t_biattention_id"]),
            ),
            pooled_size=bi,
            fusion=values["fusion_method"],
            head_dropout=0.1,
            layer_norm_eps=1e-12,
            initializer_range=values["initializer_range"],
            task_tokens=bool(
                values["task_specific_tokens"] if task_tokens is None else task_tokens
            ),
            task_token_table_size=20,
            image_target_size=image_target,
            heads={
                "vil_prediction": AnswerHeadSpec(num_answers=3129, hidden_size=2 * bi),
                "vil_prediction_gqa": AnswerHeadSpec(num_answers=1533, hidden_size=2 * bi),
                "vil_binary_prediction": PairHeadSpec(num_classes=2, hidden_size=2 * bi),
                "vil_logit": AlignmentHeadSpec(),
                "vil_tri_prediction": ClassifierHeadSpec(num_classes=3),
                "vision_logit": RegionHeadSpec(),
            },
        )
    except (ValidationError, ValueError) as error:
        raise ConfigError(f"{where}: invalid original config:\n{error}") from error
