"""`skr evaluate task=od`: every system's box on labelled pages (``composite_bbox`` is the truth).

Systems: the base model answering through generation with each self-annotation strategy (``base_direct``,
``base_multi_turn``, ``base_fuzzy``, ``base_ocr``: NTP box as text, parsed), ``head_only`` (frozen backbone +
box head fitted on the self-labels) and ``skr`` (LoRA + box head, one forward pass). A page's IoU is that of
the predicted box with the best-matching object on the page (pages may hold several); a page without a usable
answer scores 0. Evaluation labels are read here and nowhere else.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from skr_ray.artifacts import Artifacts, skip_if_done, write_json
from skr_ray.config import SKRConfig, from_dict
from skr_ray.models.backbone import random_weights_note
from skr_ray.pages import TruthPage, read_truth
from skr_ray.tasks.od.boxes import iou

log = logging.getLogger(__name__)

TITLES = {
    "base_direct": "Base NTP, direct ask (box as text)",
    "base_multi_turn": "Base NTP, multi-turn (object, caption, source)",
    "base_fuzzy": "Base, fuzzy crop search",
    "base_ocr": "Base, OCR anchors",
    "sft": "SFT (LoRA via NTP, box as text)",
    "head_only": "Head-only (frozen backbone + box head)",
    "skr": "SKR (LoRA + box head)",
}
IOU_HIT = 0.5


def page_iou(box: list[float] | None, page: TruthPage) -> float:
    """IoU of a normalized box with the page's best-matching object (0 without a box)."""
    if box is None or len(box) != 4:
        return 0.0
    pixels = [box[0] * page.width, box[1] * page.height, box[2] * page.width, box[3] * page.height]
    return max(iou(pixels, truth) for truth in page.boxes)


def box_metrics(boxes: dict[str, list[float] | None], pages: list[TruthPage]) -> dict[str, Any]:
    ious = np.asarray([page_iou(boxes.get(p.ref.page_id), p) for p in pages])
    return {"mean_iou": float(ious.mean()), "iou@0.5": float((ious >= IOU_HIT).mean()),
            "answered": float(np.mean([boxes.get(p.ref.page_id) is not None for p in pages])),
            "pages": len(pages), "ious": [round(float(v), 4) for v in ious]}


@skip_if_done("evaluate")
def run_od_evaluation(cfg: SKRConfig) -> dict[str, Any]:
    from skr_ray.ray_utils import ensure_ray

    art = Artifacts(cfg.output_dir)
    pages = read_truth(cfg.data.eval, cfg.evaluate.max_pages)
    systems = list(cfg.evaluate.systems)
    for name, ckpt in (("skr", art.checkpoint_dir), ("sft", art.sft_checkpoint_dir)):
        if name in systems and not (ckpt / "adapter").is_dir():
            raise FileNotFoundError(f"no {name} checkpoint in {ckpt}; run `skr train task=od` first")
    ensure_ray(cfg.ray)
    summary = json.loads(art.annotate_summary.read_text()) if art.annotate_summary.is_file() else {}
    context = {"eval": cfg.data.eval, "pages": len(pages), "objects": sum(len(p.boxes) for p in pages),
               "model": cfg.model.name_or_path, "random_weights": random_weights_note(cfg.model),
               "asker": cfg.od.asker, "strategy": cfg.od.strategy,
               "self_labels": summary.get("status_counts", {})}
    results: dict[str, dict[str, Any]] = {}
    predictions: dict[str, dict[str, list[float] | None]] = {}
    for name in systems:
        if name.startswith("base_"):
            boxes, seconds, extra = _base_strategy(cfg, art, pages, name[len("base_"):])
        elif name == "sft":  # LoRA taught to write the self-labelled box: asked directly, the answer parsed
            boxes, seconds, extra = _base_strategy(cfg, art, pages, "direct", str(art.sft_checkpoint_dir))
        elif name == "head_only":
            boxes, seconds, extra = _head_only(cfg, art, pages)
        elif name == "skr":
            from skr_ray.tasks.od.reading import read_pages

            values, seconds = read_pages(cfg, [_page(p) for p in pages], "boxes", str(art.checkpoint_dir),
                                         art.embedding_cache / "skr_boxes.json")
            boxes, extra = {k: v.tolist() for k, v in values.items()}, {}
        else:  # pragma: no cover - config validation names the systems
            raise ValueError(name)
        metrics = box_metrics(boxes, pages) | extra
        metrics["seconds_per_100"] = 100.0 * seconds
        results[name] = metrics
        predictions[name] = boxes
        log.info("%s: mean IoU %.3f, IoU>=0.5 %.3f, %.1f s/100 pages", name, metrics["mean_iou"],
                 metrics["iou@0.5"], metrics["seconds_per_100"])
        write_od_report(art.evaluate_dir, results, predictions, pages, context)  # partial results survive a kill
    write_od_report(art.evaluate_dir, results, predictions, pages, context)
    Artifacts.write_config(art.evaluate_dir, cfg)
    Artifacts.mark_done(art.evaluate_dir, {"systems": systems})
    return results


def _page(p: TruthPage) -> dict[str, Any]:
    return {"page_id": p.ref.page_id, "path": p.ref.path, "page": p.ref.page}


def _base_strategy(cfg: SKRConfig, art: Artifacts, pages: list[TruthPage], strategy: str,
                   checkpoint: str | None = None) -> tuple[dict, float, dict]:
    """The base model (or the SFT checkpoint) answers through generation with one strategy, searched like
    self-annotation (cached per system)."""
    from collections import Counter

    from skr_ray.tasks.od.annotate import search_pages

    scfg = from_dict({**cfg.to_dict(), "od": {**cfg.to_dict()["od"], "strategy": strategy}})
    out = art.evaluate_dir / ("sft" if checkpoint else "base") / strategy
    timing = out / "timing.json"
    run = search_pages(scfg, [p.ref for p in pages], out, f"{'sft' if checkpoint else 'base'} {strategy} on "
                       "evaluation pages", checkpoint)
    if run["pages_searched_this_run"]:
        write_json(timing, {"seconds_per_page": run["search_seconds_this_run"] / run["pages_searched_this_run"],
                            "model_calls_per_page": run["model_calls_this_run"] / run["pages_searched_this_run"]})
    t = json.loads(timing.read_text()) if timing.is_file() else {"seconds_per_page": 0.0}
    rows = run["rows"]
    boxes = {r["page_id"]: (list(r["box"]) if r["status"] == "ok" else None) for r in rows}
    extra = {"status_counts": dict(Counter(r["status"] for r in rows)),
             "asks_per_page": float(np.mean([r["asks"] for r in rows])) if rows else 0.0,
             "model_calls_per_page": t.get("model_calls_per_page")}
    return boxes, float(t["seconds_per_page"]), extra


def _head_only(cfg: SKRConfig, art: Artifacts, pages: list[TruthPage]) -> tuple[dict, float, dict]:
    import torch

    from skr_ray.tasks.od.probe import fit_box_head, self_label_states, states_cache
    from skr_ray.tasks.od.reading import read_pages
    from skr_ray.tasks.od.training import load_examples

    train, val = load_examples(cfg, art)
    if not train:
        raise FileNotFoundError(f"head_only needs self-labels; none usable in {art.labels_dir}")
    x_tr, y_tr, x_va, y_va = self_label_states(cfg, art, train, val, states_cache(art))  # the probe's, if it ran
    head, epoch = fit_box_head(cfg, x_tr, y_tr, x_va, y_va, cfg.od.probe_epochs)
    states, seconds = read_pages(cfg, [_page(p) for p in pages], "states", None,
                                 art.embedding_cache / "base_states_eval.json")
    ids = [p.ref.page_id for p in pages]
    with torch.no_grad():
        boxes = head(torch.tensor(np.stack([states[i] for i in ids]))).numpy()
    return {i: b.tolist() for i, b in zip(ids, boxes)}, seconds, {"kept_epoch": epoch}


def write_od_report(out_dir: Path, results: dict[str, dict[str, Any]], predictions: dict[str, dict],
                    pages: list[TruthPage], context: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", results)
    scripted = context.get("asker") == "scripted"
    lines = [
        "# SKR object detection (OD) report",
        "",
        f"- evaluation pages: `{context['eval']}` ({context['pages']} pages, {context['objects']} objects; "
        "truth = each object's composite_bbox, a page scores its best-matching object)",
        f"- model: `{context['model']}`; self-labels by strategy `{context['strategy']}`: {context['self_labels']}",
    ]
    if context.get("random_weights"):
        lines.append(f"- {context['random_weights']}")
    if scripted:
        lines.append("- **answers came from the scripted describer (an oracle reading the truth), not from a model**: "
                     "these rows measure the search algorithms and the pipeline, not a model")
    lines += ["", "| system | mean IoU | IoU ≥ 0.5 | answered | s / 100 pages | notes |", "|---|---|---|---|---|---|"]
    for name, m in results.items():
        note = ", ".join(f"{k} {v}" for k, v in sorted(m.get("status_counts", {}).items()))
        if m.get("asks_per_page"):
            note += f"; {m['asks_per_page']:.1f} asks/page"
        lines.append(f"| {TITLES.get(name, name)} (`{name}`) | {m['mean_iou']:.3f} | {m['iou@0.5']:.3f} | "
                     f"{m['answered']:.2f} | {m['seconds_per_100']:.1f} | {note} |")
    lines += ["", "![IoU histogram](iou_histogram.png)", "", "![Pages: truth (green) vs predicted](pages.png)", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    _plot(out_dir, results, predictions, pages)


def _plot(out_dir: Path, results: dict[str, dict[str, Any]], predictions: dict[str, dict],
          pages: list[TruthPage]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from skr_ray.pages import load_page

    fig, ax = plt.subplots(figsize=(6.5, 4))
    bins = np.linspace(0, 1, 11)
    ax.hist([m["ious"] for m in results.values()], bins=bins, label=[TITLES.get(n, n) for n in results])
    ax.set(xlabel="IoU with the best-matching object", ylabel="pages", title="OD: IoU per page")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "iou_histogram.png", dpi=110)
    plt.close(fig)

    shown = pages[:6]
    fig, axes = plt.subplots(1, len(shown), figsize=(3 * len(shown), 4.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, page in zip(axes[0], shown):
        ax.imshow(load_page(page.ref))
        for b in page.boxes:
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, edgecolor="limegreen", lw=2.5))
        for k, (name, boxes) in enumerate(predictions.items()):
            box = boxes.get(page.ref.page_id)
            if box is not None:
                x0, y0, x1, y1 = box[0] * page.width, box[1] * page.height, box[2] * page.width, box[3] * page.height
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colors[k % len(colors)],
                                       lw=1.2, linestyle="--", label=name))
        ax.set_title(page.ref.page_id[:28], fontsize=7)
        ax.axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=7)
    fig.suptitle("truth (green) vs predicted boxes", fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(out_dir / "pages.png", dpi=100)
    plt.close(fig)
