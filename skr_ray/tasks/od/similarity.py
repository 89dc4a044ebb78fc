"""How alike two short descriptions are, for the fuzzy crop search (``od.similarity``).

Pluggable: ``minilm`` (default) is the cosine of the bundled all-MiniLM-L6-v2 sentence embeddings;
``jaccard`` is word-set overlap (no model: for tests and tiny budgets); any ``module:function`` returning a
``(str, str) -> float`` callable works too.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from functools import lru_cache

Similarity = Callable[[str, str], float]
_WORD = re.compile(r"\w+")


def jaccard(a: str, b: str) -> float:
    wa, wb = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
    return len(wa & wb) / len(wa | wb) if wa | wb else 1.0


class MiniLMSimilarity:
    """Cosine of all-MiniLM-L6-v2 embeddings; each description is embedded once (a search repeats them)."""

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        from skr_ray.evaluate.baselines import minilm_path

        self.model = SentenceTransformer(str(minilm_path()), device="cpu")
        self._embed = lru_cache(maxsize=4096)(self._embed_one)

    def _embed_one(self, text: str):  # noqa: ANN202 - numpy vector
        return self.model.encode([text], normalize_embeddings=True, show_progress_bar=False)[0]

    def __call__(self, a: str, b: str) -> float:
        if not a.strip() or not b.strip():
            return 0.0
        return float(self._embed(a.strip().lower()) @ self._embed(b.strip().lower()))


def load_similarity(name: str) -> Similarity:
    if name == "minilm":
        return MiniLMSimilarity()
    if name == "jaccard":
        return jaccard
    if ":" in name:
        module, func = name.split(":", 1)
        return getattr(importlib.import_module(module), func)()
    raise ValueError(f"od.similarity {name!r}: use minilm, jaccard or module:function")
