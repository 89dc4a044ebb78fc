"""metrics.json + report.md (one table) + recall@k plot, and the run files and qrels behind them."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from skr_ray.artifacts import write_json, write_text
from skr_ray.evaluate.metrics import bootstrap_mean_interval, ranking_order, strictly_decreasing

log = logging.getLogger(__name__)

RUN_DEPTH = 100  # candidates per query in a run file (more where the first relevant one ranks lower)
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
# (a, b): the report gives the paired interval of MRR(a) - MRR(b) when both systems ran
COMPARISONS = [("skr", "head_only"), ("skr", "base"), ("skr_bm25", "bm25"), ("skr_bm25", "skr")]

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
    reciprocal_ranks: dict[str, dict[str, float]] | None = None,
) -> None:
    """metrics.json, report.md and the recall plot. With ``reciprocal_ranks`` (system -> query id -> 1/rank of
    its first relevant candidate) each system's row gains ``mrr_ci95`` and, for the pairs in COMPARISONS,
    ``comparisons`` (paired intervals of the MRR difference), in metrics.json and in the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    compared = add_mrr_intervals(metrics, reciprocal_ranks) if reciprocal_ranks else []
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
        "| system | " + " | ".join(keys) + " | MRR 95% interval | encode s / 100 texts |",
        "|---|" + "---|" * (len(keys) + 2),
    ]
    for name, row in metrics.items():
        per100 = row.get("seconds_per_100")
        ci = row.get("mrr_ci95")
        cells = [f"{row[k]:.3f}" for k in keys] + [f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "–"]
        cells += [f"{per100:.1f}" if per100 is not None else "–"]
        lines.append(f"| {SYSTEM_TITLES.get(name, name)} (`{name}`) | " + " | ".join(cells) + " |")
    if reciprocal_ranks:
        lines += ["", f"MRR intervals: percentile bootstrap over queries ({BOOTSTRAP_RESAMPLES} resamples, seed "
                  f"{BOOTSTRAP_SEED}). Rankings: `runs/<system>.trec` (TREC run) with `qrels.txt`; recall@k here is "
                  "the share of queries with a relevant candidate in the top k (trec_eval `success`, ranx "
                  "`hit_rate`)."]
    if compared:
        lines += ["", "| comparison | Δ MRR | 95% interval (paired) | excludes 0 |", "|---|---|---|---|"]
        for a, b in compared:
            c = metrics[a]["comparisons"][b]
            lo, hi = c["mrr_diff_ci95"]
            lines.append(f"| `{a}` − `{b}` | {signed(c['mrr_diff'])} | [{signed(lo)}, {signed(hi)}] | "
                         f"{'yes' if c['excludes_zero'] else 'no'} |")
    if "skr_bm25" in context:
        f = context["skr_bm25"]
        where = (f"chosen on {f.get('validation_questions', 0)} self-labelled validation questions"
                 if f.get("chosen_by") == "self-labelled validation" else "a fixed rule")
        lines += ["", f"`skr_bm25` = {f['description']}; {where} (no human label). How the evaluation set's MRR moves "
                  "with the weight (drawn after the rule was fixed): [fusion_curve.png](fusion_curve.png)."]
    skr_s, base_s = (metrics.get(n, {}).get("seconds_per_100") for n in ("skr", "e5v"))
    if skr_s and base_s:  # the same backbone under the same input format, LoRA merged into its weights or not
        lines += ["", f"Encoding cost: SKR {skr_s:.1f} s per 100 texts against {base_s:.1f} for the base model under "
                  f"the same prompt (`e5v`): {skr_s / base_s:.2f}x (LoRA is merged into the weights)."]
    lines += ["", "![Recall@k](recall_at_k.png)", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    plot_recall(out_dir / "recall_at_k.png", curves)


def plot_fusion_curve(path: Path, curve: dict[str, Any], choice: dict[str, Any]) -> None:
    """MRR against the SKR weight of the weighted-sum fusion (each normalization), RRF as a line, and the chosen
    rule marked; the self-labelled validation curve dashed when the rule was chosen there."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    weights = curve["weights"]
    for i, norm in enumerate(("min-max", "zmuv")):
        ax.plot(weights, curve[norm], marker="o", markersize=3, color=f"C{i}", label=f"weighted sum, {norm}")
        val = choice.get("validation_curve")
        if val:
            ax.plot(weights, val[norm], linestyle="--", color=f"C{i}", alpha=0.6,
                    label=f"same on self-labelled validation, {norm}")
    ax.axhline(curve["rrf"], color="C2", label="reciprocal-rank fusion")
    ax.axhline(curve["min-max"][0], color="grey", linestyle=":", label="BM25 alone (weight 0)")
    ax.axhline(curve["min-max"][-1], color="black", linestyle=":", label="SKR alone (weight 1)")
    if choice.get("method") == "wsum":
        w = float(choice["weight"])
        ax.axvline(w, color="C3", linestyle="-.", label=f"chosen weight {w:.2f} ({choice['norm']})")
    ax.set(xlabel="SKR weight (1 − BM25 weight)", ylabel="MRR", title="skr_bm25: MRR against the fusion weight")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def signed(x: float) -> str:
    """+0.031 / −0.012 (a true minus sign, so a column of differences lines up)."""
    return f"{x:+.3f}".replace("-", "\u2212")


def add_mrr_intervals(metrics: dict[str, dict[str, Any]],
                      reciprocal_ranks: dict[str, dict[str, float]]) -> list[tuple[str, str]]:
    """Adds ``mrr_ci95`` to each system's row and, to system a of each pair (a, b) in COMPARISONS that ran,
    ``comparisons[b] = {mrr_diff, mrr_diff_ci95, excludes_zero, queries}``; returns the pairs compared.

    A difference of a few MRR points on 40-200 queries can be noise: the paired interval (the same resampled
    queries for both systems) says whether it is. Deterministic (fixed seed), so a partial report written
    after each system agrees with the final one.
    """
    for name, row in metrics.items():
        row.pop("comparisons", None)
        if name in reciprocal_ranks:
            rr = reciprocal_ranks[name]
            values = np.asarray([rr[q] for q in sorted(rr)], dtype=np.float64)
            row["mrr_ci95"] = list(bootstrap_mean_interval(values, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED))
    compared = []
    for a, b in COMPARISONS:
        if a not in metrics or b not in metrics or a not in reciprocal_ranks or b not in reciprocal_ranks:
            continue
        queries = sorted(set(reciprocal_ranks[a]) & set(reciprocal_ranks[b]))
        if not queries:
            continue
        diff = np.asarray([reciprocal_ranks[a][q] - reciprocal_ranks[b][q] for q in queries], dtype=np.float64)
        lo, hi = bootstrap_mean_interval(diff, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
        metrics[a].setdefault("comparisons", {})[b] = {
            "mrr_diff": float(diff.mean()), "mrr_diff_ci95": [lo, hi], "excludes_zero": bool(lo > 0 or hi < 0),
            "queries": len(queries)}
        compared.append((a, b))
    return compared


_SPACE = re.compile(r"\s")


def _trec_id(x: str) -> str:
    """A query or document id as one whitespace-free field (TREC files split lines on whitespace)."""
    return _SPACE.sub("_", x) if _SPACE.search(x) else x


def write_run(path: Path, scores: np.ndarray, query_ids: list[str], doc_ids: list[str],
              qrels: dict[str, set[str]], run_name: str, depth: int = RUN_DEPTH) -> None:
    """One system's ranking as a TREC run file (``qid Q0 docid rank score run_name``), so anyone can recompute
    the report's numbers with trec_eval or ranx.

    Each query keeps its top ``depth`` candidates (all if fewer) and, where its first relevant candidate ranks
    lower, the list continues down to it, so MRR recomputed from the file equals the report's. Candidates are
    written in ``ranking_order`` (ties broken pessimistically, as the report does) with strictly decreasing
    scores, because those tools re-sort by score and would break ties their own way.
    """
    if any(_SPACE.search(x) for x in (*query_ids, *doc_ids)):
        log.warning("%s: ids with whitespace are written with '_' in its place (TREC fields are "
                    "whitespace-separated)", path)
    docs = [_trec_id(d) for d in doc_ids]
    index = {d: i for i, d in enumerate(doc_ids)}
    lines: list[str] = []
    for row, qid in enumerate(query_ids):
        relevant = np.zeros(len(doc_ids), dtype=bool)
        relevant[[index[d] for d in qrels.get(qid, ()) if d in index]] = True
        order = ranking_order(scores[row], relevant)
        hits = np.flatnonzero(relevant[order])
        n = min(len(order), max(depth, int(hits[0]) + 1 if len(hits) else 0))
        values = strictly_decreasing(np.asarray(scores[row], dtype=np.float64)[order[:n]])
        q = _trec_id(qid)
        lines += [f"{q} Q0 {docs[i]} {rank} {v!r} {run_name}" for rank, (i, v) in
                  enumerate(zip(order[:n].tolist(), values.tolist()), start=1)]
    write_text(path, "\n".join(lines) + "\n")


def write_qrels(path: Path, qrels: dict[str, set[str]], query_ids: list[str]) -> None:
    """The relevance judgements of the evaluated queries as TREC qrels (``qid 0 docid 1``), beside the run files
    so the folder is enough to recompute the report."""
    lines = [f"{_trec_id(q)} 0 {_trec_id(d)} 1" for q in query_ids for d in sorted(qrels.get(q, ()))]
    write_text(path, "\n".join(lines) + "\n")


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
