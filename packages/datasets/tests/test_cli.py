"""`twelve data inspect | vocab | hard-negatives` through click's runner."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from twelve.datasets.answers import AnswerVocabulary
from twelve.datasets.cli import data
from twelve.datasets.hard_negatives import HardNegativePool
from twelve.datasets.parsers import splits
from twelve.datasets.specs import TWELVE_TASKS

worlds = SimpleNamespace(**runpy.run_path(str(Path(__file__).with_name("task_worlds.py"))))


def _run(*args: Any) -> Any:
    return CliRunner().invoke(data, [str(arg) for arg in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory, official_files: ModuleType) -> Any:
    root = tmp_path_factory.mktemp("coco")
    worlds.build_world("retrieval_coco", root, official_files, missing=("74",))
    return root


@pytest.mark.parametrize("task", [*TWELVE_TASKS, "conceptual_captions"])
def test_inspect_every_task_as_json(task: str, tmp_path: Path, official_files: ModuleType) -> None:
    official_files.write_task(task, tmp_path)
    split = splits(task)[0]
    result = _run("inspect", task, "--root", tmp_path, "--split", split, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["task"] == task
    assert report["split"] == split
    assert report["count"] > 0
    assert report["images"] > 0
    assert report["sample"]["feature_keys"]


def test_inspect_retrieval_counts_captions_and_images(coco: Path) -> None:
    result = _run("inspect", "retrieval_coco", "--root", coco / "files", "--split", "train")
    assert result.exit_code == 0
    assert "retrieval_coco / train: 15 examples (one caption each) over 3 images" in result.output
    assert '"caption":' in result.output
    as_json = json.loads(
        _run(
            "inspect", "retrieval_coco", "--root", coco / "files", "--split", "train", "--json"
        ).output
    )
    assert (as_json["count"], as_json["images"]) == (15, 3)
    assert as_json["sample"]["captions_of_image"] == 5


def test_inspect_with_features(coco: Path) -> None:
    ok = _run(
        "inspect",
        "retrieval_coco",
        "--root",
        coco / "files",
        "--split",
        "train",
        "--features",
        coco / "features",
        "--json",
    )
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["features"]["images_found"] == 3
    missing = _run(
        "inspect",
        "retrieval_coco",
        "--root",
        coco / "files",
        "--split",
        "test",
        "--features",
        coco / "features",
    )
    assert missing.exit_code == 1
    assert "retrieval_coco: image id '74' not in the feature store" in missing.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nope", "--split", "train"), "unknown task 'nope'"),
        (("vqa", "--split", "val2015"), "vqa: unknown split 'val2015'"),
        (("vqa", "--split", "val2014"), "v2_OpenEnded_mscoco_val2014_questions.json"),
    ],
)
def test_inspect_errors_exit_non_zero(args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    result = _run("inspect", args[0], "--root", tmp_path, *args[1:])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_vocab_build_and_import(tmp_path: Path, official_files: ModuleType) -> None:
    official_files.write_vqa(tmp_path / "vqa")
    out = tmp_path / "vqa.json"
    result = _run(
        "vocab", "build", "vqa", "--root", tmp_path / "vqa", "--min-count", "1", "--out", out
    )
    assert result.exit_code == 0, result.output
    built = AnswerVocabulary.load(out)
    assert f"vqa: {len(built)} answers" in result.output
    too_strict = _run(
        "vocab", "build", "vqa", "--root", tmp_path / "vqa", "--out", tmp_path / "x.json"
    )
    assert too_strict.exit_code == 1
    assert "lower min_count" in too_strict.output
    assert not (tmp_path / "x.json").exists()

    ans2label, label2ans = official_files.write_original_vocabulary(
        tmp_path / "cache", ["yes", "no", "2"]
    )
    imported = tmp_path / "original.json"
    result = _run(
        "vocab",
        "import",
        "--ans2label",
        ans2label,
        "--label2ans",
        label2ans,
        "--name",
        "vqa",
        "--out",
        imported,
    )
    assert result.exit_code == 0, result.output
    assert AnswerVocabulary.load(imported).answers == ("yes", "no", "2")
    assert _run("vocab", "import", "--name", "vqa", "--out", imported).exit_code == 2


def test_hard_negatives_command(coco: Path, tmp_path: Path) -> None:
    out = tmp_path / "pool.npz"
    np.save(tmp_path / "test_ids.npy", np.array([25]))
    result = _run(
        "hard-negatives", "retrieval_coco", "--root", coco / "files", "--features", coco / "features",
        "--out", out, "--split", "train+restval", "--exclude-images", tmp_path / "test_ids.npy", "--pool-size", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    pool = HardNegativePool.load(out)
    assert pool.image_ids == ("9", "30", "42")
    assert pool.neighbours.shape == (3, 3)
    assert pool.metadata["split"] == "train+restval"
    missing = _run(
        "hard-negatives", "retrieval_coco", "--root", coco / "files", "--features", coco / "features",
        "--out", tmp_path / "bad.npz", "--split", "test",
    )  # fmt: skip
    assert missing.exit_code == 1
    assert "image id '74' not in the feature store" in missing.output
    assert not (tmp_path / "bad.npz").exists()
