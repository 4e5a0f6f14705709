"""Caption retrieval on COCO and Flickr30k: Karpathy's split files (dataset-formats.md §5–6).

``dataset_coco.json`` / ``dataset_flickr30k.json`` hold ``{"images": [...]}`` with each image's
split (``train``, ``restval`` (COCO only), ``val``, ``test``) and its raw captions. One record per
image, in file order; one retrieval example is one caption.

Second layout: the original repository's JSON-lines files
``all_data_final_train_2014.jsonline`` (split ``train``) and
``all_data_final_test_set0_2014.jsonline`` (split ``test_set0``, its 1,000-image test), one
``{"id" | "img_path", "sentences"}`` object per line.
"""

from __future__ import annotations

from pathlib import Path

from twelve.datasets.errors import DataFormatError, UnknownSplitError
from twelve.datasets.parsers._io import (
    Fields,
    Layout,
    build,
    choose_layout,
    iter_json_lines,
    load_json,
)
from twelve.datasets.records import CaptionImage

COCO_SPLITS = ("train", "restval", "val", "test")
FLICKR30K_SPLITS = ("train", "val", "test")
ORIGINAL_SPLITS = ("train", "test_set0")
_FILES = {"retrieval_coco": "dataset_coco.json", "retrieval_flickr30k": "dataset_flickr30k.json"}


def karpathy_path(root: Path, task: str) -> Path:
    """The Karpathy split file of a retrieval task."""
    return root / _FILES[task]


def original_path(root: Path, split: str) -> Path:
    """The original repository's JSON-lines file of a split (``train`` or ``test_set0``)."""
    return root / f"all_data_final_{split}_2014.jsonline"


def flickr_image_id(file_name: str) -> int:
    """Flickr30k image id from its file name (``"1000092795.jpg"`` -> 1000092795)."""
    return int(Path(file_name).stem)


def _image_id(item: Fields, task: str) -> int:
    """The image id of one Karpathy image entry (``cocoid``, or the Flickr file name's stem)."""
    if task == "retrieval_coco":
        return item.int("cocoid")
    file_name = item.str("filename")
    try:
        return flickr_image_id(file_name)
    except ValueError:
        raise item.error("filename", "expected '<digits>.jpg'", file_name) from None


def _sentences(item: Fields) -> tuple[tuple[str, ...], tuple[int, ...] | None]:
    """Raw captions and their sentence ids (Karpathy ``sentences[].raw`` / ``sentid``)."""
    texts: list[str] = []
    ids: list[int] = []
    for sentence in item.items("sentences"):
        texts.append(sentence.str("raw"))
        if sentence.has("sentid"):
            ids.append(sentence.int("sentid"))
    return tuple(texts), tuple(ids) if len(ids) == len(texts) else None


def _read_karpathy(path: Path, task: str, split: str) -> list[CaptionImage]:
    """Images of one split of a Karpathy file."""
    document = Fields(load_json(path), path, "document")
    records = []
    for item in document.items("images"):
        image_split = item.str("split")
        if image_split != split:
            continue
        texts, ids = _sentences(item)
        records.append(
            build(
                CaptionImage,
                path,
                item.location,
                image_id=_image_id(item, task),
                file_name=item.optional_str("filename"),
                file_path=item.optional_str("filepath"),
                split=image_split,
                sentences=texts,
                sentence_ids=ids,
            )
        )
    return records


def _read_original(path: Path, task: str, split: str) -> list[CaptionImage]:
    """Images of one of the original repository's JSON-lines files."""
    records = []
    for line_number, value in iter_json_lines(path):
        item = Fields(value, path, f"line {line_number}")
        file_name = item.optional_str("img_path")
        if item.has("id"):
            image_id = item.int_like("id")
        elif file_name is not None:
            try:
                image_id = flickr_image_id(file_name)
            except ValueError:
                raise item.error("img_path", "expected '<digits>.jpg'", file_name) from None
        else:
            raise item.error("id", "missing (and no 'img_path' to derive it from)")
        sentences = item.list("sentences")
        for index, sentence in enumerate(sentences):
            if not isinstance(sentence, str):
                raise item.error(f"sentences[{index}]", "expected a string", sentence)
        records.append(
            build(
                CaptionImage,
                path,
                item.location,
                image_id=image_id,
                file_name=file_name,
                split=split,
                sentences=tuple(sentences),
            )
        )
    return records


def read(task: str, root: Path, split: str, layout: Layout | None = None) -> list[CaptionImage]:
    """Images (with all their captions) of a retrieval split."""
    official_splits = COCO_SPLITS if task == "retrieval_coco" else FLICKR30K_SPLITS
    if split not in official_splits and split not in ORIGINAL_SPLITS:
        raise UnknownSplitError(task, split, (*official_splits, "test_set0"))
    chosen = choose_layout(
        task,
        split,
        layout,
        official=[karpathy_path(root, task)] if split in official_splits else None,
        original=[original_path(root, split)] if split in ORIGINAL_SPLITS else None,
        known_splits=(*official_splits, "test_set0"),
    )
    if chosen == "official":
        records = _read_karpathy(karpathy_path(root, task), task, split)
    else:
        records = _read_original(original_path(root, split), task, split)
    seen: set[int] = set()
    for record in records:
        if record.image_id in seen:
            raise DataFormatError(
                karpathy_path(root, task) if chosen == "official" else original_path(root, split),
                f"image {record.image_id} appears twice in split {split!r}",
                field="image id",
                value=record.image_id,
            )
        seen.add(record.image_id)
    return records
