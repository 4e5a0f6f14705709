"""GuessWhat?!: gzip JSON-lines, both release schemas, status filter, malformed lines."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from twelve.datasets.errors import DataFormatError
from twelve.datasets.parsers import annotated_images, guesswhat, read_split
from twelve.datasets.records import GuessWhatGame


def _check(records, games) -> None:
    assert len(records) == len(games)
    for record, game in zip(records, games, strict=True):
        assert isinstance(record, GuessWhatGame)
        assert record.game_id == game["id"]
        assert record.image_id == game["image"]["id"]
        assert (record.image_width, record.image_height) == (640, 480)
        assert [(t.question, t.answer) for t in record.turns] == [
            (qa["question"], qa["answer"]) for qa in game["qas"]
        ]
        assert [o.object_id for o in record.objects] == [o["id"] for o in game["objects"]]
        x, y, w, h = game["objects"][1]["bbox"]
        assert record.target_object_id == game["object_id"]
        assert record.target_box == (x, y, x + w, y + h)
        assert record.status == game["status"]


def test_all_games_are_kept(tmp_path: Path, official_files) -> None:
    written = official_files.write_guesswhat(tmp_path)
    assert (tmp_path / "guesswhat.train.jsonl.gz").read_bytes()[:2] == b"\x1f\x8b"
    records = read_split("guesswhat", tmp_path, "train")
    _check(records, written["train"])
    assert {r.status for r in records} == {"success", "failure", "incomplete"}


def test_status_filter(tmp_path: Path, official_files) -> None:
    official_files.write_guesswhat(tmp_path)
    records = guesswhat.read(tmp_path, "train", statuses=("success",))
    assert [r.status for r in records] == ["success"]


def test_2022_schema_and_uncompressed_original(tmp_path: Path, official_files) -> None:
    official = official_files.write_guesswhat(tmp_path / "a")
    official_files.write_guesswhat(tmp_path / "b", compressed=False, schema="2022")
    records = read_split("guesswhat", tmp_path / "b", "valid")
    _check(records, official["valid"])
    assert records == read_split("guesswhat", tmp_path / "a", "valid")


def test_annotated_images_union_of_games(tmp_path: Path, official_files) -> None:
    official_files.write_guesswhat(tmp_path)
    images = annotated_images("guesswhat", tmp_path, "train")
    assert set(images) == {"9", "25"}
    assert [o.object_id for o in images["9"].objects] == [90, 91, 92]


def test_malformed_line_is_reported_with_its_number(tmp_path: Path, official_files) -> None:
    written = official_files.write_guesswhat(tmp_path)
    lines = [json.dumps(game) for game in written["test"]]
    lines.insert(1, '{"id": 5, "image": ')
    path = tmp_path / "guesswhat.test.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    with pytest.raises(DataFormatError) as caught:
        read_split("guesswhat", tmp_path, "test")
    assert caught.value.path == path
    assert caught.value.location == "line 2"


def test_target_must_be_one_of_the_objects(tmp_path: Path, official_files) -> None:
    written = official_files.write_guesswhat(tmp_path)
    written["valid"][0]["object_id"] = 1
    official_files.write_json_lines(
        tmp_path / "guesswhat.valid.jsonl.gz", written["valid"], compress=True
    )
    with pytest.raises(DataFormatError) as caught:
        read_split("guesswhat", tmp_path, "valid")
    assert (caught.value.location, caught.value.field, caught.value.value) == (
        "line 1",
        "object_id",
        1,
    )


def test_original_cached_image_objects(tmp_path: Path, official_files) -> None:
    official_files.write_guesswhat(tmp_path, compressed=False)
    cache = tmp_path / "cache"
    official_files.write_python2_pickle(
        cache / "image_bbox_list.pkl", {9: {"bboxes": [92, 90, 92, 91]}, 25: {"bboxes": [250]}}
    )
    # boxes as the original stored them: plain lists, or numpy arrays
    boxes = {
        90: [0.0, 1.0, 2.0, 3.0],
        91: np.array([1, 2, 3, 4.5]),
        92: (5, 6, 7, 8),
        250: [1, 1, 2, 2],
    }
    (cache / "bboxes_dict.pkl").write_bytes(pickle.dumps(boxes, protocol=2))
    images = annotated_images("guesswhat", tmp_path)
    assert [o.object_id for o in images["9"].objects] == [90, 91, 92]
    assert images["9"].objects[1].box == (1.0, 2.0, 3.0, 4.5)
    assert images["25"].objects[0].box == (1.0, 1.0, 2.0, 2.0)
    # with the official game files present they win, unless the original layout is asked for
    official_files.write_guesswhat(tmp_path)
    assert [o.object_id for o in annotated_images("guesswhat", tmp_path)["25"].objects] == [
        250,
        251,
        252,
    ]
    assert len(annotated_images("guesswhat", tmp_path, layout="original")["25"].objects) == 1


def test_original_cache_missing_box(tmp_path: Path, official_files) -> None:
    cache = tmp_path / "cache"
    official_files.write_python2_pickle(cache / "image_bbox_list.pkl", {9: {"bboxes": [1, 2]}})
    official_files.write_python2_pickle(cache / "bboxes_dict.pkl", {1: [0, 0, 1, 1]})
    with pytest.raises(DataFormatError, match="no box for object 2 of image 9"):
        annotated_images("guesswhat", tmp_path, layout="original")
