"""Training pairs (self-written question, its source passage) from the label artifact."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from skr_ray.schema import DOC_ID, TEXT
from skr_ray.splits import split_by


@dataclass(frozen=True)
class Pair:
    doc_id: str
    query: str
    passage: str
    kind: str = "question"


def load_pairs(labels_dir: Path, drop_duplicates: bool = True) -> list[Pair]:
    """Usable self-labels only: status 'ok' after duplicate questions are marked."""
    from skr_ray.annotate.labelstore import read_labels
    from skr_ray.tasks.ir.annotate import mark_duplicates

    table = read_labels(labels_dir, quarantine=False)
    statuses = mark_duplicates(table, drop_duplicates)
    pairs = [
        Pair(d, q, p, k or "question")
        for d, q, p, k, s in zip(
            table[DOC_ID].to_pylist(), table["label"].to_pylist(), table[TEXT].to_pylist(),
            table["label_kind"].to_pylist(), statuses,
        )
        if s == "ok"
    ]
    return sorted(pairs, key=lambda p: (p.doc_id, p.query))


def split_pairs(pairs: list[Pair], val_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Deterministic split by document, so a passage never sits on both sides."""
    return split_by(pairs, lambda p: p.doc_id, val_fraction, seed)


def label_corpus(labels_dir: Path) -> dict[str, str]:
    """doc id -> passage of every document the annotate stage saw (usable label or not): the unlabeled
    corpus itself, for label-free mining."""
    from skr_ray.annotate.labelstore import read_labels

    table = read_labels(labels_dir, quarantine=False)
    return dict(zip(table[DOC_ID].to_pylist(), table[TEXT].to_pylist()))
