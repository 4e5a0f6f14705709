"""Errors raised when reading or writing feature stores; each names the store and the record."""

from __future__ import annotations


class FeatureStoreError(Exception):
    """Something is wrong with a feature store (its files, its header or one of its records)."""


class NotAFeatureStoreError(FeatureStoreError):
    """The path does not hold a twelve feature store (or an original LMDB when allowed)."""


class StoreMismatchError(FeatureStoreError):
    """A write would mix records made differently (another extractor, dim, dtype) in one store."""


class UntrustedLegacyStoreError(FeatureStoreError):
    """An original vilbert-multi-task LMDB (pickle inside) was opened without the opt-in."""


class CorruptRecordError(FeatureStoreError):
    """A stored record cannot be decoded or contradicts the store's header."""

    def __init__(self, store: str, image_id: str, reason: str) -> None:
        self.store = store
        self.image_id = image_id
        self.reason = reason
        super().__init__(
            f"{store}: record {image_id!r} is corrupt: {reason} "
            f"(run `twelve features verify {store}` to list every bad record)"
        )


class MissingImageError(KeyError):
    """The requested image id has no record in the store."""

    def __init__(self, store: str, image_id: str, count: int) -> None:
        self.store = store
        self.image_id = image_id
        super().__init__(
            f"image id {image_id!r} is not in feature store {store} ({count} images); "
            "check the id spelling (ids are strings, e.g. '139' for COCO image 139) and "
            "that the store was extracted from the right image set"
        )

    def __str__(self) -> str:
        return str(self.args[0])
