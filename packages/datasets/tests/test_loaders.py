"""Stateful per-task loaders: exact mid-epoch resume, seeded shuffling, DDP sharding, workers."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from twelve.datasets.loaders import LoaderConfig, ShardedSampler, TaskLoader
from twelve.datasets.tasks import open_task_dataset
from twelve.datasets.tasks.base import TaskDataset

worlds = SimpleNamespace(**runpy.run_path(str(Path(__file__).with_name("task_worlds.py"))))


@pytest.fixture(scope="module")
def datasets(
    tmp_path_factory: pytest.TempPathFactory, official_files: ModuleType
) -> dict[str, TaskDataset[Any, Any]]:
    root = tmp_path_factory.mktemp("loaders")
    tokenizer = worlds.tokenizer(root)
    out = {}
    for task, split in (("vqa", "trainval"), ("retrieval_coco", "train")):
        spec, data = worlds.build_world(task, root / task, official_files)
        out[task] = open_task_dataset(spec, data, split, tokenizer)
    return out


def _signature(batch: Any) -> tuple[Any, ...]:
    """What identifies a batch's content exactly."""
    return (
        batch.example_ids,
        batch.input_ids.tolist(),
        batch.region_features.sum().item(),
        getattr(batch, "image_ids", None),
    )


def _epoch(loader: TaskLoader[Any]) -> list[tuple[Any, ...]]:
    return [_signature(batch) for batch in loader]


@pytest.mark.parametrize(
    "workers",
    [
        {"num_workers": 0},
        {"num_workers": 2, "worker_method": "thread"},
        {"num_workers": 2, "worker_method": "process", "multiprocessing_context": "fork"},
    ],
    ids=["inline", "threads", "processes"],
)
def test_resume_mid_epoch_gives_the_identical_remaining_stream(
    datasets: dict[str, TaskDataset[Any, Any]], workers: dict[str, Any]
) -> None:
    dataset = datasets["retrieval_coco"]  # random negatives make the stream seed-dependent
    config = LoaderConfig(batch_size=2, seed=5, prefetch=2, **workers)
    reference = TaskLoader(dataset, config)
    first_epoch, second_epoch = _epoch(reference), _epoch(reference)
    assert len(first_epoch) == len(reference) == 8  # 15 captions, last batch of 1 kept
    assert first_epoch != second_epoch  # a new permutation and new negatives each epoch

    interrupted = TaskLoader(dataset, config)
    stream = iter(interrupted)
    seen = [_signature(next(stream)) for _ in range(3)]
    state = interrupted.state_dict()
    assert seen == first_epoch[:3]

    resumed = TaskLoader(dataset, config)
    resumed.load_state_dict(state)
    assert _epoch(resumed) == first_epoch[3:]
    assert _epoch(resumed) == second_epoch  # and the epochs after it follow on


def test_workers_do_not_change_the_stream(datasets: dict[str, TaskDataset[Any, Any]]) -> None:
    dataset = datasets["retrieval_coco"]
    inline = _epoch(TaskLoader(dataset, LoaderConfig(batch_size=4, seed=1, prefetch=0)))
    threads = _epoch(
        TaskLoader(
            dataset, LoaderConfig(batch_size=4, seed=1, num_workers=3, worker_method="thread")
        )
    )
    assert inline == threads


def test_seeded_shuffling(datasets: dict[str, TaskDataset[Any, Any]]) -> None:
    dataset = datasets["vqa"]
    ids = lambda seed, shuffle=True: [  # noqa: E731
        i
        for batch in TaskLoader(dataset, LoaderConfig(batch_size=2, seed=seed, shuffle=shuffle))
        for i in batch.example_ids
    ]
    assert ids(0) == ids(0)
    assert sorted(ids(0)) == sorted(ids(1)) == sorted(r for r in ids(0, shuffle=False))
    assert ids(0, shuffle=False) == [str(r.question_id) for r in dataset.records]
    assert any(ids(seed) != ids(0) for seed in range(1, 4))


def test_sharding_by_rank() -> None:
    per_rank = [
        [key.index for key in ShardedSampler(10, shuffle=True, seed=2, rank=rank, world_size=3)]
        for rank in range(3)
    ]
    assert [len(indices) for indices in per_rank] == [4, 4, 4]  # padded so DDP steps match
    assert len({i for indices in per_rank for i in indices}) == 10
    even = [list(ShardedSampler(9, shuffle=True, seed=2, rank=r, world_size=3)) for r in range(3)]
    assert len({key.index for keys in even for key in keys}) == 9  # disjoint when it divides
    sampler = ShardedSampler(9, shuffle=True, seed=2)
    sampler.set_epoch(1)
    assert [k.index for k in sampler] != [k.index for k in ShardedSampler(9, shuffle=True, seed=2)]


def test_loader_shards_the_dataset(datasets: dict[str, TaskDataset[Any, Any]]) -> None:
    dataset = datasets["vqa"]
    seen = []
    for rank in range(2):
        loader = TaskLoader(dataset, LoaderConfig(batch_size=2, seed=0, rank=rank, world_size=2))
        assert len(loader) == 2
        seen += [i for batch in loader for i in batch.example_ids]
    assert sorted(seen) == sorted(str(r.question_id) for r in dataset.records)


def test_config_and_state_are_checked(datasets: dict[str, TaskDataset[Any, Any]]) -> None:
    with pytest.raises(ValidationError, match="rank 2 is not below world_size 2"):
        LoaderConfig(rank=2, world_size=2)
    loader = TaskLoader(datasets["vqa"], LoaderConfig(batch_size=4, drop_last=True))
    assert loader.batch_size == 4
    assert len(loader) == 1
    assert [batch.batch_size for batch in loader] == [4]
    assert TaskLoader(datasets["vqa"], LoaderConfig()).batch_size == 128  # the spec's
    other = TaskLoader(datasets["retrieval_coco"], LoaderConfig())
    with pytest.raises(ValueError, match="belongs to task 'vqa'"):
        other.load_state_dict(loader.state_dict())
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="pin_memory needs CUDA"):
            TaskLoader(datasets["vqa"], LoaderConfig(pin_memory=True))
