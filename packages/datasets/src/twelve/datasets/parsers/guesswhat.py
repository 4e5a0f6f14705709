"""GuessWhat?! games: gzip JSON-lines ``guesswhat.<split>.jsonl.gz``, one game per line (§9).

All games are kept, as 12-in-1 did; `read` can keep only some statuses (the official guesser used
``("success",)``). Both the 2017 release schema (``id``, ``image``, ``objects`` list, ``qas`` with
``question``/``answer``) and the 2022 re-hosted one (``dialogue_id``, ``picture``, ``objects``
keyed by id, ``q``/``a``) are read. Boxes are COCO ``[x, y, w, h]``, converted to xyxy.

Second layout: the original repository's uncompressed ``guesswhat.<split>.jsonl`` (same records;
compression is detected from the content, not the name).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from twelve.datasets.errors import UnknownSplitError
from twelve.datasets.parsers._io import Fields, Layout, build, choose_layout, iter_json_lines
from twelve.datasets.records import DialogTurn, GameObject, GuessWhatGame, xywh_to_xyxy

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
