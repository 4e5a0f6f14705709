"""Typed records read from the official annotation files, one model per kind of example.

Parsers (`twelve.datasets.parsers`) return these; task datasets turn them into model inputs and
targets. Records keep the ids of the official files with their official types (GQA question and
image ids and NLVR2 identifiers stay strings; COCO, Visual Genome and Flickr ids are ints) and
convert every box to ``xyxy`` pixels of the original image the way the original did
(``[x, y, w, h] -> [x, y, x + w, y + h]``, no -1).

`feature_keys` names the feature-store record(s) an example needs, following the key convention of
the original LMDB files (reference/dataset-formats.md §0): ``str(image_id)`` for COCO, Visual
Genome and Flickr30k images, ``"v7w_<id>"`` for Visual7W, ``"<pair>-img0"``/``"<pair>-img1"`` for
NLVR2 and the CRC32 string for Conceptual Captions.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

Box = tuple[float, float, float, float]
"""``(x1, y1, x2, y2)`` in pixels of the original image, origin top-left."""

SNLIVELabel = Literal["contradiction", "neutral", "entailment"]
SNLIVE_LABELS: tuple[SNLIVELabel, ...] = ("contradiction", "neutral", "entailment")
"""The original's class order: contradiction 0, neutral 1, entailment 2."""


def xywh_to_xyxy(x: float, y: float, width: float, height: float) -> Box:
    """Convert an official ``[x, y, w, h]`` box to ``xyxy`` exactly as the original did (no -1)."""
    return (float(x), float(y), float(x) + float(width), float(y) + float(height))


class Record(BaseModel):
    """Base of every parsed example: immutable, and unknown fields are a bug, not data."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class AnswerTarget(Record):
    """Soft answer labels in the label order of a given vocabulary (what the BCE target scatters).

    Read from the original repository's ``*_target.pkl`` files (whose labels index the original
    ``ans2label``), or computed from official answers by `twelve.datasets.answers`.
    """

    labels: tuple[int, ...]
    scores: tuple[float, ...]

    @model_validator(mode="after")
    def _same_length(self) -> Self:
        if len(self.labels) != len(self.scores):
            raise ValueError(
                f"labels has {len(self.labels)} entries but scores has {len(self.scores)}"
            )
        return self


class VQAQuestion(Record):
    """One VQA v2 question; answers are present for train2014/val2014, absent for the tests."""

    question_id: int
    image_id: int
    question: str
    answers: tuple[str, ...] | None = None
    """The 10 human answers as released (`answers[].answer`), in annotation order."""
    multiple_choice_answer: str | None = None
    """The most frequent human answer; only used to build the answer vocabulary."""
    question_type: str | None = None
    answer_type: str | None = None
    """``"yes/no"``, ``"number"`` or ``"other"``."""
    target: AnswerTarget | None = None
    """Precomputed labels/scores, only when read from the original ``cache/*_target.pkl``."""

    @property
    def feature_keys(self) -> tuple[str, ...]:
        """The COCO image id as a string."""
        return (str(self.image_id),)


class GQAQuestion(Record):
    """One GQA question; ids stay strings (question ids may have leading zeros, images ``n…``)."""

    question_id: str
    image_id: str
    question: str
    answer: str | None = None
    """Absent in the test and challenge files."""
    full_answer: str | None = None
    is_balanced: bool = True
    structural_type: str | None = None
    """``types.structural``: query, verify, logical, choose or compare (binary vs open metric)."""
    target: AnswerTarget | None = None
    """Precomputed labels/scores, only when read from the original ``cache/trainval_target.pkl``."""

    @property
    def feature_keys(self) -> tuple[str, ...]:
        """The GQA image id as it is (``"2354786"`` or ``"n161313"``)."""
        return (self.image_id,)


class VGQAPair(Record):
    """One Visual Genome question-answer pair."""

    qa_id: int
    image_id: int
    question: str
    answer: str | None = None
    """Free-form answer as released (``"Green."``); normalise before looking it up."""
    target: AnswerTarget | None = None
    """Precomputed labels/scores, only when read from the original ``cache/trainval_target.pkl``."""

    @property
    def feature_keys(self) -> tuple[str, ...]:
        """The Visual Genome image id as a string."""
        return (str(self.image_id),)


class CaptionImage(Record):
    """One image of a caption-retrieval split with all its captions (Karpathy files).

    One retrieval *example* is one caption, so a split of these records holds
    ``sum(len(r.sentences))`` examples over ``len(records)`` images.
    """

    image_id: int
    file_name: str | None = None
    file_path: str | None = None
    """COCO only: the image folder, ``"train2014"`` or ``"val2014"``."""
    split: str
    sentences: tuple[str, ...]
    """Raw captions (Karpathy ``sentences[].raw``), the text the original tokenised."""
    sentence_ids: tuple[int, ...] | None = None

    @model_validator(mode="after")
    def _ids_match(self) -> Self:
        if self.sentence_ids is not None and len(self.sentence_ids) != len(self.sentences):
            raise ValueError(
                f"{len(self.sentence_ids)} sentence ids for {len(self.sentences)} sentences"
            )
        return self

    @property
    def feature_keys(self) -> tuple[str, ...]:
        """The COCO or Flickr30k image id as a string."""
        return (str(self.image_id),)


class RefSentence(Record):
    """One (referred object, expression) pair of RefCOCO, RefCOCO+ or RefCOCOg."""

    ref_id: int
    ann_id: int
    sent_id: int
    image_id: int
    sentence: str
    """The expression as typed (REFER ``raw``), the text the original tokenised."""
    normalized_sentence: str | None = None
    """REFER's cleaned lower-case ``sent``."""
    box: Box
    """The referred object's COCO annotation box, xyxy."""
    category_id: int
    category: str | None = None
    split: str
    """The ref's own split (unc: train/val/testA/testB; umd: train/val/test)."""
    image_width: Annotated[int, Field(gt=0)]
    image_height: Annotated[int, Field(gt=0)]

    @property
    def feature_keys(self) -> tuple[str, ...]:
        """The COCO train2014 image id as a string."""
        return (str(self.image_id),)


class AnnotatedObject(Record):
    """One annotated object of an image (a COCO annotation or a Visual7W box)."""

    object_id: int
    box: Box
    category_id: int | None = None
    category: str | None = None


class AnnotatedImage(Record):
    """An image with its annotated objects, sorted by object id (the order of ground-truth features).

    For RefCOCO* these are every ``instances.json`` annotation of the image; for Visual7W every
    box referred to by a QA pair of the image. Used to extract ground-truth-box features.
    """

    image_id: int
    width: int | None = None
    height: int | None = None
    file_name: str | None = None
    objects: tuple[AnnotatedObject, ...]


class PointingQA(Record):
    """One Visual7W pointing question: pick the answer box among 4 candidate boxes."""

    qa_id: int
    image_id: int
    question: str
    split: str
    answer_box_id: int
    candidate_box_ids: tuple[int, ...]
    """The answer box first, then the distractors in file order (the original sorted them)."""
    candidate_boxes: tuple[Box, ...]
    """Boxes of `candidate_box_ids`, xyxy (may be negative or past the border, as released)."""
    candidate_positions: tuple[int, ...]
    """Index of each candidate in the image's box ids sorted ascending (the order of its
    ground-truth-box features, `AnnotatedImage.objects`)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        count = len(self.candidate_box_ids)
        if len(self.candidate_boxes) != count or len(self.candidate_positions) != count:
            raise ValueError("candidate ids, boxes and positions must have the same length")
        if self.answer_box_id not in self.candidate_box_ids:
            raise ValueError(f"answer box {self.answer_box_id} is not among the candidates")
        return self

    @property
    def answer_box(self) -> Box:
        """The answer box, xyxy."""
        return self.candidate_boxes[self.candidate_box_ids.index(self.answer_box_id)]

    @property
    def feature_keys(self) -> tuple[str, ...]:
        """``"v7w_<image_id>"``, the original's Visual7W key."""
        return (f"v7w_{self.image_id}",)


class DialogTurn(Record):
    """One question and its answer (``Yes``, ``No`` or ``N/A``) in a GuessWhat?! dialogue."""

    question: str
    answer: str
    turn_id: int | None = None


class GameObject(Record):
    """One candidate object of a GuessWhat?! game."""

    object_id: int
    category: str | None = None
    category_id: int | None = None
    box: Box


class GuessWhatGame(Record):
    """One GuessWhat?! game: a dialogue about an image and the object it was about."""

    game_id: int
    image_id: int
    image_width: int | None = None
    image_height: int | None = None
    image_file_name: str | None = None
    turns: tuple[DialogTurn, ...]
    objects: tuple[GameObject, ...]
    target_object_id: int
    status: str | None = None
    """``"success"``, ``"failure"`` or ``"incomplete"``."""

    @model_validator(mode="after")
    def _target_is_candidate(self) -> Self:
        if not any(obj.object_id == self.target_object_id for obj in self.objects):
            raise ValueError(f"target object {self.target_object_id} is not among the objects")
        return self

    @property
    def target_box(self) -> Box:
        """The target object's box, xyxy."""
        return next(obj.box for obj in self.objects if obj.object_id == self.target_object_id)

    @property
    def feature_keys(self) -> tuple[str, ...]:
        """The COCO image id as a string."""
        return (str(self.image_id),)


class NLVR2Example(Record):
    """One NLVR2 statement about a pair of images."""

    identifier: str
    """``"<split>-<set>-<pair>-<sentence>"``, e.g. ``"dev-850-0-0"``."""
    sentence: str
    label: bool | None
    """True/False as released; None where the file carries no label."""
    left_image_id: str
    """``"<identifier minus its last -<sentence>>-img0"``, as the original derived it."""
    right_image_id: str
    directory: int | None = None
    """Train only: the bucket folder of the image files."""
    left_url: str | None = None
    right_url: str | None = None

    @property
    def feature_keys(self) -> tuple[str, ...]:
        """The left then the right image id."""
        return (self.left_image_id, self.right_image_id)


class SNLIVEExample(Record):
    """One SNLI-VE pair: a hypothesis about a Flickr30k image (the premise)."""

    pair_id: str
    image_id: int
    """Flickr30k id, from ``Flikr30kID`` (``"3637013.jpg"`` -> 3637013)."""
    hypothesis: str
    """``sentence2``, the only text the original encoded."""
    premise: str | None = None
    """``sentence1``, the Flickr30k caption (unused by 12-in-1)."""
    gold_label: SNLIVELabel | None
    """None where the file says ``"-"`` (no majority), which the original trained as all-zero."""

    @property
    def feature_keys(self) -> tuple[str, ...]:
        """The Flickr30k image id as a string."""
        return (str(self.image_id),)


class CaptionRow(Record):
    """One Conceptual Captions row: a caption and its image."""

    row: int
    """0-based row index in the file."""
    caption: str
    url: str | None = None
    image_id: str
    """``zlib.crc32(url) & 0xffffffff`` in decimal (the community download convention), or the id
    given by the original's ``caption_*.json``."""

    @property
    def feature_keys(self) -> tuple[str, ...]:
        """The image id."""
        return (self.image_id,)


AnyRecord = (
    VQAQuestion
    | GQAQuestion
    | VGQAPair
    | CaptionImage
    | RefSentence
    | PointingQA
    | GuessWhatGame
    | NLVR2Example
    | SNLIVEExample
    | CaptionRow
)
"""Every record kind a parser returns."""
