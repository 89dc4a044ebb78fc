"""metrics.json + report.md (one table) + recall@k plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from skr_ray.artifacts import write_json

SYSTEM_TITLES = {
    "base": "Base (last-token state)",
    "e5v": "E5-V prompt (one-word summary)",
    "head_only": "Head-only (frozen backbone + projection)",
    "skr": "SKR (LoRA re-expression)",
    "bm25": "BM25",
    "minilm": "all-MiniLM-L6-v2",
    "skr_bm25": "SKR + BM25 (score fusion)",
}


def write_report(
    out_dir: Path,
    metrics: dict[str, dict[str, float]],
    curves: dict[str, np.ndarray],
    context: dict[str, Any],
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", metrics)
    keys = [k for k in next(iter(metrics.values())) if k == "mrr" or k.startswith("recall@")]
    lines = [
        "# SKR retrieval report",
        "",
        f"- evaluation set: `{context['eval']}` ({context['queries']} queries, {context['candidates']} candidates)",
        f"- model: `{context['model']}`; usable self-labels: {context.get('train_pairs', 'n/a')}"
        f" (label status counts: {context.get('label_status', {})})",
    ]
    if context.get("overlap"):
        lines.append(f"- {context['overlap']} of {context['candidates']} candidates were also in the unlabeled corpus "
                     "the model taught itself on (as text to write questions about; no evaluation label reached "
                     "training): scores here are optimistic next to a held-out corpus")
    lines += [
        "",
        "| system | " + " | ".join(keys) + " | encode s / 100 texts |",
        "|---|" + "---|" * (len(keys) + 1),
    ]
    for name, row in metrics.items():
        per100 = row.get("seconds_per_100")
        cells = [f"{row[k]:.3f}" for k in keys] + [f"{per100:.1f}" if per100 is not None else "–"]
        lines.append(f"| {SYSTEM_TITLES.get(name, name)} (`{name}`) | " + " | ".join(cells) + " |")
    if "skr_bm25" in context:
        f = context["skr_bm25"]
        lines += ["", f"`skr_bm25` = {f['weight']} x SKR + {1 - f['weight']:.2f} x BM25, scores {f['normalization']}-"
                  f"normalized per query; chosen on {f.get('validation_questions', 0)} self-labelled validation "
                  "questions (no human label)."]
    lines += ["", "![Recall@k](recall_at_k.png)", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    plot_recall(out_dir / "recall_at_k.png", curves)


def plot_recall(path: Path, curves: dict[str, np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, curve in curves.items():
        ks = np.arange(1, len(curve) + 1)
        style = "-" if name in ("skr", "base", "e5v", "head_only") else "--"
        ax.plot(ks, curve, style, marker="o", markersize=3, label=SYSTEM_TITLES.get(name, name),
                linewidth=2.5 if name == "skr" else 1.5)
    ax.set(xlabel="k", ylabel="Recall@k", ylim=(0, 1), title="Retrieval: Recall@k per system")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
