"""Visual7W pointing: candidates, boxes, positions in the sorted box-id order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twelve.datasets.errors import DataFormatError
from twelve.datasets.parsers import annotated_images, read_split
from twelve.datasets.records import PointingQA


def test_pointing_records(tmp_path: Path, official_files) -> None:
    document = official_files.write_visual7w(tmp_path)
    boxes = {b["box_id"]: b for b in document["boxes"]}
    records = read_split("visual7w", tmp_path, "train")
    images = [image for image in document["images"] if image["split"] == "train"]
    qas = [qa for image in images for qa in image["qa_pairs"]]
    assert [r.qa_id for r in records] == [qa["qa_id"] for qa in qas]
    for record, qa in zip(records, qas, strict=True):
        assert isinstance(record, PointingQA)
        assert record.answer_box_id == qa["answer"]
        assert record.candidate_box_ids == (qa["answer"], *qa["multiple_choices"])
        box = boxes[qa["answer"]]
        assert record.answer_box == (
            box["x"],
            box["y"],
            box["x"] + box["width"],
            box["y"] + box["height"],
        )
        assert record.feature_keys == (f"v7w_{qa['image_id']}",)
    # positions index the image's QA box ids sorted ascending
    first_image = [r for r in records if r.image_id == images[0]["image_id"]]
    order = sorted({b for r in first_image for b in r.candidate_box_ids})
    for record in first_image:
        assert [order[p] for p in record.candidate_positions] == list(record.candidate_box_ids)
    assert any(box[0] < 0 for r in records for box in r.candidate_boxes)  # kept as released


def test_annotated_images_follow_the_same_order(tmp_path: Path, official_files) -> None:
    official_files.write_visual7w(tmp_path)
    images = annotated_images("visual7w", tmp_path, "train")
    records = read_split("visual7w", tmp_path, "train")
    for record in records:
        objects = images[f"v7w_{record.image_id}"].objects
        for box_id, position, box in zip(
            record.candidate_box_ids,
            record.candidate_positions,
            record.candidate_boxes,
            strict=True,
        ):
            assert objects[position].object_id == box_id
            assert objects[position].box == box


def test_unknown_box_id_is_named(tmp_path: Path, official_files) -> None:
    document = official_files.write_visual7w(tmp_path)
    document["images"][2]["qa_pairs"][0]["answer"] = 123456
    (tmp_path / "dataset_v7w_pointing.json").write_text(json.dumps(document))
    with pytest.raises(DataFormatError) as caught:
        read_split("visual7w", tmp_path, "val")
    assert caught.value.location == "document.images[2].qa_pairs[0]"
    assert caught.value.field == "answer"
    assert caught.value.value == 123456
