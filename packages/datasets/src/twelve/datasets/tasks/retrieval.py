"""Caption retrieval (COCO, Flickr30k): 4-way training with hard negatives, and ranking evaluation.

Training example for caption c of image i (original-system.md §3.6), positive first:
(i, c); (i, a caption of another image); (another image, c); (i, a caption of a *hard* image h),
where h is drawn from entries 1..K−1 of i's row of the hard-negative pool (off the training split,
h is just another random image). Ranking evaluation scores every (caption, image) pair of the
first 1,000 images × their 5 captions (§5.2).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from twelve.datasets.batch import AlignmentBatch, RankingBatch, model_input_fields
from twelve.datasets.hard_negatives import HardNegativePool
from twelve.datasets.records import CaptionImage
from twelve.datasets.regions import ImageRegions
from twelve.datasets.specs import TaskSpec
from twelve.datasets.tasks.base import RegionSource, TaskConfigError, TaskDataset, encode_texts
from twelve.datasets.tokenizer import BertTokenizer


@dataclass(frozen=True)
class AlignmentExample:
    """One caption with its 3 negatives: 4 (text, image) pairs, positive first."""

    example_id: str
    token_ids: tuple[np.ndarray, ...]
    regions: tuple[ImageRegions, ...]


@dataclass(frozen=True)
class RankingExample:
    """One (caption, image) pair of the ranking evaluation."""

    caption_index: int
    image_index: int
    token_ids: np.ndarray
    regions: ImageRegions


def _other(rng: np.random.Generator, count: int, excluded: int) -> int:
    """A uniformly random index in 0..count−1 other than `excluded`."""
    choice = int(rng.integers(count - 1))
    return choice + 1 if choice >= excluded else choice


class RetrievalDataset(TaskDataset[AlignmentExample, AlignmentBatch]):
    """4-way caption–image alignment: one example per caption (training and validation)."""

    def __init__(
        self,
        spec: TaskSpec,
        split: str,
        records: Sequence[CaptionImage],
        *,
        tokenizer: BertTokenizer,
        regions: RegionSource,
        training: bool,
        hard_negatives: HardNegativePool | None = None,
    ) -> None:
        super().__init__(spec, split, training=training)
        if len(records) < 2:
            raise TaskConfigError(f"{spec.name}/{split}: 4-way retrieval needs at least 2 images")
        self.image_ids = [str(record.image_id) for record in records]
        self.captions = [record.sentences for record in records]
        self.caption_image = np.array(
            [i for i, record in enumerate(records) for _ in record.sentences], dtype=np.int64
        )
        self.caption_number = np.array(
            [j for record in records for j in range(len(record.sentences))], dtype=np.int64
        )
        self.tokenizer = tokenizer
        self.regions = regions
        regions.check(self.image_ids)
        self.hard_rows: np.ndarray | None = None
        if training:
            if hard_negatives is None:
                raise TaskConfigError(
                    f"{spec.name}/{split}: training needs a hard-negative pool; compute it with "
                    "`twelve data hard-negatives` and pass it as hard_negatives"
                )
            self.hard_rows = hard_negatives.neighbours_for(spec.name, self.image_ids)

    def __len__(self) -> int:
        return len(self.caption_image)

    def _caption(self, image: int, rng: np.random.Generator) -> str:
        captions = self.captions[image]
        return captions[int(rng.integers(len(captions)))]

    def _hard_image(self, image: int, rng: np.random.Generator) -> int:
        if self.hard_rows is None:
            return _other(rng, len(self.image_ids), image)
        row = self.hard_rows[image]
        valid = row[row >= 0]
        if len(valid) == 0:
            return _other(rng, len(self.image_ids), image)
        return int(valid[int(rng.integers(len(valid)))])

    def example(self, index: int, seed: int) -> AlignmentExample:
        rng = np.random.default_rng(seed)
        image = int(self.caption_image[index])
        caption = self.captions[image][int(self.caption_number[index])]
        count = len(self.image_ids)
        random_caption = self._caption(_other(rng, count, image), rng)
        random_image = _other(rng, count, image)
        hard_caption = self._caption(self._hard_image(image, rng), rng)
        length = self.spec.max_text_length
        texts = (caption, random_caption, caption, hard_caption)
        positive = self.regions.detected(self.image_ids[image])
        other = self.regions.detected(self.image_ids[random_image])
        return AlignmentExample(
            example_id=str(index),
            token_ids=tuple(self.tokenizer.encode(text, length) for text in texts),
            regions=(positive, positive, other, positive),
        )

    def collate(self, examples: Sequence[AlignmentExample]) -> AlignmentBatch:
        token_ids = [ids for example in examples for ids in example.token_ids]
        regions = [item for example in examples for item in example.regions]
        return AlignmentBatch(
            task=self.spec.name,
            **model_input_fields(token_ids, regions),
            example_ids=tuple(example.example_id for example in examples),
            target=torch.zeros(len(examples), dtype=torch.int64),
            pairs_per_example=len(examples[0].token_ids),
            image_ids=tuple(item.image_id for item in regions),
        )


class RetrievalRankingDataset(TaskDataset[RankingExample, RankingBatch]):
    """Every (caption, image) pair of an evaluation split, image-major, for recall@K.

    Pair `index` is image `index // num_captions` with caption `index % num_captions`;
    `caption_image_index[c]` is the image caption c describes.
    """

    _CACHE_SIZE = 4

    def __init__(
        self,
        spec: TaskSpec,
        split: str,
        records: Sequence[CaptionImage],
        *,
        tokenizer: BertTokenizer,
        regions: RegionSource,
        max_images: int | None = 1000,
        captions_per_image: int | None = 5,
    ) -> None:
        super().__init__(spec, split, training=False)
        chosen = list(records[:max_images] if max_images is not None else records)
        self.image_ids = [str(record.image_id) for record in chosen]
        captions = [
            (i, text)
            for i, record in enumerate(chosen)
            for text in record.sentences[:captions_per_image]
        ]
        self.caption_image_index = np.array([i for i, _ in captions], dtype=np.int64)
        self.caption_texts = [text for _, text in captions]
        self.caption_ids = encode_texts(tokenizer, self.caption_texts, spec.max_text_length)
        self.regions = regions
        regions.check(self.image_ids)
        self._cache: OrderedDict[int, ImageRegions] = OrderedDict()

    @property
    def num_images(self) -> int:
        """Columns of the score matrix."""
        return len(self.image_ids)

    @property
    def num_captions(self) -> int:
        """Rows of the score matrix."""
        return len(self.caption_texts)

    def __len__(self) -> int:
        return self.num_images * self.num_captions

    def _image(self, image: int) -> ImageRegions:
        cached = self._cache.get(image)
        if cached is None:
            cached = self.regions.detected(self.image_ids[image])
            self._cache[image] = cached
            if len(self._cache) > self._CACHE_SIZE:
                self._cache.popitem(last=False)
        return cached

    def example(self, index: int, seed: int) -> RankingExample:
        image, caption = divmod(index, self.num_captions)
        return RankingExample(caption, image, self.caption_ids[caption], self._image(image))

    def collate(self, examples: Sequence[RankingExample]) -> RankingBatch:
        return RankingBatch(
            task=self.spec.name,
            **model_input_fields(
                [example.token_ids for example in examples],
                [example.regions for example in examples],
            ),
            example_ids=tuple(f"{e.caption_index}:{e.image_index}" for e in examples),
            caption_index=torch.tensor([e.caption_index for e in examples], dtype=torch.int64),
            image_index=torch.tensor([e.image_index for e in examples], dtype=torch.int64),
        )
