"""ocr: anchors read by the model, found among tesseract's words.

The model is asked for the object's caption/title text and its source line; each answer is searched for
among pytesseract's word boxes of the page with a fuzzy match (rapidfuzz's best partial alignment, score
>= ``od.ocr_min_score``). The label is the smallest rectangle covering the matched anchors and the object's
box from ``direct`` or ``fuzzy`` (``od.ocr_object``). A page where no anchor matches gets the status
``no_anchor``, not a guess.
"""

from __future__ import annotations

import re
from typing import Any

from skr_ray.pages import Word, ocr_words
from skr_ray.tasks.od.boxes import enclosing, to_normalized
from skr_ray.tasks.od.search import Ask, PageInfo, PageLabel, Strategy

_SPACE = re.compile(r"\s+")
_NONE = {"", "none", "no", "n/a", "na", "there is none", "none.", "no source"}
MAX_ANCHOR_CHARS = 400


def normalize(text: str) -> str:
    return _SPACE.sub(" ", text.lower()).strip()


def find_anchor(text: str, words: list[Word], min_score: float) -> tuple[tuple[int, int, int, int], float] | None:
    """The pixel box of the words that best match ``text`` (and the match score), or None below ``min_score``."""
    from rapidfuzz import fuzz

    needle = normalize(text)[:MAX_ANCHOR_CHARS]
    if not needle or not words:
        return None
    spans, pieces, pos = [], [], 0
    for w in words:
        token = normalize(w.text)
        spans.append((pos, pos + len(token)))
        pieces.append(token)
        pos += len(token) + 1
    haystack = " ".join(pieces)
    if len(needle) > len(haystack):
        needle = needle[: len(haystack)]
    found = fuzz.partial_ratio_alignment(needle, haystack, score_cutoff=min_score)
    if found is None:
        return None
    hit = [w.box for w, (a, b) in zip(words, spans) if a < found.dest_end and b > found.dest_start]
    if not hit:
        return None
    return tuple(int(v) for v in enclosing(hit)), float(found.score)  # type: ignore[return-value]


def anchor_text(answer: str) -> str:
    text = (answer or "").strip().strip('"').strip()
    return "" if normalize(text).rstrip(".") in _NONE else text


def ocr(page: PageInfo, options: Any, similarity: Any) -> Strategy:
    caption_answer, source_answer = yield [Ask(page.page_id, page.full, "caption_text"),
                                           Ask(page.page_id, page.full, "source_text")]
    words = ocr_words(page.image, options.ocr_lang)
    parts: dict[str, Any] = {"ocr_words": len(words)}
    trace: list[dict[str, Any]] = []
    anchors = []
    for part, answer in (("caption", caption_answer), ("source", source_answer)):
        text = anchor_text(answer)
        match = find_anchor(text, words, options.ocr_min_score) if text else None
        parts[part] = {"text": text[:200], "matched": match is not None,
                       **({"box": list(match[0]), "score": round(match[1], 1)} if match else {})}
        trace.append({"kind": f"{part}_text", "crop": list(page.full), "answer": answer})
        if match:
            anchors.append(match[0])
    if options.ocr_object == "fuzzy":
        from skr_ray.tasks.od.strategies.fuzzy import fuzzy

        obj = yield from fuzzy(page, options, similarity)
    else:
        from skr_ray.tasks.od.strategies.direct import direct

        obj = yield from direct(page)
    parts["object"] = obj.status
    trace += obj.trace
    asks = 2 + obj.asks
    if not anchors:
        return PageLabel(None, "no_anchor", parts, trace, asks)
    if obj.box is None:
        return PageLabel(None, f"object_{obj.status}", parts, trace, asks)
    pixels = [b for b in anchors] + [(obj.box[0] * page.width, obj.box[1] * page.height,
                                      obj.box[2] * page.width, obj.box[3] * page.height)]
    return PageLabel(to_normalized(enclosing(pixels), page.width, page.height), "ok", parts, trace, asks)
