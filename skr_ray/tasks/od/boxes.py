"""Boxes on a page: parsing a model's answer, normalized <-> pixel coordinates, IoU.

A box is ``(x0, y0, x1, y1)``: normalized boxes are fractions of the page width and height (0..1),
pixel boxes are in the image's own pixels. Parsing never raises on model text: it returns a status,
and only ``ok`` boxes are usable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

Box = tuple[float, float, float, float]

# Qwen2-VL's grounding answer: <|box_start|>(x0,y0),(x1,y1)<|box_end|> on a 0..1000 grid.
_QWEN_BOX = re.compile(r"\(\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*\)\s*,?\s*\(\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*\)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_BRACKETED = re.compile(r"[\[(]([^\[\]()]*)[\])]")
_COORD_NAMES = re.compile(r"\b[xy][01]\b", re.IGNORECASE)  # "x0=0.1, y0=..." : the names' digits are no values

BOX_STATUSES = ("ok", "no_box", "out_of_range", "degenerate")


def parse_box(raw: str) -> tuple[Box | None, str]:
    """Model text -> (normalized box, status).

    Accepted: four numbers, bracketed or comma separated (``[0.1, 0.2, 0.8, 0.6]``), as fractions
    (all <= 1) or on a 0..1000 grid (Qwen2-VL's convention, any > 1); and Qwen2-VL's
    ``(x0,y0),(x1,y1)`` form; coordinate names (``x0=0.1``) are ignored. Swapped corners are put in order. Anything else has a status, not a box.
    """
    text = _COORD_NAMES.sub("", raw or "")
    numbers: list[float] | None = None
    pair = _QWEN_BOX.search(text)
    if pair:
        numbers = [float(v) for v in pair.groups()]
    else:
        for group in _BRACKETED.findall(text):
            found = _NUMBER.findall(group)
            if len(found) == 4:
                numbers = [float(v) for v in found]
                break
        if numbers is None:
            found = _NUMBER.findall(text)
            if len(found) == 4:
                numbers = [float(v) for v in found]
    if numbers is None:
        return None, "no_box"
    if any(v < 0 for v in numbers) or any(v > 1000 for v in numbers):
        return None, "out_of_range"
    scale = 1000.0 if pair or any(v > 1 for v in numbers) else 1.0
    x0, y0, x1, y1 = (v / scale for v in numbers)
    box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
        return None, "degenerate"
    return box, "ok"


def to_pixels(box: Sequence[float], width: int, height: int) -> list[int]:
    """Normalized box -> integer pixel box, clipped to the image."""
    x0, y0, x1, y1 = box
    clip = lambda v, hi: int(min(max(round(v), 0), hi))  # noqa: E731
    return [clip(x0 * width, width), clip(y0 * height, height), clip(x1 * width, width), clip(y1 * height, height)]


def to_normalized(box: Sequence[float], width: int, height: int) -> Box:
    x0, y0, x1, y1 = box
    return (x0 / width, y0 / height, x1 / width, y1 / height)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes in the same coordinates."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def enclosing(boxes: Sequence[Sequence[float]]) -> Box:
    """Smallest box enclosing all ``boxes`` (same coordinates)."""
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def contains(outer: Sequence[float], inner: Sequence[float], tolerance: float = 0.0) -> bool:
    """Whether ``inner`` lies inside ``outer`` (give or take ``tolerance`` on each edge)."""
    return (outer[0] <= inner[0] + tolerance and outer[1] <= inner[1] + tolerance
            and outer[2] >= inner[2] - tolerance and outer[3] >= inner[3] - tolerance)
