"""Synthetic document pages with known boxes, in the docpages layout (images/ + annotations.json).

For tests that must pass without ../shared: body text, one figure (a bar chart) or table per page with its
caption, rendered with Pillow's bundled font so that tesseract can read the captions.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ("revenue growth segment income margin operating cash flow quarter annual report total assets "
         "liabilities equity share capital expenses net profit sales market region product services").split()
CAPTIONS = ["Revenue by segment in 2023", "Operating margin per quarter", "Net income and cash flow",
            "Total assets by region", "Sales growth of each product", "Expenses of the services unit"]


def _text_line(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize()


def make_pages(root: Path, n: int = 6, seed: int = 0, width: int = 600, height: int = 800) -> Path:
    """Write ``n`` pages under ``root`` (``images/page-XX.png``, ``annotations.json``); returns ``root``."""
    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(seed)
    body = ImageFont.load_default(size=13)
    caption_font = ImageFont.load_default(size=17)
    (root / "images").mkdir(parents=True, exist_ok=True)
    pages = []
    for i in range(n):
        image = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(image)
        category = "figure" if i % 2 == 0 else "table"
        fx0, fx1 = rng.randint(50, 110), rng.randint(width - 110, width - 50)
        fy0 = rng.randint(140, 360)
        fy1 = fy0 + rng.randint(160, 240)
        if category == "figure":
            draw.rectangle((fx0, fy0, fx1, fy1), outline="black", width=2)
            bars = 6
            step = (fx1 - fx0 - 20) / bars
            for b in range(bars):
                top = rng.randint(fy0 + 15, fy1 - 20)
                color = (40 + 30 * b, 90, 200 - 20 * b)
                draw.rectangle((fx0 + 10 + b * step, top, fx0 + 10 + (b + 0.7) * step, fy1 - 5), fill=color)
        else:
            rows, cols = 6, 4
            for r in range(rows + 1):
                y = fy0 + r * (fy1 - fy0) / rows
                draw.line((fx0, y, fx1, y), fill="black", width=1)
            for r in range(rows):
                for c in range(cols):
                    x = fx0 + 8 + c * (fx1 - fx0) / cols
                    y = fy0 + 6 + r * (fy1 - fy0) / rows
                    draw.text((x, y), f"{rng.randint(10, 999)}.{rng.randint(0, 9)}", fill="black", font=body)
        label = f"{'Figure' if category == 'figure' else 'Table'} {i + 1}. {CAPTIONS[i % len(CAPTIONS)]}"
        if category == "figure":  # caption below a figure, above a table
            cy0 = fy1 + 10
        else:
            cy0 = fy0 - 30
        left, top, right, bottom = draw.textbbox((fx0, cy0), label, font=caption_font)
        draw.text((fx0, cy0), label, fill="black", font=caption_font)
        caption_box = [float(left), float(top), float(right), float(bottom)]
        obj_box = [float(fx0), float(fy0), float(fx1), float(fy1)]
        composite = [min(obj_box[0], caption_box[0]), min(obj_box[1], caption_box[1]),
                     max(obj_box[2], caption_box[2]), max(obj_box[3], caption_box[3])]
        y = 40
        while y < height - 40:  # body text wherever the object and caption are not
            if not (composite[1] - 22 <= y <= composite[3] + 8):
                draw.text((50, y), _text_line(rng, 9), fill="black", font=body)
            y += 22
        name = f"page-{i:02d}"
        image.save(root / "images" / f"{name}.png")
        pages.append({"file": f"images/{name}.png", "width": width, "height": height, "source": "synthetic",
                      "objects": [{"category": category, "bbox": obj_box, "caption_bbox": caption_box,
                                   "composite_bbox": composite, "caption_text": label}]})
    (root / "annotations.json").write_text(json.dumps({"source": "synthetic", "bbox_format": "xyxy", "pages": pages}))
    return root
