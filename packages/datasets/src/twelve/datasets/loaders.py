"""Per-task loaders on `torchdata.nodes`: seeded shuffling, DDP sharding, workers, resumable state.

The pipeline is: a sharded, seeded sampler of `(index, seed)` keys → batches of keys → a worker
(thread or process) that reads the examples and collates a typed batch → prefetching → optional
pinning. Every random choice an example makes (retrieval negatives) is drawn from its key's
seed, so the stream depends only on (seed, epoch, rank), never on worker scheduling, and
`state_dict()` taken mid-epoch resumes exactly the batches that were still to come.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch.utils.data import Sampler
from torchdata.nodes import (
    Batcher,
    Loader,
    Mapper,
    ParallelMapper,
    PinMemory,
    Prefetcher,
    SamplerWrapper,
)
from torchdata.nodes.base_node import BaseNode

from twelve.datasets.batch import TaskBatch, batches_in_shared_memory
from twelve.datasets.tasks.base import ItemKey, TaskDataset

BatchT = TypeVar("BatchT", bound=TaskBatch)


class LoaderConfig(BaseModel):
    """How one task's examples are streamed: order, sharding, parallelism, prefetching."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_size: int | None = Field(default=None, gt=0)
    """Examples per batch on this rank; None = the task spec's batch size."""
    shuffle: bool = True
    seed: int = 0
    drop_last: bool = False
    """Drop a last, smaller batch (the original keeps it)."""
    rank: int = Field(default=0, ge=0)
    world_size: int = Field(default=1, gt=0)
    num_workers: int = Field(default=0, ge=0)
    """0 = build batches in the calling thread."""
    worker_method: Literal["thread", "process"] = "process"
    multiprocessing_context: Literal["fork", "forkserver", "spawn"] | None = None
    prefetch: int = Field(default=2, ge=0)
    """Batches built ahead of the consumer; 0 = none."""
    pin_memory: bool = False
    """Page-lock batches for fast copies to a CUDA device (needs CUDA)."""

    @model_validator(mode="after")
    def _check_rank(self) -> LoaderConfig:
        if self.rank >= self.world_size:
            raise ValueError(f"rank {self.rank} is not below world_size {self.world_size}")
        return self


class ShardedSampler(Sampler[ItemKey]):
    """Seeded permutation per epoch, split across ranks; each index comes with its own seed.

    Like `DistributedSampler`, the order is padded by wrapping around so that every rank sees
    the same number of examples (DDP steps stay in lockstep); distributed evaluation therefore
    sees up to world_size − 1 examples twice, which batches' `example_ids` let metrics drop.
    """

    def __init__(
        self, size: int, *, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.per_rank = math.ceil(size / world_size)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose permutation and example seeds the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[ItemKey]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.size) if self.shuffle else np.arange(self.size)
        seeds = rng.integers(0, 2**63 - 1, size=self.size, dtype=np.int64)
        total = self.per_rank * self.world_size
        if total > self.size:
            order = np.concatenate([order, order[: total - self.size]])
            seeds = np.concatenate([seeds, seeds[: total - self.size]])
        for position in range(self.rank, total, self.world_size):
            yield ItemKey(int(order[position]), int(seeds[position]))


class _BuildBatch:
    """Turn a list of keys into a collated batch (runs in worker threads or processes)."""

    def __init__(self, dataset: TaskDataset[Any, Any], *, shared_memory: bool) -> None:
        self.dataset = dataset
        self.shared_memory = shared_memory

    def __call__(self, keys: list[ItemKey]) -> TaskBatch:
        if not self.shared_memory:
            return self.dataset.batch(keys)
        with batches_in_shared_memory():
            return self.dataset.batch(keys)


class TaskLoader(Generic[BatchT]):
    """An iterable of one task's batches, one epoch per `iter()`, resumable mid-epoch."""

    def __init__(self, dataset: TaskDataset[Any, BatchT], config: LoaderConfig) -> None:
        self.dataset = dataset
        self.config = config
        self.batch_size = config.batch_size or dataset.spec.batch_size
        self.sampler = ShardedSampler(
            len(dataset),
            shuffle=config.shuffle,
            seed=config.seed,
            rank=config.rank,
            world_size=config.world_size,
        )
        node: BaseNode[Any] = SamplerWrapper(self.sampler)
        node = Batcher(node, batch_size=self.batch_size, drop_last=config.drop_last)
        in_processes = config.num_workers > 0 and config.worker_method == "process"
        build = _BuildBatch(dataset, shared_memory=in_processes)
        if config.num_workers == 0:
            node = Mapper(node, build)
        else:
            node = ParallelMapper(
                node,
                build,
                num_workers=config.num_workers,
                in_order=True,
                method=config.worker_method,
                multiprocessing_context=config.multiprocessing_context,
            )
        if config.prefetch > 0:
            node = Prefetcher(node, prefetch_factor=config.prefetch)
        if config.pin_memory:
            if not torch.cuda.is_available():
                raise ValueError("pin_memory needs CUDA, which this machine does not have")
            node = PinMemory(node)
        self._loader: Loader[BatchT] = Loader(node, restart_on_stop_iteration=True)

    @property
    def task(self) -> str:
        """Name of the task this loader streams."""
        return self.dataset.spec.name

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        if self.config.drop_last:
            return len(self.sampler) // self.batch_size
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[BatchT]:
        return iter(self._loader)

    def state_dict(self) -> dict[str, Any]:
        """Position in the stream (epoch and batches already delivered), for checkpoints."""
        return {"task": self.task, "loader": self._loader.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next `iter()` continue where the saved state stopped."""
        if state.get("task") != self.task:
            raise ValueError(
                f"loader state belongs to task {state.get('task')!r}, not {self.task!r}"
            )
        self._loader.load_state_dict(state["loader"])
