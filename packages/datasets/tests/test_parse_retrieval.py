"""Karpathy caption files (COCO, Flickr30k) and the original retrieval JSON-lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twelve.datasets.errors import DataFormatError, UnknownSplitError
from twelve.datasets.parsers import count_examples, count_images, read_split
from twelve.datasets.records import CaptionImage


@pytest.mark.parametrize("split", ["train", "restval", "val", "test"])
def test_coco_splits(tmp_path: Path, official_files, split) -> None:
    document = official_files.write_karpathy(tmp_path, "coco")
    records = read_split("retrieval_coco", tmp_path, split)
    expected = [image for image in document["images"] if image["split"] == split]
    assert [r.image_id for r in records] == [image["cocoid"] for image in expected]
    for record, image in zip(records, expected, strict=True):
        assert isinstance(record, CaptionImage)
        assert record.sentences == tuple(s["raw"] for s in image["sentences"])
        assert record.sentence_ids == tuple(image["sentids"])
        assert record.file_path == "val2014"
        assert record.file_name == image["filename"]
    assert count_examples("retrieval_coco", records) == 5 * len(records)
    assert count_images(records) == len(records)


def test_flickr_ids_come_from_file_names(tmp_path: Path, official_files) -> None:
    official_files.write_karpathy(tmp_path, "flickr30k")
    records = read_split("retrieval_flickr30k", tmp_path, "test")
    assert [r.image_id for r in records] == [1000344755, 1000366164]
    assert records[0].file_name == "1000344755.jpg"
    assert records[0].feature_keys == ("1000344755",)
    with pytest.raises(UnknownSplitError):
        read_split("retrieval_flickr30k", tmp_path, "restval")


def test_original_jsonlines_for_coco_and_flickr(tmp_path: Path, official_files) -> None:
    coco = tmp_path / "coco"
    official_files.write_retrieval_original(coco, "coco", "test_set0", [74, 133])
    records = read_split("retrieval_coco", coco, "test_set0")
    assert [r.image_id for r in records] == [74, 133]
    assert len(records[0].sentences) == 5

    flickr = tmp_path / "flickr"
    official_files.write_retrieval_original(flickr, "flickr30k", "train", [1000092795])
    records = read_split("retrieval_flickr30k", flickr, "train")
    assert records[0].image_id == 1000092795
    assert records[0].file_name == "1000092795.jpg"


def test_official_file_wins_over_original(tmp_path: Path, official_files) -> None:
    official_files.write_karpathy(tmp_path, "coco")
    official_files.write_retrieval_original(tmp_path, "coco", "train", [1])
    assert [r.image_id for r in read_split("retrieval_coco", tmp_path, "train")] == [9, 25, 30]
    original = read_split("retrieval_coco", tmp_path, "train", layout="original")
    assert [r.image_id for r in original] == [1]


def test_bad_flickr_file_name(tmp_path: Path, official_files) -> None:
    document = official_files.write_karpathy(tmp_path, "flickr30k")
    document["images"][2]["filename"] = "flower.jpg"
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps(document))
    with pytest.raises(DataFormatError) as caught:
        read_split("retrieval_flickr30k", tmp_path, "val")
    assert caught.value.location == "document.images[2]"
    assert caught.value.field == "filename"


def test_malformed_jsonline_reports_line_number(tmp_path: Path, official_files) -> None:
    path = tmp_path / "all_data_final_train_2014.jsonline"
    path.write_text('{"id": 1, "sentences": ["a"]}\n{"id": 2, "sentences": [\n')
    with pytest.raises(DataFormatError, match=r"line 2: not a valid JSON line"):
        read_split("retrieval_coco", tmp_path, "train")
