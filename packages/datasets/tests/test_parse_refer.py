"""RefCOCO family: Python-2 refs pickles, instances.json, REFER split selection, image boxes."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from twelve.datasets.errors import DataFormatError, MissingDataError, UnknownSplitError
from twelve.datasets.parsers import annotated_images, read_split
from twelve.datasets.records import RefSentence


def test_python2_pickle_has_byte_strings(official_files) -> None:
    data = official_files.python2_pickle_bytes([{"raw": "a dog"}])
    assert pickle.SHORT_BINSTRING + bytes([3]) + b"raw" in data
    assert data[:2] == b"\x80\x02"


def test_refcoco_train_pairs(tmp_path: Path, official_files) -> None:
    written = official_files.write_refer(tmp_path, "refcoco")
    records = read_split("refcoco", tmp_path, "train")
    refs = [ref for ref in written["refs"] if ref["split"] == "train"]
    expected = [(ref, sentence) for ref in refs for sentence in ref["sentences"]]
    assert len(records) == len(expected)
    annotations = {a["id"]: a for a in written["instances"]["annotations"]}
    images = {i["id"]: i for i in written["instances"]["images"]}
    for record, (ref, sentence) in zip(records, expected, strict=True):
        assert isinstance(record, RefSentence)
        assert (record.ref_id, record.ann_id, record.image_id) == (
            ref["ref_id"],
            ref["ann_id"],
            ref["image_id"],
        )
        assert record.sent_id == sentence["sent_id"]
        assert record.sentence == sentence["raw"]
        assert record.normalized_sentence == sentence["sent"]
        x, y, w, h = annotations[ref["ann_id"]]["bbox"]
        assert record.box == (x, y, x + w, y + h)
        assert record.category == "person"
        assert record.split == "train"
        assert record.image_width == images[ref["image_id"]]["width"]
        assert record.image_height == 480


def test_unc_test_is_testa_and_testb(tmp_path: Path, official_files) -> None:
    official_files.write_refer(tmp_path, "refcoco+")
    test_a = read_split("refcoco+", tmp_path, "testA")
    test_b = read_split("refcoco+", tmp_path, "testB")
    assert {r.split for r in test_a} == {"testA"}
    assert {r.split for r in test_b} == {"testB"}
    test = read_split("refcoco+", tmp_path, "test")
    assert sorted(r.sent_id for r in test) == sorted(r.sent_id for r in test_a + test_b)


def test_refcocog_umd(tmp_path: Path, official_files) -> None:
    official_files.write_refer(tmp_path, "refcocog")
    assert {r.split for r in read_split("refcocog", tmp_path, "test")} == {"test"}
    with pytest.raises(UnknownSplitError, match="testA"):
        read_split("refcocog", tmp_path, "testA")
    with pytest.raises(MissingDataError, match=r"refs\(unc\)\.p"):
        read_split("refcoco", tmp_path, "train")


def test_annotated_images_sorted_by_annotation_id(tmp_path: Path, official_files) -> None:
    written = official_files.write_refer(tmp_path, "refcoco")
    images = annotated_images("refcoco", tmp_path)
    assert set(images) == {str(i["id"]) for i in written["instances"]["images"]}
    image = images["581857"]
    assert [o.object_id for o in image.objects] == [1700, 1701, 1702]
    assert image.objects[2].category == "dog"
    assert (image.width, image.height) == (640, 480)


def test_unknown_annotation_is_named(tmp_path: Path, official_files) -> None:
    written = official_files.write_refer(tmp_path, "refcoco")
    written["refs"][0]["ann_id"] = 4242
    official_files.write_python2_pickle(tmp_path / "refs(unc).p", written["refs"])
    with pytest.raises(DataFormatError) as caught:
        read_split("refcoco", tmp_path, "train")
    assert caught.value.location == "refs[0]"
    assert caught.value.field == "ann_id"
    assert caught.value.value == 4242


def test_pickle_with_code_is_refused(tmp_path: Path, official_files) -> None:
    official_files.write_refer(tmp_path, "refcoco")
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps(Path("x"), protocol=2))
    with pytest.raises(DataFormatError, match="refusing to unpickle"):
        read_split("refcoco", tmp_path, "train")


def test_python2_utf8_byte_strings_are_decoded(tmp_path: Path, official_files) -> None:
    written = official_files.write_refer(tmp_path, "refcoco")
    written["refs"][0]["sentences"][0]["raw"] = "the man near the café sign"
    official_files.write_python2_pickle(tmp_path / "refs(unc).p", written["refs"])
    records = read_split("refcoco", tmp_path, "train")
    assert records[0].sentence == "the man near the café sign"
