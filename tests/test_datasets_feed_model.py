"""End to end across packages: official files → feature store → task batch → model → loss.

The datasets and the model never import each other; their contract is a set of tensor names
and layouts (flattened retrieval and NLVR2 rows, region logits, pointing candidates). This test
runs every task's real batch through a tiny model, checks each head's output against its
targets and back-propagates the task's loss, so a drift on either side fails here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from twelve.datasets.batch import MODEL_INPUT_NAMES
from twelve.datasets.specs import TaskSpec
from twelve.datasets.tasks import TaskData, open_task_dataset
from twelve.model import AnswerHeadSpec, MultiTaskViLBERT, ViLBERTConfig, ViLBERTInputs

DATASET_TESTS = Path(__file__).resolve().parents[1] / "packages" / "datasets" / "tests"
TASKS = (
    "vqa",
    "vg_qa",
    "gqa",
    "retrieval_coco",
    "retrieval_flickr30k",
    "refcoco",
    "refcoco+",
    "refcocog",
    "visual7w",
    "guesswhat",
    "nlvr2",
    "snli_ve",
)

# The 12-in-1 train splits of VG QA and GQA hold all but the last 5,000 / 3,000 questions:
# empty in a tiny world, so these tasks train on an official split instead.
TINY_WORLD_TRAIN_SPLITS = {"vg_qa": "all", "gqa": "train"}


def _load(name: str) -> ModuleType:
    """Import a helper module of the datasets tests by path (tests use importlib mode)."""
    module_name = f"twelve_cross_package_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, DATASET_TESTS / f"{name}.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


@pytest.fixture(scope="module")
def helpers() -> SimpleNamespace:
    return SimpleNamespace(official_files=_load("official_files"), worlds=_load("task_worlds"))


@pytest.fixture(scope="module")
def tokenizer(helpers: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return helpers.worlds.tokenizer(tmp_path_factory.mktemp("vocab"))


def _model_for(spec: TaskSpec) -> MultiTaskViLBERT:
    """The tiny preset, reading this world's features, with answer heads sized to its vocabulary."""
    config = ViLBERTConfig.preset("tiny")
    heads = dict(config.heads)
    if spec.head == "answer":
        head = config.head_for(spec.name)
        heads[head] = AnswerHeadSpec(num_answers=spec.num_labels, hidden_size=80)
    config = config.model_copy(
        update={
            "vision": config.vision.model_copy(update={"feature_size": 8}),
            "text": config.text.model_copy(update={"max_position_embeddings": 512}),
            "heads": heads,
        }
    )
    torch.manual_seed(0)
    return MultiTaskViLBERT(config)


def _task_loss(spec: TaskSpec, batch: Any, logits: torch.Tensor) -> torch.Tensor:
    """The original's loss for each head kind (original-system.md §3.2), checking shapes on the way."""
    b = batch.batch_size
    if spec.head == "answer":
        assert logits.shape == batch.target.shape == (b, spec.num_labels)
        return F.binary_cross_entropy_with_logits(logits, batch.target) * spec.num_labels
    if spec.head == "alignment":
        assert logits.shape == (batch.num_rows,)
        grouped = logits.view(b, batch.pairs_per_example)
        return F.cross_entropy(grouped, batch.target)
    if spec.head == "region" and hasattr(batch, "candidate_index"):
        assert logits.shape == batch.region_mask.shape
        picked = logits.gather(1, batch.candidate_index)
        assert picked.shape == batch.target.shape
        # Candidates sit on real regions: none reads the −10000 of padding.
        assert bool(
            (
                batch.region_mask.gather(1, batch.candidate_index)[batch.candidate_mask == 1] == 1
            ).all()
        )
        return F.binary_cross_entropy_with_logits(picked, batch.target) * picked.shape[1]
    if spec.head == "region":
        assert logits.shape == batch.target.shape == batch.region_mask.shape
        return F.binary_cross_entropy_with_logits(logits, batch.target) * logits.shape[1]
    # pair (NLVR2: 2B rows → B predictions) and classifier (SNLI-VE)
    assert batch.target is not None
    assert logits.shape == batch.target.shape == (b, spec.num_labels)
    return F.binary_cross_entropy_with_logits(logits, batch.target)


@pytest.mark.parametrize("task", TASKS)
def test_a_training_batch_of_every_task_runs_through_the_model(
    task: str, helpers: SimpleNamespace, tokenizer: Any, tmp_path: Path
) -> None:
    spec, data = helpers.worlds.build_world(task, tmp_path / task, helpers.official_files)
    assert isinstance(data, TaskData)
    split = TINY_WORLD_TRAIN_SPLITS.get(task, spec.train_split)
    dataset = open_task_dataset(spec, data, split, tokenizer, training=True)
    batch = dataset.batch(list(range(min(len(dataset), 3))))
    inputs = ViLBERTInputs(**batch.model_inputs())
    assert set(batch.model_inputs()) == set(MODEL_INPUT_NAMES)

    model = _model_for(spec).train()
    output = model(inputs, task)
    loss = _task_loss(spec, batch, output.logits)
    assert torch.isfinite(loss)
    loss.backward()
    task_token = model.state_dict()["bert.embeddings.task_embeddings.weight"]
    assert task_token.shape[0] > model.config.tasks[task].token_id
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads
    assert all(torch.isfinite(g).all() for g in grads)
