"""Visual7W pointing: ``dataset_v7w_pointing.json`` with images, QA pairs and boxes (§8).

One record per pointing QA pair of the images whose ``split`` matches; candidates are the answer
box followed by the 3 distractor boxes. Each image's box order for ground-truth features is its
QA-referenced box ids sorted ascending (what the original assumed of its ground-truth LMDB);
`PointingQA.candidate_positions` index into that order. The original used this same file.
"""

from __future__ import annotations

from pathlib import Path

from twelve.datasets.errors import DataFormatError, UnknownSplitError
from twelve.datasets.parsers._io import Fields, build, load_json, require_file
from twelve.datasets.records import AnnotatedImage, AnnotatedObject, Box, PointingQA, xywh_to_xyxy

TASK = "visual7w"
SPLITS = ("train", "val", "test")


def dataset_path(root: Path) -> Path:
    """The official pointing file."""
    return root / "dataset_v7w_pointing.json"


def _load(root: Path) -> tuple[Path, Fields, dict[int, tuple[Box, str | None]]]:
    """Open the file and index its boxes by box id."""
    path = require_file(dataset_path(root), "Visual7W pointing file")
    document = Fields(load_json(path), path, "document")
    boxes: dict[int, tuple[Box, str | None]] = {}
    for box in document.items("boxes"):
        boxes[box.int("box_id")] = (
            xywh_to_xyxy(
                box.number("x"), box.number("y"), box.number("width"), box.number("height")
            ),
            box.optional_str("name"),
        )
    return path, document, boxes


def _qa_box_ids(qa: Fields) -> list[int]:
    """The answer box id then the distractor box ids of one QA pair."""
    return [qa.int("answer"), *qa.int_list("multiple_choices")]


def _check_known(qa: Fields, box_ids: list[int], boxes: dict[int, object]) -> None:
    for box_id in box_ids:
        if box_id not in boxes:
            field = "answer" if box_id == box_ids[0] else "multiple_choices"
            raise qa.error(field, "refers to a box id absent from 'boxes'", box_id)


def read(root: Path, split: str) -> list[PointingQA]:
    """Pointing QA pairs of the images in `split`, in file order."""
    if split not in SPLITS:
        raise UnknownSplitError(TASK, split, SPLITS)
    path, document, boxes = _load(root)
    records: list[PointingQA] = []
    for image in document.items("images"):
        if image.str("split") != split:
            continue
        image_id = image.int("image_id")
        qas = list(image.items("qa_pairs"))
        candidates_per_qa = [_qa_box_ids(qa) for qa in qas]
        order = sorted({box_id for ids in candidates_per_qa for box_id in ids})
        position = {box_id: index for index, box_id in enumerate(order)}
        for qa, candidate_ids in zip(qas, candidates_per_qa, strict=True):
            _check_known(qa, candidate_ids, boxes)
            if qa.has("image_id") and qa.int("image_id") != image_id:
                raise qa.error(
                    "image_id", f"differs from its image's id {image_id}", qa.raw("image_id")
                )
            records.append(
                build(
                    PointingQA,
                    path,
                    qa.location,
                    qa_id=qa.int("qa_id"),
                    image_id=image_id,
                    question=qa.str("question"),
                    split=split,
                    answer_box_id=candidate_ids[0],
                    candidate_box_ids=tuple(candidate_ids),
                    candidate_boxes=tuple(boxes[box_id][0] for box_id in candidate_ids),
                    candidate_positions=tuple(position[box_id] for box_id in candidate_ids),
                )
            )
    return records


def read_images(root: Path, split: str | None = None) -> dict[int, AnnotatedImage]:
    """Each image (of `split`, or all) with its QA-referenced boxes sorted by box id.

    This is the box order of the ground-truth-box features the pointing candidates index into.
    """
    if split is not None and split not in SPLITS:
        raise UnknownSplitError(TASK, split, SPLITS)
    path, document, boxes = _load(root)
    images: dict[int, AnnotatedImage] = {}
    for image in document.items("images"):
        if split is not None and image.str("split") != split:
            continue
        image_id = image.int("image_id")
        box_ids: set[int] = set()
        for qa in image.items("qa_pairs"):
            ids = _qa_box_ids(qa)
            _check_known(qa, ids, boxes)
            box_ids.update(ids)
        if image_id in images:
            raise DataFormatError(
                path,
                "image listed twice",
                location=image.location,
                field="image_id",
                value=image_id,
            )
        images[image_id] = AnnotatedImage(
            image_id=image_id,
            file_name=image.optional_str("filename"),
            objects=tuple(
                AnnotatedObject(object_id=box_id, box=boxes[box_id][0], category=boxes[box_id][1])
                for box_id in sorted(box_ids)
            ),
        )
    return images
