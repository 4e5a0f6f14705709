"""The `twelve data` command group; heavy imports stay inside the commands that need them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

_TRUST_PICKLE_HELP = (
    "Allow reading an original vilbert-multi-task LMDB feature file (pickled records, read "
    "through a restricted unpickler). Only for files from a source you trust."
)


@click.group(name="data")
def data() -> None:
    """Task datasets: inspect official files, build answer vocabularies, hard negatives."""


def _known_errors() -> tuple[type[Exception], ...]:
    from twelve.datasets.errors import DatasetError
    from twelve.features.errors import FeatureStoreError, MissingImageError
    from twelve.features.safe_pickle import UnsafePickleError

    return (
        DatasetError,
        FeatureStoreError,
        MissingImageError,
        UnsafePickleError,
        OSError,
        ValueError,
    )


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Report dataset, store and file errors as one clear message and a non-zero exit."""
    try:
        yield
    except click.ClickException:
        raise
    except _known_errors() as error:
        raise click.ClickException(str(error)) from None


def _feature_summary(
    task: str, records: list[Any], features: Path, trust_pickle: bool
) -> dict[str, Any]:
    from twelve.datasets.regions import MissingImageFeaturesError
    from twelve.features.store import FeatureStore

    store = FeatureStore.open(features, trust_pickle=trust_pickle)
    keys = list(dict.fromkeys(key for record in records for key in record.feature_keys))
    missing = [key for key in keys if key not in store]
    if missing:
        raise MissingImageFeaturesError(task, missing, store.path)
    first = store.get(keys[0])
    return {
        "store": str(features),
        "images_found": len(keys),
        "feature_dim": store.header.feature_dim,
        "sample_regions": first.num_boxes,
    }


def _sample(task: str, records: list[Any]) -> dict[str, Any]:
    """The first example, decoded: a caption for retrieval, the whole record otherwise."""
    from twelve.datasets.records import CaptionImage

    first = records[0]
    if isinstance(first, CaptionImage):
        return {
            "image_id": first.image_id,
            "caption": first.sentences[0],
            "captions_of_image": len(first.sentences),
            "feature_keys": list(first.feature_keys),
        }
    return {**first.model_dump(mode="json"), "feature_keys": list(first.feature_keys)}


@data.command()
@click.argument("task")
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder holding the dataset's official files.",
)
@click.option("--split", required=True, help="Split name as the dataset spells it (e.g. val2014).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--features",
    type=click.Path(path_type=Path),
    help="Also check the images against this feature store.",
)
@click.option("--trust-pickle", is_flag=True, help=_TRUST_PICKLE_HELP)
def inspect(
    task: str, root: Path, split: str, as_json: bool, features: Path | None, trust_pickle: bool
) -> None:
    """Parse one split of TASK and show its size and a decoded example."""
    with _clear_errors():
        from twelve.datasets.parsers import count_examples, count_images, example_unit, read_split

        records = read_split(task, root, split)
        report: dict[str, Any] = {
            "task": task,
            "split": split,
            "root": str(root),
            "unit": example_unit(task),
            "count": count_examples(task, records),
            "images": count_images(records),
            "sample": _sample(task, records),
        }
        if features is not None:
            report["features"] = _feature_summary(task, records, features, trust_pickle)
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False))
        return
    click.echo(
        f"{task} / {split}: {report['count']} examples (one {report['unit']} each) "
        f"over {report['images']} images"
    )
    if "features" in report:
        found = report["features"]
        click.echo(
            f"features: all {found['images_found']} images in {found['store']} "
            f"({found['feature_dim']}-d; first image has {found['sample_regions']} regions)"
        )
    click.echo("example:")
    click.echo(json.dumps(report["sample"], ensure_ascii=False, indent=2))


_DEFAULT_VOCAB_SPLITS = {
    "vqa": ("train2014", "val2014"),
    "gqa": ("train", "val"),
    "vg_qa": ("all",),
}


@data.group()
def vocab() -> None:
    """Answer vocabularies of the VQA-style heads: build from official files or import."""


@vocab.command("build")
@click.argument("task", type=click.Choice(sorted(_DEFAULT_VOCAB_SPLITS)))
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder holding the dataset's official files.",
)
@click.option(
    "--split",
    "split_names",
    multiple=True,
    help="Splits to count answers over (default: train + val).",
)
@click.option(
    "--min-count",
    type=click.IntRange(min=1),
    help="Keep answers given for at least this many questions (VQA default 9 → 3,129 answers).",
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Vocabulary JSON to write."
)
def vocab_build(
    task: str, root: Path, split_names: tuple[str, ...], min_count: int | None, out: Path
) -> None:
    """Count answers of TASK's splits and write the vocabulary JSON."""
    with _clear_errors():
        from twelve.datasets import answers
        from twelve.datasets.parsers import read_split

        records: list[Any] = []
        for split in split_names or _DEFAULT_VOCAB_SPLITS[task]:
            records.extend(read_split(task, root, split))
        builders: dict[str, Callable[..., Any]] = {
            "vqa": answers.build_vqa_vocabulary,
            "gqa": answers.build_gqa_vocabulary,
            "vg_qa": answers.build_vg_qa_vocabulary,
        }
        extra = {} if min_count is None else {"min_count": min_count}
        vocabulary = builders[task](records, **extra)
        vocabulary.save(out)
    click.echo(f"{task}: {len(vocabulary)} answers from {len(records)} examples → {out}")


@vocab.command("import")
@click.option(
    "--ans2label", type=click.Path(path_type=Path), help="The original's *_ans2label.pkl."
)
@click.option(
    "--label2ans", type=click.Path(path_type=Path), help="The original's *_label2ans.pkl."
)
@click.option("--name", required=True, help="Head the vocabulary labels (vqa or gqa).")
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Vocabulary JSON to write."
)
def vocab_import(ans2label: Path | None, label2ans: Path | None, name: str, out: Path) -> None:
    """Convert the original's answer pickles (read safely) to JSON, keeping the label order."""
    if ans2label is None and label2ans is None:
        raise click.UsageError("give --ans2label, --label2ans or both")
    with _clear_errors():
        from twelve.datasets.answers import AnswerVocabulary

        vocabulary = AnswerVocabulary.from_original(ans2label, label2ans, name=name)
        vocabulary.save(out)
    click.echo(f"{name}: {len(vocabulary)} answers imported → {out}")


@data.command("hard-negatives")
@click.argument("task", type=click.Choice(["retrieval_coco", "retrieval_flickr30k"]))
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder holding the dataset's official files.",
)
@click.option(
    "--features",
    type=click.Path(path_type=Path),
    required=True,
    help="Feature store of the training images.",
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Pool file (.npz) to write."
)
@click.option(
    "--split", default="train", show_default=True, help="Training split ('a+b' joins splits)."
)
@click.option(
    "--exclude-images",
    type=click.Path(path_type=Path),
    help="Test image ids removed from training (clean sets).",
)
@click.option("--pool-size", type=click.IntRange(min=2), default=100, show_default=True)
@click.option("--chunk-size", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--trust-pickle", is_flag=True, help=_TRUST_PICKLE_HELP)
def hard_negatives(
    task: str,
    root: Path,
    features: Path,
    out: Path,
    split: str,
    exclude_images: Path | None,
    pool_size: int,
    chunk_size: int,
    trust_pickle: bool,
) -> None:
    """Nearest training images of every training image (mean region feature, Euclidean)."""
    with _clear_errors():
        from twelve.datasets.hard_negatives import compute_hard_negatives
        from twelve.datasets.specs import get_spec
        from twelve.datasets.tasks import read_records
        from twelve.datasets.tasks.base import load_image_id_list
        from twelve.features.store import FeatureStore

        spec = get_spec(task)
        records = read_records(spec, root, split)
        if exclude_images is not None:
            excluded = load_image_id_list(exclude_images)
            records = [record for record in records if str(record.image_id) not in excluded]
        image_ids = [str(record.image_id) for record in records]
        store = FeatureStore.open(features, trust_pickle=trust_pickle)
        with click.progressbar(length=2 * len(image_ids), label=f"{task} pool") as bar:
            pool = compute_hard_negatives(
                task,
                store,
                image_ids,
                pool_size=pool_size,
                chunk_size=chunk_size,
                metadata={"split": split, "features": str(features)},
                progress=bar.update,
            )
        pool.save(out)
    click.echo(f"{task}: {len(image_ids)} images, {pool.pool_size} nearest each → {out}")
