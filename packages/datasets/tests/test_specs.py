"""Task specs: the names and ids of the contracts, the original's defaults, validated overrides."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from twelve.datasets.errors import UnknownTaskError
from twelve.datasets.parsers import tasks as parser_tasks
from twelve.datasets.specs import TASK_SPECS, TWELVE_TASKS, get_spec, spec_for_task_id

# contracts.md: task names and original task-token ids; head kinds.
CONTRACT = {
    "vqa": (1, "answer"),
    "vg_qa": (2, "answer"),
    "visual7w": (4, "region"),
    "retrieval_coco": (7, "alignment"),
    "retrieval_flickr30k": (8, "alignment"),
    "refcoco": (9, "region"),
    "refcoco+": (10, "region"),
    "refcocog": (11, "region"),
    "nlvr2": (12, "pair"),
    "snli_ve": (13, "classifier"),
    "gqa": (15, "answer"),
    "guesswhat": (17, "region"),
}

# original-system.md §3.1: T, R, batch, lr, train split, loss.
TABLE = {
    "vqa": (23, 101, 128, 4e-5, "trainval", "bce"),
    "vg_qa": (26, 101, 128, 4e-5, "train", "bce"),
    "gqa": (26, 101, 128, 4e-5, "trainval", "bce"),
    "retrieval_coco": (30, 101, 128, 2e-5, "train", "cross_entropy"),
    "retrieval_flickr30k": (30, 101, 128, 2e-5, "train", "cross_entropy"),
    "refcoco": (20, 101, 256, 2e-5, "train", "bce"),
    "refcoco+": (20, 101, 256, 2e-5, "train", "bce"),
    "refcocog": (20, 101, 256, 2e-5, "train", "bce"),
    "visual7w": (20, 200, 256, 2e-5, "train", "bce"),
    "guesswhat": (256, 306, 64, 2e-5, "train", "bce"),
    "nlvr2": (40, 101, 64, 2e-5, "train", "bce"),
    "snli_ve": (56, 101, 256, 2e-5, "train", "bce"),
}


def test_twelve_tasks_match_the_contract_names_ids_and_heads() -> None:
    assert set(TWELVE_TASKS) == set(CONTRACT)
    assert [get_spec(name).task_id for name in TWELVE_TASKS] == sorted(
        task_id for task_id, _ in CONTRACT.values()
    )
    for name, (task_id, head) in CONTRACT.items():
        spec = get_spec(name)
        assert (spec.name, spec.task_id, spec.head) == (name, task_id, head)
        assert spec_for_task_id(task_id) is spec


@pytest.mark.parametrize("name", sorted(TABLE))
def test_defaults_are_the_originals(name: str) -> None:
    spec = get_spec(name)
    assert (
        spec.max_text_length,
        spec.max_regions,
        spec.batch_size,
        spec.learning_rate,
        spec.train_split,
        spec.loss,
    ) == TABLE[name]
    assert spec.num_epochs == 20


def test_head_details_of_the_original() -> None:
    assert get_spec("vqa").num_labels == get_spec("vg_qa").num_labels == 3129
    assert get_spec("gqa").num_labels == 1533
    assert get_spec("gqa").head_name == "vil_prediction_gqa"
    assert get_spec("nlvr2").num_labels == 2
    assert get_spec("nlvr2").images_per_example == 2
    assert get_spec("snli_ve").num_labels == 3
    assert get_spec("visual7w").num_candidates == 4
    assert get_spec("guesswhat").num_candidates == 204
    assert get_spec("retrieval_coco").retrieval_negatives == 4
    assert get_spec("retrieval_coco").val_split == "test"  # the original validated on test
    assert {get_spec(n).gt_boxes for n in ("refcoco", "refcoco+", "refcocog")} == {"train"}
    assert get_spec("visual7w").gt_boxes == get_spec("guesswhat").gt_boxes == "all"
    assert get_spec("refcoco").test_splits == ("testA", "testB")
    assert get_spec("refcocog").test_splits == ("test",)
    assert get_spec("nlvr2").clean_ids is None
    assert get_spec("vg_qa").clean_splits == ("train", "val")


def test_groups_of_the_paper() -> None:
    groups: dict[str, set[str]] = {}
    for name in TWELVE_TASKS:
        groups.setdefault(get_spec(name).group, set()).add(name)
    assert groups == {
        "vqa": {"vqa", "gqa", "vg_qa"},
        "retrieval": {"retrieval_coco", "retrieval_flickr30k"},
        "grounding": {"refcoco", "refcoco+", "refcocog", "visual7w", "guesswhat"},
        "verification": {"nlvr2", "snli_ve"},
    }


def test_pretraining_spec() -> None:
    spec = get_spec("conceptual_captions")
    assert spec.task_id is None
    assert spec.group == "pretraining"
    assert (spec.max_text_length, spec.max_regions, spec.batch_size) == (36, 37, 512)
    assert spec.name not in TWELVE_TASKS


def test_every_spec_has_a_parser_with_its_splits() -> None:
    assert set(TASK_SPECS) == set(parser_tasks())


def test_overrides_are_validated() -> None:
    spec = get_spec("vqa", {"batch_size": 32, "max_regions": 37})
    assert (spec.batch_size, spec.max_regions) == (32, 37)
    assert get_spec("vqa").batch_size == 128  # the registry is untouched
    with pytest.raises(ValueError, match="unknown spec field"):
        get_spec("vqa", {"batch_sise": 32})
    with pytest.raises(ValidationError, match="batch_size"):
        get_spec("vqa").with_overrides({"batch_size": 0})
    with pytest.raises(ValidationError, match="num_labels"):
        get_spec("vqa").with_overrides({"num_labels": None})
    with pytest.raises(ValidationError):
        get_spec("vqa").with_overrides({"max_text_length": 2})


def test_specs_are_immutable() -> None:
    with pytest.raises(ValidationError):
        get_spec("vqa").batch_size = 1  # type: ignore[misc]


def test_unknown_task() -> None:
    with pytest.raises(UnknownTaskError, match=r"unknown task 'vqa3'.*known tasks: vqa"):
        get_spec("vqa3")
    with pytest.raises(KeyError, match="no task has original id 3"):
        spec_for_task_id(3)
