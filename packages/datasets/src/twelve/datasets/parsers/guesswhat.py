"""GuessWhat?! games: gzip JSON-lines ``guesswhat.<split>.jsonl.gz``, one game per line (§9).

All games are kept, as 12-in-1 did; `read` can keep only some statuses (the official guesser used
``("success",)``). Both the 2017 release schema (``id``, ``image``, ``objects`` list, ``qas`` with
``question``/``answer``) and the 2022 re-hosted one (``dialogue_id``, ``picture``, ``objects``
keyed by id, ``q``/``a``) are read. Boxes are COCO ``[x, y, w, h]``, converted to xyxy.

Second layout: the original repository's uncompressed ``guesswhat.<split>.jsonl`` (same records;
compression is detected from the content, not the name), and for ground-truth boxes its
``cache/image_bbox_list.pkl`` (object ids per image) with ``cache/bboxes_dict.pkl`` (box per id).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from twelve.datasets.errors import DataFormatError, UnknownSplitError
from twelve.datasets.parsers._io import (
    Fields,
    Layout,
    build,
    choose_layout,
    iter_json_lines,
    load_pickle,
)
from twelve.datasets.records import (
    AnnotatedImage,
    AnnotatedObject,
    Box,
    DialogTurn,
    GameObject,
    GuessWhatGame,
    xywh_to_xyxy,
)

TASK = "guesswhat"
SPLITS = ("train", "valid", "test")
STATUSES = ("success", "failure", "incomplete")


def official_path(root: Path, split: str) -> Path:
    """The official gzip JSON-lines file of a split."""
    return root / f"guesswhat.{split}.jsonl.gz"


def original_path(root: Path, split: str) -> Path:
    """The original repository's uncompressed copy of a split."""
    return root / f"guesswhat.{split}.jsonl"


def _objects(game: Fields) -> list[GameObject]:
    """The game's candidate objects, from a list (2017) or a dict keyed by id (2022)."""
    raw = game.raw("objects")
    entries: list[tuple[Fields, Any]] = []
    if isinstance(raw, dict):
        for key, value in raw.items():
            entries.append((Fields(value, game.path, f"{game.location}.objects[{key!r}]"), key))
    else:
        entries = [(item, None) for item in game.items("objects")]
    objects = []
    for item, key in entries:
        if item.has("id") or key is None:
            object_id = item.int_like("id")
        else:
            try:
                object_id = int(key)
            except ValueError:
                raise item.error("id", "object key is not an integer id", key) from None
        objects.append(
            build(
                GameObject,
                game.path,
                item.location,
                object_id=object_id,
                category=item.optional_str("category"),
                category_id=item.optional_int("category_id"),
                box=xywh_to_xyxy(*item.xywh("bbox")),
            )
        )
    return objects


def _turns(game: Fields) -> list[DialogTurn]:
    """The dialogue turns, from ``question``/``answer`` (2017) or ``q``/``a`` (2022) fields."""
    turns = []
    for item in game.items("qas"):
        turns.append(
            build(
                DialogTurn,
                game.path,
                item.location,
                question=item.str(item.first_present("question", "q")),
                answer=item.str(item.first_present("answer", "a")),
                turn_id=item.optional_int("id"),
            )
        )
    return turns


def parse_game(game: Fields) -> GuessWhatGame:
    """One game record of either release schema."""
    image = game.object(game.first_present("image", "picture"))
    if image.has("id"):
        image_id = image.int_like("id")
    else:
        image_id = game.int_like(game.first_present("picture_id", "image_id"))
    objects = _objects(game)
    target = game.int_like(game.first_present("object_id", "target_object_id"))
    if all(obj.object_id != target for obj in objects):
        raise game.error("object_id", "is not the id of one of the game's objects", target)
    return build(
        GuessWhatGame,
        game.path,
        game.location,
        game_id=game.int_like(game.first_present("id", "dialogue_id")),
        image_id=image_id,
        image_width=image.optional_int("width"),
        image_height=image.optional_int("height"),
        image_file_name=image.optional_str("file_name"),
        turns=_turns(game),
        objects=objects,
        target_object_id=target,
        status=game.optional_str("status"),
    )


def read(
    root: Path,
    split: str,
    layout: Layout | None = None,
    *,
    statuses: Collection[str] | None = None,
) -> list[GuessWhatGame]:
    """Games of a split in file order; `statuses` keeps only games with one of those statuses."""
    if split not in SPLITS:
        raise UnknownSplitError(TASK, split, SPLITS)
    chosen = choose_layout(
        TASK,
        split,
        layout,
        official=[official_path(root, split)],
        original=[original_path(root, split)],
        known_splits=SPLITS,
    )
    path = official_path(root, split) if chosen == "official" else original_path(root, split)
    games = []
    for line_number, value in iter_json_lines(path):
        game = parse_game(Fields(value, path, f"line {line_number}"))
        if statuses is None or game.status in statuses:
            games.append(game)
    return games


def image_bbox_list_path(root: Path) -> Path:
    """The original's ``{image_id: {"bboxes": [object ids]}}`` pickle."""
    return root / "cache" / "image_bbox_list.pkl"


def bboxes_dict_path(root: Path) -> Path:
    """The original's ``{object_id: box}`` pickle."""
    return root / "cache" / "bboxes_dict.pkl"


def _images_from_games(
    root: Path, split: str | None, layout: Layout | None
) -> dict[int, AnnotatedImage]:
    """Each image of the games (of `split`, or of all splits) with the union of their objects."""
    games: list[GuessWhatGame] = []
    for name in (split,) if split is not None else SPLITS:
        games.extend(read(root, name, layout))
    objects: dict[int, dict[int, AnnotatedObject]] = {}
    first: dict[int, GuessWhatGame] = {}
    for game in games:
        first.setdefault(game.image_id, game)
        per_image = objects.setdefault(game.image_id, {})
        for obj in game.objects:
            per_image.setdefault(
                obj.object_id,
                AnnotatedObject(
                    object_id=obj.object_id,
                    box=obj.box,
                    category_id=obj.category_id,
                    category=obj.category,
                ),
            )
    return {
        image_id: AnnotatedImage(
            image_id=image_id,
            width=first[image_id].image_width,
            height=first[image_id].image_height,
            file_name=first[image_id].image_file_name,
            objects=tuple(per_image[object_id] for object_id in sorted(per_image)),
        )
        for image_id, per_image in objects.items()
    }


def _box(path: Path, object_id: object, value: object) -> Box:
    """A 4-number box of ``bboxes_dict.pkl`` (a list, tuple or numpy array)."""
    try:
        numbers = [float(v) for v in value]  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != 4:
        raise DataFormatError(
            path, "expected a box of 4 numbers", location=f"object {object_id!r}", value=value
        )
    return numbers[0], numbers[1], numbers[2], numbers[3]


def _images_from_original_caches(root: Path) -> dict[int, AnnotatedImage]:
    """The original's image object lists, sorted and de-duplicated as it did.

    Its boxes are used as ``xyxy`` because the original used them that way in IoU; whether it had
    converted them from COCO ``xywh`` is not documented.
    """
    lists_path, boxes_path = image_bbox_list_path(root), bboxes_dict_path(root)
    lists = load_pickle(lists_path)
    boxes = load_pickle(boxes_path, allow_numpy=True)
    if not isinstance(lists, dict):
        raise DataFormatError(lists_path, f"expected a dict, found {type(lists).__name__}")
    if not isinstance(boxes, dict):
        raise DataFormatError(boxes_path, f"expected a dict, found {type(boxes).__name__}")
    images: dict[int, AnnotatedImage] = {}
    for image_id, entry in lists.items():
        item = Fields(entry, lists_path, f"image {image_id!r}")
        if isinstance(image_id, bool) or not isinstance(image_id, int):
            raise item.error("key", "expected an integer image id", image_id)
        objects = []
        for object_id in sorted(set(item.int_list("bboxes"))):
            if object_id not in boxes:
                raise DataFormatError(
                    boxes_path,
                    f"no box for object {object_id} of image {image_id}",
                    field="object id",
                    value=object_id,
                )
            objects.append(
                AnnotatedObject(
                    object_id=object_id, box=_box(boxes_path, object_id, boxes[object_id])
                )
            )
        images[image_id] = AnnotatedImage(image_id=image_id, objects=tuple(objects))
    return images


def read_images(
    root: Path, split: str | None = None, layout: Layout | None = None
) -> dict[int, AnnotatedImage]:
    """Ground-truth objects per image, sorted by object id (the order of ground-truth features).

    Official layout: the union of the objects of the games (of `split`, or of every split).
    Original layout: the original's ``cache/image_bbox_list.pkl`` + ``cache/bboxes_dict.pkl``
    (all splits; `split` is ignored). By default the game files are used when present.
    """
    if split is not None and split not in SPLITS:
        raise UnknownSplitError(TASK, split, SPLITS)
    names = (split,) if split is not None else SPLITS
    chosen = choose_layout(
        TASK,
        split or "all",
        layout,
        official=[official_path(root, name) for name in names],
        original=[image_bbox_list_path(root), bboxes_dict_path(root)],
        known_splits=SPLITS,
    )
    if chosen == "official":
        return _images_from_games(root, split, "official")
    return _images_from_original_caches(root)
