"""RefCOCO, RefCOCO+ (``refs(unc).p``) and RefCOCOg (``refs(umd).p``) with ``instances.json`` (§7).

The refs file is a Python-2 pickle of a list of ref dicts; it is read through the restricted
unpickler (builtins only). One record per (ref, sentence), refs in file order and sentences in ref
order, as the original's REFER loop produced them. The referred box is the ref's COCO annotation
box converted to xyxy. Split selection follows REFER: ``train``/``val`` match exactly,
``testA``/``testB`` by name, and ``test`` (unc) is every ref whose split contains "test".
The original repository used these same files, so there is one layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from twelve.datasets.errors import DataFormatError, UnknownSplitError
from twelve.datasets.parsers._io import Fields, build, load_json, load_pickle, require_file
from twelve.datasets.records import AnnotatedImage, AnnotatedObject, RefSentence, xywh_to_xyxy

SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}
SPLITS = {
    "unc": ("train", "val", "testA", "testB", "test"),
    "umd": ("train", "val", "test"),
}


def refs_path(root: Path, task: str) -> Path:
    """The refs pickle of a RefCOCO-family task."""
    return root / f"refs({SPLIT_BY[task]}).p"


def instances_path(root: Path) -> Path:
    """The COCO-style annotation file shipped with each RefCOCO-family dataset."""
    return root / "instances.json"


def splits(task: str) -> tuple[str, ...]:
    """Split names of a RefCOCO-family task (its split-by's names)."""
    return SPLITS[SPLIT_BY[task]]


@dataclass(frozen=True, slots=True)
class _Annotation:
    image_id: int
    category_id: int
    box: tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class Instances:
    """The parts of ``instances.json`` the refs need: images, annotations, category names."""

    path: Path
    images: dict[int, tuple[int, int, str | None]]
    annotations: dict[int, _Annotation]
    categories: dict[int, str]


def read_instances(root: Path) -> Instances:
    """Index ``instances.json`` by image id, annotation id and category id."""
    path = require_file(instances_path(root), "RefCOCO-family instances.json")
    document = Fields(load_json(path), path, "document")
    images: dict[int, tuple[int, int, str | None]] = {}
    for image in document.items("images"):
        images[image.int("id")] = (
            image.int("width"),
            image.int("height"),
            image.optional_str("file_name"),
        )
    annotations: dict[int, _Annotation] = {}
    for annotation in document.items("annotations"):
        annotations[annotation.int("id")] = _Annotation(
            image_id=annotation.int("image_id"),
            category_id=annotation.int("category_id"),
            box=xywh_to_xyxy(*annotation.xywh("bbox")),
        )
    categories: dict[int, str] = {}
    if document.has("categories"):
        for category in document.items("categories"):
            categories[category.int("id")] = category.str("name")
    return Instances(path, images, annotations, categories)


def _split_matches(requested: str, ref_split: str) -> bool:
    """REFER's split selection (``test`` = every split containing "test")."""
    if requested == "test":
        return "test" in ref_split
    return ref_split == requested


def read(task: str, root: Path, split: str) -> list[RefSentence]:
    """(ref, sentence) pairs of a split of RefCOCO, RefCOCO+ or RefCOCOg."""
    known = splits(task)
    if split not in known:
        raise UnknownSplitError(task, split, known)
    path = require_file(
        refs_path(root, task),
        f"{task} refs file",
        "the folder must hold the dataset's files as unzipped from the official "
        f"{task}.zip (refs({SPLIT_BY[task]}).p and instances.json)",
    )
    instances = read_instances(root)
    refs = load_pickle(path)
    if not isinstance(refs, list):
        raise DataFormatError(path, f"expected a list of refs, found {type(refs).__name__}")
    records: list[RefSentence] = []
    for index, entry in enumerate(refs):
        ref = Fields(entry, path, f"refs[{index}]")
        ref_split = ref.str("split")
        if not _split_matches(split, ref_split):
            continue
        ref_id = ref.int("ref_id")
        ann_id = ref.int("ann_id")
        image_id = ref.int("image_id")
        annotation = instances.annotations.get(ann_id)
        if annotation is None:
            raise ref.error("ann_id", f"no annotation with this id in {instances.path}", ann_id)
        if annotation.image_id != image_id:
            raise ref.error(
                "image_id",
                f"annotation {ann_id} belongs to image {annotation.image_id} in {instances.path}",
                image_id,
            )
        image = instances.images.get(image_id)
        if image is None:
            raise ref.error("image_id", f"no image with this id in {instances.path}", image_id)
        category_id = ref.int("category_id") if ref.has("category_id") else annotation.category_id
        for sentence in ref.items("sentences"):
            raw = sentence.str(sentence.first_present("raw", "sent"))
            records.append(
                build(
                    RefSentence,
                    path,
                    sentence.location,
                    ref_id=ref_id,
                    ann_id=ann_id,
                    sent_id=sentence.int("sent_id"),
                    image_id=image_id,
                    sentence=raw,
                    normalized_sentence=sentence.optional_str("sent"),
                    box=annotation.box,
                    category_id=category_id,
                    category=instances.categories.get(category_id),
                    split=ref_split,
                    image_width=image[0],
                    image_height=image[1],
                )
            )
    return records


def read_images(root: Path) -> dict[int, AnnotatedImage]:
    """Every image of ``instances.json`` with all its annotated objects sorted by annotation id.

    These are the boxes at which the original extracted ground-truth-box features for training.
    """
    instances = read_instances(root)
    objects: dict[int, list[AnnotatedObject]] = {image_id: [] for image_id in instances.images}
    for ann_id in sorted(instances.annotations):
        annotation = instances.annotations[ann_id]
        if annotation.image_id not in objects:
            raise DataFormatError(
                instances.path,
                f"annotation {ann_id} refers to an image absent from 'images'",
                field="image_id",
                value=annotation.image_id,
            )
        objects[annotation.image_id].append(
            AnnotatedObject(
                object_id=ann_id,
                box=annotation.box,
                category_id=annotation.category_id,
                category=instances.categories.get(annotation.category_id),
            )
        )
    return {
        image_id: AnnotatedImage(
            image_id=image_id,
            width=width,
            height=height,
            file_name=file_name,
            objects=tuple(objects[image_id]),
        )
        for image_id, (width, height, file_name) in instances.images.items()
    }
