"""The Serve deployment behind ``POST /v1/search``: the faiss indexes ``skr index`` built, one per served IR
model that has one, loaded once (an index of a million vectors is gigabytes: not a copy per ingress replica)."""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve


@serve.deployment(name="SKRIndex")
class SKRIndex:
    def __init__(self, folders: dict[str, str]) -> None:
        from skr_ray.tasks.ir.index import VectorIndex

        self.indexes = {model_id: VectorIndex(folder) for model_id, folder in folders.items()}

    async def search(self, model_id: str, vector: list[float], top_k: int, ids: list[str] | None) -> list[dict]:
        """The best ``top_k`` (id, score, text) for one query vector, among ``ids`` when given; off the event
        loop, so a large index's search does not hold the replica's other requests."""
        index = self.indexes[model_id]
        return (await asyncio.to_thread(index.search, vector, top_k, ids))[0]

    async def describe(self) -> dict[str, Any]:
        return {m: {k: v for k, v in i.summary.items() if k in ("vectors", "kind", "recall_at_10")}
                for m, i in self.indexes.items()}
