"""`TaskSpec`: everything that defines one task of 12-in-1, as data, with the original defaults.

The twelve specs (and the pretraining data's) carry the values of the original
`vilbert_tasks.yml` (original-system.md §3.1). Configs change them through `with_overrides`,
which validates the result, so a typo in a key or a negative batch size fails before anything
runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from twelve.datasets.errors import UnknownTaskError

TaskGroup = Literal["vqa", "retrieval", "grounding", "verification", "pretraining"]
HeadKind = Literal["answer", "alignment", "region", "pair", "classifier", "pretraining"]
LossKind = Literal["bce", "cross_entropy", "pretraining"]
MetricKind = Literal[
    "vqa_score",  # target soft score at the argmax answer (VQA, VG QA, GQA)
    "retrieval_accuracy",  # 4-way accuracy during training; recall@K in the ranking evaluation
    "grounding_accuracy",  # IoU of the chosen region with the referred box > 0.5
    "pointing_accuracy",  # argmax over the candidate boxes equals the target candidate
    "accuracy",  # plain classification accuracy (NLVR2, SNLI-VE)
    "pretraining_loss",
]
GroundTruthBoxes = Literal["never", "train", "all"]
CleanIdSet = Literal["coco", "genome", "flickr"]

PositiveInt = Annotated[int, Field(gt=0)]


class TaskSpec(BaseModel):
    """One task: its stable name, original id, head, loss, metric, lengths, batch and splits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    """Stable task name used across twelve (`vqa`, `refcoco+`, ...)."""
    task_id: int | None
    """Original task-token id that released checkpoints expect; None for pretraining data."""
    original_name: str
    """Task name in the original `vilbert_tasks.yml`."""
    dataset: str
    """Human-readable dataset name."""
    group: TaskGroup
    head: HeadKind
    head_name: str
    """Original output module (`vil_prediction`, `vision_logit`, ...), kept for checkpoints."""
    num_labels: PositiveInt | None
    """Output size of the head (answers, classes); None for per-region or alignment scores."""
    loss: LossKind
    metric: MetricKind
    max_text_length: PositiveInt
    """T: word pieces including [CLS] and [SEP], before the model inserts the task token."""
    max_regions: PositiveInt
    """R: regions per image including the global token (NLVR2: per image of the pair)."""
    images_per_example: Literal[1, 2] = 1
    batch_size: PositiveInt
    learning_rate: Annotated[float, Field(gt=0)]
    num_epochs: PositiveInt = 20
    train_split: str
    val_split: str
    """Split validated on during training (the original's choice, e.g. retrieval's 1k test)."""
    test_splits: tuple[str, ...]
    """Splits used for final evaluation or server submission."""
    gt_boxes: GroundTruthBoxes = "never"
    """When features at ground-truth boxes are appended after the detected regions."""
    num_candidates: PositiveInt | None = None
    """Candidate boxes per example for pointing tasks (Visual7W 4; GuessWhat up to 204)."""
    retrieval_negatives: PositiveInt | None = None
    """Pairs per training example for 4-way retrieval (positive + 3 negatives)."""
    hard_negative_pool: PositiveInt | None = None
    """Nearest training images kept per image for hard negatives (entry 0 is the image)."""
    clean_ids: CleanIdSet | None = None
    """Which test-image list the original removed from this task's training data."""
    clean_splits: tuple[str, ...] = ()
    """Splits the cleaning applies to (VG QA cleans train and val)."""
    iou_threshold: Annotated[float, Field(ge=0, le=1)] | None = None
    """Training targets keep IoU at or above this (grounding and pointing)."""

    @model_validator(mode="after")
    def _check_consistency(self) -> TaskSpec:
        if self.head in ("answer", "pair", "classifier") and self.num_labels is None:
            raise ValueError(f"task {self.name!r}: head {self.head!r} needs num_labels")
        if self.head == "alignment" and self.retrieval_negatives is None:
            raise ValueError(f"task {self.name!r}: alignment head needs retrieval_negatives")
        if self.max_text_length < 3:
            raise ValueError(
                f"task {self.name!r}: max_text_length must leave room for [CLS], [SEP] and a "
                f"word piece (got {self.max_text_length})"
            )
        return self

    def with_overrides(self, overrides: Mapping[str, Any]) -> TaskSpec:
        """Return a copy with some fields replaced, validated like a fresh spec (configs use this)."""
        unknown = sorted(set(overrides) - set(type(self).model_fields))
        if unknown:
            raise ValueError(
                f"task {self.name!r}: unknown spec field(s) {', '.join(unknown)}; known fields: "
                f"{', '.join(type(self).model_fields)}"
            )
        return type(self).model_validate({**self.model_dump(), **overrides})

    @property
    def is_pointing(self) -> bool:
        """Whether the region head is read at candidate boxes (Visual7W, GuessWhat)."""
        return self.num_candidates is not None


def _grounding(name: str, task_id: int, original: str, dataset: str, split_by: str) -> TaskSpec:
    test_splits = ("testA", "testB") if split_by == "unc" else ("test",)
    return TaskSpec(
        name=name,
        task_id=task_id,
        original_name=original,
        dataset=dataset,
        group="grounding",
        head="region",
        head_name="vision_logit",
        num_labels=None,
        loss="bce",
        metric="grounding_accuracy",
        max_text_length=20,
        max_regions=101,
        batch_size=256,
        learning_rate=2e-5,
        train_split="train",
        val_split="val",
        test_splits=test_splits,
        gt_boxes="train",
        clean_ids="coco",
        clean_splits=("train",),
        iou_threshold=0.5,
    )


def _retrieval(name: str, task_id: int, original: str, dataset: str, clean: CleanIdSet) -> TaskSpec:
    return TaskSpec(
        name=name,
        task_id=task_id,
        original_name=original,
        dataset=dataset,
        group="retrieval",
        head="alignment",
        head_name="vil_logit",
        num_labels=None,
        loss="cross_entropy",
        metric="retrieval_accuracy",
        max_text_length=30,
        max_regions=101,
        batch_size=128,
        learning_rate=2e-5,
        train_split="train",
        val_split="test",
        test_splits=("test",),
        retrieval_negatives=4,
        hard_negative_pool=100,
        clean_ids=clean,
        clean_splits=("train",),
    )


def _builtin_specs() -> dict[str, TaskSpec]:
    specs = [
        TaskSpec(
            name="vqa",
            task_id=1,
            original_name="VQA",
            dataset="VQA v2",
            group="vqa",
            head="answer",
            head_name="vil_prediction",
            num_labels=3129,
            loss="bce",
            metric="vqa_score",
            max_text_length=23,
            max_regions=101,
            batch_size=128,
            learning_rate=4e-5,
            train_split="trainval",
            val_split="minval",
            test_splits=("test-dev2015", "test2015"),
            clean_ids="coco",
            clean_splits=("trainval",),
        ),
        TaskSpec(
            name="vg_qa",
            task_id=2,
            original_name="GenomeQA",
            dataset="Visual Genome QA",
            group="vqa",
            head="answer",
            head_name="vil_prediction",
            num_labels=3129,
            loss="bce",
            metric="vqa_score",
            max_text_length=26,
            max_regions=101,
            batch_size=128,
            learning_rate=4e-5,
            train_split="train",
            val_split="val",
            test_splits=("val",),
            clean_ids="genome",
            clean_splits=("train", "val"),
        ),
        TaskSpec(
            name="gqa",
            task_id=15,
            original_name="GQA",
            dataset="GQA",
            group="vqa",
            head="answer",
            head_name="vil_prediction_gqa",
            num_labels=1533,
            loss="bce",
            metric="vqa_score",
            max_text_length=26,
            max_regions=101,
            batch_size=128,
            learning_rate=4e-5,
            train_split="trainval",
            val_split="minval",
            test_splits=("testdev",),
            clean_ids="genome",
            clean_splits=("trainval",),
        ),
        _retrieval("retrieval_coco", 7, "RetrievalCOCO", "COCO captions (Karpathy)", "coco"),
        _retrieval(
            "retrieval_flickr30k", 8, "RetrievalFlickr30k", "Flickr30k (Karpathy)", "flickr"
        ),
        _grounding("refcoco", 9, "refcoco", "RefCOCO (unc)", "unc"),
        _grounding("refcoco+", 10, "refcoco+", "RefCOCO+ (unc)", "unc"),
        _grounding("refcocog", 11, "refcocog", "RefCOCOg (umd)", "umd"),
        TaskSpec(
            name="visual7w",
            task_id=4,
            original_name="Visual7w",
            dataset="Visual7W pointing",
            group="grounding",
            head="region",
            head_name="vision_logit",
            num_labels=None,
            loss="bce",
            metric="pointing_accuracy",
            max_text_length=20,
            max_regions=200,
            batch_size=256,
            learning_rate=2e-5,
            train_split="train",
            val_split="val",
            test_splits=("test",),
            gt_boxes="all",
            num_candidates=4,
            clean_ids="genome",
            clean_splits=("train",),
            iou_threshold=0.5,
        ),
        TaskSpec(
            name="guesswhat",
            task_id=17,
            original_name="GuessWhatPointing",
            dataset="GuessWhat?! pointing",
            group="grounding",
            head="region",
            head_name="vision_logit",
            num_labels=None,
            loss="bce",
            metric="pointing_accuracy",
            max_text_length=256,
            max_regions=306,
            batch_size=64,
            learning_rate=2e-5,
            train_split="train",
            val_split="valid",
            test_splits=("test",),
            gt_boxes="all",
            num_candidates=204,
            clean_ids="coco",
            clean_splits=("train",),
            iou_threshold=0.5,
        ),
        TaskSpec(
            name="nlvr2",
            task_id=12,
            original_name="NLVR2",
            dataset="NLVR2",
            group="verification",
            head="pair",
            head_name="vil_binary_prediction",
            num_labels=2,
            loss="bce",
            metric="accuracy",
            max_text_length=40,
            max_regions=101,
            images_per_example=2,
            batch_size=64,
            learning_rate=2e-5,
            train_split="train",
            val_split="dev",
            test_splits=("test1",),
        ),
        TaskSpec(
            name="snli_ve",
            task_id=13,
            original_name="VisualEntailment",
            dataset="SNLI-VE",
            group="verification",
            head="classifier",
            head_name="vil_tri_prediction",
            num_labels=3,
            loss="bce",
            metric="accuracy",
            max_text_length=56,
            max_regions=101,
            batch_size=256,
            learning_rate=2e-5,
            train_split="train",
            val_split="dev",
            test_splits=("test",),
            clean_ids="flickr",
            clean_splits=("train",),
        ),
        TaskSpec(
            name="conceptual_captions",
            task_id=None,
            original_name="ConceptualCaptions",
            dataset="Conceptual Captions (pretraining)",
            group="pretraining",
            head="pretraining",
            head_name="cls",
            num_labels=None,
            loss="pretraining",
            metric="pretraining_loss",
            max_text_length=36,
            max_regions=37,
            batch_size=512,
            learning_rate=1e-4,
            num_epochs=10,
            train_split="train",
            val_split="val",
            test_splits=("val",),
        ),
    ]
    return {spec.name: spec for spec in specs}


TASK_SPECS: Mapping[str, TaskSpec] = MappingProxyType(_builtin_specs())
"""The built-in specs by name: the twelve 12-in-1 tasks and `conceptual_captions`."""

TWELVE_TASKS: tuple[str, ...] = tuple(
    spec.name
    for spec in sorted(TASK_SPECS.values(), key=lambda spec: spec.task_id or 0)
    if spec.task_id is not None
)
"""The twelve task names of 12-in-1 in the original's `--tasks 1-2-4-7-...-17` order."""


def get_spec(name: str, overrides: Mapping[str, Any] | None = None) -> TaskSpec:
    """Look a task spec up by name (optionally with validated overrides); unknown names list all."""
    try:
        spec = TASK_SPECS[name]
    except KeyError:
        raise UnknownTaskError(name, tuple(TASK_SPECS)) from None
    return spec.with_overrides(overrides) if overrides else spec


def spec_for_task_id(task_id: int) -> TaskSpec:
    """Find the spec a checkpoint's task-token id belongs to."""
    for spec in TASK_SPECS.values():
        if spec.task_id == task_id:
            return spec
    known = sorted(spec.task_id for spec in TASK_SPECS.values() if spec.task_id is not None)
    raise KeyError(f"no task has original id {task_id}; known ids: {known}")
