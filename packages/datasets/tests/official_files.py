"""Small dataset files in the official formats (and the original repository's), written by tests.

Every writer puts a dataset's files under their official names directly in `root` (the folder
`twelve.datasets.parsers.read_split` takes) and returns the raw data it wrote, so tests can compare
parsed records with it. The content is deterministic and small; ids are chosen so that each
dataset exercises its quirks (GQA ids with leading zeros and ``n…`` images, ``Flikr30kID`` with
``.jpg``, NLVR2 JSON-lines named ``.json``, gzip GuessWhat files, Python-2 pickles).

`write_task(task, root)` writes the default files of any registered task; `write_python2_pickle`
writes a pickle the way Python 2's cPickle did (protocol 2, ``str`` as byte strings).

Import it from tests through the ``official_files`` fixture of ``conftest.py``.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------------------------
# Generic writers


def write_json(path: Path, data: Any) -> Path:
    """Write one JSON document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_json_lines(path: Path, rows: Sequence[Any], *, compress: bool = False) -> Path:
    """Write JSON-lines, gzip-compressed if asked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8")
    path.write_bytes(gzip.compress(text, mtime=0) if compress else text)
    return path


class _Python2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes ``str`` as Python 2 byte strings (SHORT_BINSTRING/BINSTRING), like cPickle did."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_python2_str(self, obj: str) -> None:
        data = obj.encode("utf-8")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_python2_str


def python2_pickle_bytes(obj: Any) -> bytes:
    """Pickle `obj` as Python 2's ``cPickle.dump(obj, f, 2)`` would have (builtins only)."""
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def write_python2_pickle(path: Path, obj: Any) -> Path:
    """Write `obj` as a Python-2 protocol-2 pickle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(python2_pickle_bytes(obj))
    return path


# --------------------------------------------------------------------------------------------
# VQA v2

VQA_IMAGES: dict[str, tuple[int, ...]] = {
    "train2014": (9, 25, 30),
    "val2014": (42, 73),
    "test2015": (1, 16, 19),
    "test-dev2015": (1, 19),
}

# Ten human answers per pattern; each exercises a target rule (k = 4+, 3, 2, 1 and raw forms).
VQA_ANSWER_PATTERNS: tuple[tuple[str, ...], ...] = (
    ("yes",) * 10,
    ("2",) * 5 + ("two",) * 2 + ("3",) * 3,
    ("red",) * 3 + ("dark red",) * 2 + ("Red.",) + ("maroon",) * 4,
    ("no",) * 9 + ("yes",),
)
VQA_QUESTIONS = ("Is the sky blue?", "How many dogs are there?", "What color is the bus?")


def vqa_question_id(image_id: int, index: int) -> int:
    """The question id pattern of the official files (image id × 1000 + k)."""
    return image_id * 1000 + index


def write_vqa(
    root: Path,
    *,
    images: Mapping[str, Sequence[int]] = VQA_IMAGES,
    questions_per_image: int = 2,
    annotations: bool = True,
) -> dict[str, dict[str, Any]]:
    """VQA v2 question files for each subtype and annotation files for train/val.

    Returns ``{subtype: {"questions": [...], "annotations": [...]}}`` as written.
    """
    written: dict[str, dict[str, Any]] = {}
    pattern = 0
    for subtype, image_ids in images.items():
        questions = []
        annotation_list = []
        for image_id in image_ids:
            for index in range(questions_per_image):
                question_id = vqa_question_id(image_id, index)
                text = VQA_QUESTIONS[(image_id + index) % len(VQA_QUESTIONS)]
                questions.append(
                    {"image_id": image_id, "question": text, "question_id": question_id}
                )
                answers = VQA_ANSWER_PATTERNS[pattern % len(VQA_ANSWER_PATTERNS)]
                pattern += 1
                most_common = max(set(answers), key=lambda a, ans=answers: (ans.count(a), a))
                annotation_list.append(
                    {
                        "question_type": " ".join(text.lower().split()[:2]),
                        "multiple_choice_answer": most_common,
                        "answers": [
                            {"answer": answer, "answer_confidence": "yes", "answer_id": k + 1}
                            for k, answer in enumerate(answers)
                        ],
                        "image_id": image_id,
                        "answer_type": "yes/no" if most_common in ("yes", "no") else "other",
                        "question_id": question_id,
                    }
                )
        header = {
            "info": {"description": "test data", "version": "2.0", "year": 2017},
            "license": {"name": "CC BY 4.0", "url": "https://creativecommons.org"},
            "data_type": "mscoco",
            "data_subtype": subtype,
        }
        write_json(
            root / f"v2_OpenEnded_mscoco_{subtype}_questions.json",
            {**header, "task_type": "Open-Ended", "questions": questions},
        )
        entry: dict[str, Any] = {"questions": questions}
        if annotations and subtype in ("train2014", "val2014"):
            write_json(
                root / f"v2_mscoco_{subtype}_annotations.json",
                {**header, "annotations": annotation_list},
            )
            entry["annotations"] = annotation_list
        written[subtype] = entry
    return written


def write_original_vocabulary(
    cache: Path, answers: Sequence[str], *, prefix: str = "trainval"
) -> tuple[Path, Path]:
    """The original ``<prefix>_ans2label.pkl`` and ``<prefix>_label2ans.pkl`` (Python 2 pickles)."""
    ans2label = write_python2_pickle(
        cache / f"{prefix}_ans2label.pkl", {answer: label for label, answer in enumerate(answers)}
    )
    label2ans = write_python2_pickle(cache / f"{prefix}_label2ans.pkl", list(answers))
    return ans2label, label2ans


def write_original_targets(path: Path, targets: Sequence[Mapping[str, Any]]) -> Path:
    """An original ``*_target.pkl``: a list of ``{question_id, image_id, [question,] labels, scores}``."""
    return write_python2_pickle(path, [dict(target) for target in targets])


# --------------------------------------------------------------------------------------------
# GQA

GQA_IMAGES: dict[str, tuple[str, ...]] = {
    "train": ("2354786", "2375429"),
    "val": ("2417997",),
    "testdev": ("n161313", "n15740"),
    "test": ("n90000",),
    "challenge": ("n50001",),
}
GQA_QA = (
    ("Is the sky dark?", "yes", "Yes, the sky is dark.", "verify"),
    ("What color is the car?", "white", "The car is white.", "query"),
    ("Which animal is it?", "dog", "It is a dog.", "query"),
)


def write_gqa(
    root: Path,
    *,
    images: Mapping[str, Sequence[str]] = GQA_IMAGES,
    questions_per_image: int = 2,
) -> dict[str, dict[str, Any]]:
    """Balanced question files; ids are digit strings with leading zeros; tests lack answers."""
    written: dict[str, dict[str, Any]] = {}
    counter = 0
    for split, image_ids in images.items():
        document: dict[str, Any] = {}
        for image_id in image_ids:
            for _ in range(questions_per_image):
                question, answer, full, structural = GQA_QA[counter % len(GQA_QA)]
                question_id = f"0{2930152 + counter}"
                counter += 1
                if split in ("test", "challenge"):
                    document[question_id] = {
                        "imageId": image_id,
                        "question": question,
                        "isBalanced": True,
                    }
                    continue
                document[question_id] = {
                    "semantic": [
                        {"operation": "select", "argument": "sky (2486325)", "dependencies": []}
                    ],
                    "entailed": [],
                    "equivalent": [question_id],
                    "question": question,
                    "imageId": image_id,
                    "isBalanced": True,
                    "groups": {"global": None, "local": "10q-sky_dark"},
                    "answer": answer,
                    "semanticStr": "select: sky (2486325)->verify: dark",
                    "annotations": {"answer": {}, "question": {"2": "2486325"}, "fullAnswer": {}},
                    "types": {
                        "detailed": "verifyAttr",
                        "semantic": "attr",
                        "structural": structural,
                    },
                    "fullAnswer": full,
                }
        write_json(root / f"{split}_balanced_questions.json", document)
        written[split] = document
    return written


# --------------------------------------------------------------------------------------------
# Visual Genome QA

VG_IMAGES = (1, 2, 10)
VG_QA = (
    ("What color is the clock?", "Green."),
    ("How many people are there?", "Two."),
    ("Where is the cat?", "On the couch."),
)


def write_vg_qa(
    root: Path, *, image_ids: Sequence[int] = VG_IMAGES, qas_per_image: int = 2
) -> list[dict[str, Any]]:
    """``question_answers.json``: a list of images with their QA pairs (ids out of order)."""
    document = []
    qa_id = 1000
    for image_id in image_ids:
        qas = []
        for index in range(qas_per_image):
            question, answer = VG_QA[(image_id + index) % len(VG_QA)]
            qas.append(
                {
                    "a_objects": [],
                    "question": question,
                    "image_id": image_id,
                    "qa_id": qa_id,
                    "answer": answer,
                    "q_objects": [],
                }
            )
            qa_id -= 7
        document.append({"id": image_id, "qas": qas})
    document.append({"id": 99, "qas": []})  # images without QA pairs exist in the release
    write_json(root / "question_answers.json", document)
    return document


# --------------------------------------------------------------------------------------------
# Karpathy caption files (COCO, Flickr30k)

COCO_SPLITS: dict[str, tuple[int, ...]] = {
    "train": (9, 25, 30),
    "restval": (42,),
    "val": (73,),
    "test": (74, 133),
}
FLICKR_SPLITS: dict[str, tuple[int, ...]] = {
    "train": (1000092795, 10002456),
    "val": (1000268201,),
    "test": (1000344755, 1000366164),
}
CAPTIONS = (
    "A man riding a wave on top of a surfboard.",
    "Two dogs playing in the snow",
    "a bus parked next to a building .",
    "A woman holding an umbrella in the rain.",
    "A plate of food with broccoli and rice.",
)


def write_karpathy(
    root: Path,
    dataset: str,
    *,
    splits: Mapping[str, Sequence[int]] | None = None,
    captions_per_image: int = 5,
) -> dict[str, Any]:
    """``dataset_coco.json`` or ``dataset_flickr30k.json`` in Karpathy's format."""
    if splits is None:
        splits = COCO_SPLITS if dataset == "coco" else FLICKR_SPLITS
    images = []
    sentence_id = 0
    for split, image_ids in splits.items():
        for image_id in image_ids:
            sentences = []
            for index in range(captions_per_image):
                raw = CAPTIONS[(image_id + index) % len(CAPTIONS)]
                sentences.append(
                    {
                        "tokens": raw.lower().strip(" .").split(),
                        "raw": raw,
                        "imgid": len(images),
                        "sentid": sentence_id,
                    }
                )
                sentence_id += 1
            image: dict[str, Any] = {
                "filename": (
                    f"COCO_val2014_{image_id:012d}.jpg" if dataset == "coco" else f"{image_id}.jpg"
                ),
                "imgid": len(images),
                "sentences": sentences,
                "split": split,
                "sentids": [s["sentid"] for s in sentences],
            }
            if dataset == "coco":
                image["filepath"] = "val2014"
                image["cocoid"] = image_id
            images.append(image)
    document = {"images": images, "dataset": dataset}
    write_json(root / f"dataset_{dataset}.json", document)
    return document


def write_retrieval_original(
    root: Path, dataset: str, split: str, image_ids: Sequence[int], captions_per_image: int = 5
) -> list[dict[str, Any]]:
    """The original ``all_data_final_<split>_2014.jsonline`` (COCO ``id``, Flickr ``img_path``)."""
    rows = []
    for image_id in image_ids:
        sentences = [
            CAPTIONS[(image_id + index) % len(CAPTIONS)] for index in range(captions_per_image)
        ]
        key = {"id": image_id} if dataset == "coco" else {"img_path": f"{image_id}.jpg"}
        rows.append({**key, "sentences": sentences})
    write_json_lines(root / f"all_data_final_{split}_2014.jsonline", rows)
    return rows


# --------------------------------------------------------------------------------------------
# RefCOCO, RefCOCO+, RefCOCOg

REFER_IMAGES = (581857, 581563, 380440)


def write_refer(
    root: Path, task: str = "refcoco", *, image_ids: Sequence[int] = REFER_IMAGES
) -> dict[str, Any]:
    """``instances.json`` and ``refs(unc).p`` / ``refs(umd).p`` (a Python-2 cPickle list).

    Each image has 3 annotated objects; 2 of them are referred to, with 2 sentences each.
    Unc refs cycle through train/val/testA/testB, umd through train/val/test.
    """
    unc = task in ("refcoco", "refcoco+")
    ref_splits = ("train", "val", "testA", "testB") if unc else ("train", "val", "test")
    categories = [
        {"supercategory": "person", "id": 1, "name": "person"},
        {"supercategory": "animal", "id": 18, "name": "dog"},
    ]
    images, annotations, refs = [], [], []
    ann_id, ref_id, sent_id = 1700, 0, 0
    for number, image_id in enumerate(image_ids):
        width, height = 640 - 40 * number, 480
        images.append(
            {
                "file_name": f"COCO_train2014_{image_id:012d}.jpg",
                "height": height,
                "width": width,
                "id": image_id,
            }
        )
        for index in range(3):
            box = [10.5 + 50 * index, 20.0 + 10 * index, 100.25, 80.0 + index]
            annotations.append(
                {
                    "segmentation": [[box[0], box[1], box[0] + box[2], box[1]]],
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                    "image_id": image_id,
                    "bbox": box,
                    "category_id": 1 if index != 2 else 18,
                    "id": ann_id,
                }
            )
            if index < 2:
                sentences = []
                for k in range(2):
                    raw = f"The {'left' if k == 0 else 'tall'} person #{index}!"
                    sentences.append(
                        {
                            "tokens": raw.lower().replace("!", "").replace("#", "").split(),
                            "raw": raw,
                            "sent_id": sent_id,
                            "sent": raw.lower().replace("!", "").replace("#", ""),
                        }
                    )
                    sent_id += 1
                refs.append(
                    {
                        "image_id": image_id,
                        "split": ref_splits[ref_id % len(ref_splits)],
                        "sentences": sentences,
                        "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
                        "category_id": 1,
                        "ann_id": ann_id,
                        "sent_ids": [s["sent_id"] for s in sentences],
                        "ref_id": ref_id,
                    }
                )
                ref_id += 1
            ann_id += 1
    instances = {
        "info": {},
        "images": images,
        "licenses": [],
        "type": "instances",
        "annotations": annotations,
        "categories": categories,
    }
    write_json(root / "instances.json", instances)
    write_python2_pickle(root / f"refs({'unc' if unc else 'umd'}).p", refs)
    return {"instances": instances, "refs": refs}


# --------------------------------------------------------------------------------------------
# Visual7W pointing

V7W_IMAGES: dict[str, tuple[int, ...]] = {"train": (2379, 107899), "val": (5,), "test": (7, 8)}


def write_visual7w(
    root: Path, *, images: Mapping[str, Sequence[int]] = V7W_IMAGES, qas_per_image: int = 2
) -> dict[str, Any]:
    """``dataset_v7w_pointing.json``: images with pointing QA pairs, and a global box list.

    Box ids are assigned out of order so the sorted-box-id positions are not trivial; one box has
    a negative x, as some released boxes do.
    """
    image_list, boxes = [], []
    qa_id = 500
    next_box = 90
    for split, image_ids in images.items():
        for image_id in image_ids:
            qa_pairs = []
            for index in range(qas_per_image):
                ids = [next_box, next_box - 3, next_box + 5, next_box - 9]
                next_box += 20
                for k, box_id in enumerate(ids):
                    boxes.append(
                        {
                            "box_id": box_id,
                            "x": -2 if k == 3 else 10 * k + index,
                            "y": 5 * k,
                            "width": 30 + k,
                            "height": 40,
                            "name": ["cake", "knife", "plate", "fork"][k],
                        }
                    )
                qa_pairs.append(
                    {
                        "qa_id": qa_id,
                        "image_id": image_id,
                        "question": "Which object is used to cut the cake?",
                        "answer": ids[1],
                        "multiple_choices": [ids[0], ids[2], ids[3]],
                        "type": "which",
                    }
                )
                qa_id += 1
            image_list.append(
                {
                    "image_id": image_id,
                    "filename": f"v7w_{image_id}.jpg",
                    "split": split,
                    "qa_pairs": qa_pairs,
                }
            )
    document = {"images": image_list, "boxes": boxes}
    write_json(root / "dataset_v7w_pointing.json", document)
    return document


# --------------------------------------------------------------------------------------------
# GuessWhat?!

GUESSWHAT_IMAGES: dict[str, tuple[int, ...]] = {
    "train": (9, 25, 9),
    "valid": (42,),
    "test": (74, 133),
}
GUESSWHAT_STATUSES = ("success", "failure", "incomplete")


def guesswhat_game(game_id: int, image_id: int, status: str) -> dict[str, Any]:
    """One game in the 2017 release schema (3 objects, 2 turns)."""
    objects = [
        {
            "category": ["person", "dog", "cup"][k],
            "area": 1200.5,
            "iscrowd": False,
            "bbox": [15.0 * k, 20.5, 40.0 + k, 30.0],
            "id": image_id * 10 + k,
            "category_id": [1, 18, 47][k],
            "segment": [[15.0 * k, 20.5, 55.0, 50.5]],
        }
        for k in range(3)
    ]
    return {
        "status": status,
        "qas": [
            {"answer": "No", "question": "is it a person?", "id": game_id * 10},
            {"answer": "Yes", "question": "is it an animal?", "id": game_id * 10 + 1},
        ],
        "questioner_id": 3,
        "timestamp": "2016-07-08 15:10:34",
        "object_id": objects[1]["id"],
        "id": game_id,
        "image": {
            "width": 640,
            "coco_url": f"http://mscoco.org/images/{image_id}",
            "flickr_url": "http://farm4.staticflickr.com/1/x.jpg",
            "file_name": f"COCO_train2014_{image_id:012d}.jpg",
            "id": image_id,
            "height": 480,
        },
        "objects": objects,
    }


def guesswhat_game_2022(game: Mapping[str, Any]) -> dict[str, Any]:
    """The same game in the 2022 re-hosted schema (``dialogue_id``, ``picture``, objects by id)."""
    return {
        "dialogue_id": game["id"],
        "picture": {k: v for k, v in game["image"].items() if k != "id"},
        "picture_id": game["image"]["id"],
        "objects": {
            str(obj["id"]): {k: v for k, v in obj.items() if k != "id"} for obj in game["objects"]
        },
        "object_id": game["object_id"],
        "qas": [{"q": qa["question"], "a": qa["answer"], "id": qa["id"]} for qa in game["qas"]],
        "status": game["status"],
    }


def write_guesswhat(
    root: Path,
    *,
    images: Mapping[str, Sequence[int]] = GUESSWHAT_IMAGES,
    compressed: bool = True,
    schema: str = "2017",
) -> dict[str, list[dict[str, Any]]]:
    """``guesswhat.<split>.jsonl.gz`` (or the original's uncompressed ``.jsonl``) per split."""
    written = {}
    game_id = 100
    for split, image_ids in images.items():
        games = []
        for image_id in image_ids:
            game = guesswhat_game(
                game_id, image_id, GUESSWHAT_STATUSES[game_id % len(GUESSWHAT_STATUSES)]
            )
            games.append(guesswhat_game_2022(game) if schema == "2022" else game)
            game_id += 1
        name = f"guesswhat.{split}.jsonl" + (".gz" if compressed else "")
        write_json_lines(root / name, games, compress=compressed)
        written[split] = games
    return written


# --------------------------------------------------------------------------------------------
# NLVR2

NLVR2_SENTENCES = (
    "The left image contains twice the number of dogs as the right image.",
    "One image shows exactly two brown acorns in back-to-back caps on green foliage.",
)


def write_nlvr2(
    root: Path, *, splits: Sequence[str] = ("train", "dev", "test1"), pairs: int = 2
) -> dict[str, list[dict[str, Any]]]:
    """``<split>.json`` JSON-lines files; 2 sentences per image pair, train has ``directory``."""
    written = {}
    for split in splits:
        rows = []
        for pair in range(pairs):
            for sentence in range(2):
                row: dict[str, Any] = {
                    "validation": {"6": "True"},
                    "sentence": NLVR2_SENTENCES[sentence],
                    "left_url": f"https://example.com/{split}/{pair}/left.jpg",
                    "writer": "103",
                    "label": "True" if (pair + sentence) % 2 == 0 else "False",
                    "right_url": f"https://example.com/{split}/{pair}/right.jpg",
                    "synset": "n02113186",
                    "query": "dogs",
                    "identifier": f"{split}-{850 + pair}-{pair % 4}-{sentence}",
                }
                if split == "train":
                    row["directory"] = pair % 100
                else:
                    row["extra_validations"] = {"154": "False"}
                rows.append(row)
        write_json_lines(root / f"{split}.json", rows)
        written[split] = rows
    return written


# --------------------------------------------------------------------------------------------
# SNLI-VE

SNLI_VE_IMAGES: dict[str, tuple[int, ...]] = {
    "train": (3637013, 2267923837),
    "dev": (1000092795,),
    "test": (1000268201, 10002456),
}


def write_snli_ve(
    root: Path, *, images: Mapping[str, Sequence[int]] = SNLI_VE_IMAGES
) -> dict[str, list[dict[str, Any]]]:
    """``snli_ve_<split>.jsonl``: 3 hypotheses per image, one per label."""
    written = {}
    for split, image_ids in images.items():
        rows = []
        for image_id in image_ids:
            for k, label in enumerate(("entailment", "neutral", "contradiction")):
                caption_id = f"{image_id}.jpg#{k}"
                rows.append(
                    {
                        "Flikr30kID": f"{image_id}.jpg",
                        "annotator_labels": [label],
                        "captionID": caption_id,
                        "gold_label": label,
                        "pairID": f"{caption_id}r1{label[0]}",
                        "sentence1": "A boy is jumping on skateboard in the middle of a red bridge.",
                        "sentence1_binary_parse": "( ( A boy ) ... )",
                        "sentence1_parse": "(ROOT (S ...))",
                        "sentence2": ["The boy skates.", "The boy is tall.", "The boy sleeps."][k],
                        "sentence2_binary_parse": "( ( The boy ) ... )",
                        "sentence2_parse": "(ROOT (S ...))",
                    }
                )
        write_json_lines(root / f"snli_ve_{split}.jsonl", rows)
        written[split] = rows
    return written


# --------------------------------------------------------------------------------------------
# Conceptual Captions

CC_FILES = {"train": "Train_GCC-training.tsv", "val": "Validation_GCC-1.1.0-Validation.tsv"}


def write_conceptual_captions(
    root: Path, *, rows: Mapping[str, int] | None = None
) -> dict[str, list[tuple[str, str]]]:
    """The two-column TSV files ``caption<TAB>url`` (no header)."""
    rows = rows or {"train": 4, "val": 2}
    written = {}
    for split, count in rows.items():
        pairs = [
            (
                f"actor attends the premiere of the film number {k}",
                f"http://example.com/{split}/{k}.jpg",
            )
            for k in range(count)
        ]
        path = root / CC_FILES[split]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{c}\t{u}\n" for c, u in pairs), encoding="utf-8")
        written[split] = pairs
    return written


def crc32_id(url: str) -> str:
    """The community image id of a Conceptual Captions URL."""
    return str(zlib.crc32(url.encode("utf-8")) & 0xFFFFFFFF)


# --------------------------------------------------------------------------------------------
# Any task


def write_task(task: str, root: Path) -> None:
    """Write the default official files of `task` into `root` (every split it has)."""
    if task == "vqa":
        write_vqa(root)
    elif task == "gqa":
        write_gqa(root)
    elif task == "vg_qa":
        write_vg_qa(root)
    elif task == "retrieval_coco":
        write_karpathy(root, "coco")
    elif task == "retrieval_flickr30k":
        write_karpathy(root, "flickr30k")
    elif task in ("refcoco", "refcoco+", "refcocog"):
        write_refer(root, task)
    elif task == "visual7w":
        write_visual7w(root)
    elif task == "guesswhat":
        write_guesswhat(root)
    elif task == "nlvr2":
        write_nlvr2(root, splits=("train", "dev", "test1", "test2"))
    elif task == "snli_ve":
        write_snli_ve(root)
    elif task == "conceptual_captions":
        write_conceptual_captions(root)
    else:
        raise KeyError(f"no official-file writer for task {task!r}")
