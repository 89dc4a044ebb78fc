"""The one train/validation split every task uses: a hash of (seed, group key), so the split is deterministic,
needs no state, and a group (a passage, a question's source passage, a page) never sits on both sides."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def val_bucket(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by (seed, key); keys below ``val_fraction`` are validation."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by(items: Iterable[T], key: Callable[[T], str], val_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """(train, validation), order kept; every item whose ``key`` is the same lands on the same side."""
    train: list[T] = []
    val: list[T] = []
    for item in items:
        (val if val_bucket(key(item), seed) < val_fraction else train).append(item)
    return train, val
