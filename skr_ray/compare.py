"""`skr compare RUN_A RUN_B ...`: the runs' evaluation metrics side by side, as one table and one bar chart.

A run is a run folder (its ``evaluate/metrics.json``), an evaluation folder, or a ``metrics.json`` file. Rows
are (system, metric) pairs found in any run; columns are the runs; numbers only (lists such as per-page IoUs and
nested counts are left out). The chart shows one metric (``--metric``; by default the task's headline metric:
MRR for IR, AUPRC for AD, mean IoU for OD) per system and run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HEADLINE = ("mrr", "auprc", "mean_iou")


def metrics_path(run: str | Path) -> Path:
    path = Path(run)
    for candidate in (path, path / "metrics.json", path / "evaluate" / "metrics.json"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{run}: no metrics.json (looked in {path}, {path / 'evaluate'})")


def load_runs(runs: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """run label -> system -> metric -> value (numbers only)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for run in runs:
        path = metrics_path(run)
        data = json.loads(path.read_text())
        label = _label(run, out)
        out[label] = {system: {k: float(v) for k, v in values.items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool)}
                      for system, values in data.items() if isinstance(values, dict)}
    return out


def _label(run: str, taken: dict[str, Any]) -> str:
    """The run folder's name; an evaluation folder beside the default one adds its suffix (runs/x/evaluate_dev ->
    x_dev)."""
    path = Path(run).resolve()
    if path.name == "metrics.json":
        path = path.parent
    label = path.name
    if label.startswith("evaluate"):
        label = path.parent.name + label[len("evaluate"):]
    base, n = label, 2
    while label in taken:
        label, n = f"{base} ({n})", n + 1
    return label


def headline(runs: dict[str, dict[str, dict[str, float]]]) -> str:
    present = {m for systems in runs.values() for metrics in systems.values() for m in metrics}
    return next((m for m in HEADLINE if m in present), sorted(present)[0] if present else "")


def table(runs: dict[str, dict[str, dict[str, float]]], metrics: list[str] | None = None) -> str:
    """Markdown: one row per (system, metric), one column per run; the best value of a row in bold."""
    labels = list(runs)
    systems = list(dict.fromkeys(s for r in runs.values() for s in r))
    rows = ["| system | metric | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for system in systems:
        names = list(dict.fromkeys(m for r in runs.values() for m in r.get(system, {})))
        for metric in names:
            if metrics and metric not in metrics:
                continue
            values = [runs[label].get(system, {}).get(metric) for label in labels]
            known = [v for v in values if v is not None]
            lower_better = metric.startswith("seconds") or metric in ("unparseable",)
            best = (min(known) if lower_better else max(known)) if len(set(known)) > 1 else None
            cells = ["–" if v is None else (f"**{v:.4g}**" if v == best else f"{v:.4g}") for v in values]
            rows.append(f"| {system} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(runs: dict[str, dict[str, dict[str, float]]], metric: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = list(runs)
    systems = [s for s in dict.fromkeys(s for r in runs.values() for s in r)
               if any(metric in runs[label].get(s, {}) for label in labels)]
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(systems) * max(1, len(labels)) / 2 + 2), 3.6))
    x = np.arange(len(systems))
    for i, label in enumerate(labels):
        values = [runs[label].get(s, {}).get(metric, np.nan) for s in systems]
        bars = ax.bar(x + (i - (len(labels) - 1) / 2) * width, values, width, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    ax.set_xticks(x, systems, rotation=20, ha="right")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by system and run")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def compare_main(runs: list[str], metric: str | None, out: str | None) -> int:
    import sys

    if len(runs) < 1:
        print("skr compare: give one or more run folders (or metrics.json files)", file=sys.stderr)
        return 2
    try:
        loaded = load_runs(runs)
    except (FileNotFoundError, json.JSONDecodeError) as exc:
        print(f"skr compare: {exc}", file=sys.stderr)
        return 1
    metric = metric or headline(loaded)
    text = table(loaded)
    print(text)
    target = Path(out or ".")
    target.mkdir(parents=True, exist_ok=True)
    (target / "compare.md").write_text(text + "\n")
    png = plot(loaded, metric, target / "compare.png")
    print(f"\n{metric} chart: {png}; table: {target / 'compare.md'}")
    return 0
