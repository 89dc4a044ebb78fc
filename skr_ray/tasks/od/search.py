"""The box self-annotation strategies as step functions, and the driver that advances many pages at once.

A strategy is a generator per page: it yields a list of :class:`Ask` (questions about the page or a crop
of it), receives the model's answers in the same order, and finally returns a :class:`PageLabel`. It
never calls the model itself, so

- the driver (:func:`run_searches`) can put the asks of *many* pages into one model call: a page waiting
  on its answer never holds up a batch, and every call is a batch of crops from different pages;
- the algorithms are pure functions of the answers, testable with a scripted describer instead of a model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from skr_ray.tasks.od.boxes import Box


@dataclass(frozen=True)
class Ask:
    """One question about a page: ``kind`` (see ``prompts.QUESTIONS``) asked on ``crop`` (pixels)."""

    page_id: str
    crop: tuple[int, int, int, int]
    kind: str


@dataclass
class PageLabel:
    """A strategy's result for one page: a normalized box (None unless status is 'ok') and its provenance."""

    box: Box | None
    status: str
    parts: dict[str, Any] = field(default_factory=dict)
    """What each sub-question gave (multi_turn: which parts parsed; ocr: the anchors)."""
    trace: list[dict[str, Any]] = field(default_factory=list)
    """Every step: the crop asked about, the answer, and (fuzzy) similarity and decision."""
    asks: int = 0


class Asker(Protocol):
    """Answers a batch of asks (any pages); the answers are raw model text, one per ask."""

    model_id: str

    def __call__(self, asks: Sequence[Ask]) -> list[str]: ...


@dataclass(frozen=True)
class PageInfo:
    """What a strategy knows of a page before asking: its id, size and (OCR) its words."""

    page_id: str
    width: int
    height: int
    image: Any = None  # PIL image; read by the OCR strategy for tesseract

    @property
    def full(self) -> tuple[int, int, int, int]:
        return (0, 0, self.width, self.height)


Strategy = Generator[list[Ask], list[str], PageLabel]


@dataclass
class SearchStats:
    pages: int = 0
    model_calls: int = 0
    asks: int = 0
    seconds: float = 0.0
    failed_calls: int = 0

    def as_dict(self) -> dict[str, float]:
        return {"pages": self.pages, "model_calls": self.model_calls, "asks": self.asks,
                "asks_per_page": self.asks / self.pages if self.pages else 0.0,
                "model_calls_per_page": self.model_calls / self.pages if self.pages else 0.0,
                "failed_calls": self.failed_calls, "seconds": round(self.seconds, 3)}


def run_searches(starts: Sequence[Callable[[], Strategy]], asker: Asker, batch_size: int,
                 stats: SearchStats | None = None) -> list[PageLabel]:
    """Run every page's strategy to its end; each model call carries up to ``batch_size`` asks of any pages.

    Rounds: every page still searching has one pending list of asks; the round's asks go to the model in
    full batches across pages, then every page advances by one step. A failed model call is retried ask
    by ask; an ask that still fails is answered with the empty string (which every strategy treats as a
    malformed answer) and counted, so one bad crop never ends a job.
    """
    stats = stats if stats is not None else SearchStats()
    t0 = time.perf_counter()
    results: list[PageLabel | None] = [None] * len(starts)
    pending: dict[int, tuple[Strategy, list[Ask]]] = {}
    for i, start in enumerate(starts):
        gen = start()
        try:
            pending[i] = (gen, next(gen))
        except StopIteration as stop:
            results[i] = stop.value
    while pending:
        flat = [(i, j, ask) for i, (_, asks) in pending.items() for j, ask in enumerate(asks)]
        answers: dict[tuple[int, int], str] = {}
        for b in range(0, len(flat), batch_size):
            chunk = flat[b : b + batch_size]
            for (i, j, _), answer in zip(chunk, _ask(asker, [a for _, _, a in chunk], stats)):
                answers[(i, j)] = answer
        stats.asks += len(flat)
        advanced: dict[int, tuple[Strategy, list[Ask]]] = {}
        for i, (gen, asks) in pending.items():
            try:
                advanced[i] = (gen, gen.send([answers[(i, j)] for j in range(len(asks))]))
            except StopIteration as stop:
                results[i] = stop.value
        pending = advanced
    stats.pages += len(starts)
    stats.seconds += time.perf_counter() - t0
    return [r if r is not None else PageLabel(None, "error") for r in results]


def _ask(asker: Asker, asks: list[Ask], stats: SearchStats) -> list[str]:
    import logging

    stats.model_calls += 1
    try:
        answers = asker(asks)
        if len(answers) != len(asks):
            raise ValueError(f"asker returned {len(answers)} answers for {len(asks)} asks")
        return ["" if a is None else str(a) for a in answers]
    except Exception:  # noqa: BLE001 - isolate the failing ask, keep the rest
        logging.getLogger(__name__).exception("model call of %d asks failed; retrying one by one", len(asks))
        out = []
        for ask in asks:
            stats.model_calls += 1
            try:
                out.append(str(asker([ask])[0]))
            except Exception:  # noqa: BLE001
                stats.failed_calls += 1
                out.append("")
        return out


def label_record(label: PageLabel) -> dict[str, Any]:
    """The provenance columns of a label row."""
    return {"parts": json.dumps(label.parts), "trace": json.dumps(label.trace), "asks": label.asks}
