"""`skr evaluate` for AD: base NTP, SFT, head-only and SKR on labelled (question, passage) pairs.

Evaluation labels are read here and nowhere else. Decision thresholds of the trained heads come
from the self-labelled validation split (stored with the checkpoint), never from test labels.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skr_ray.artifacts import Artifacts, skip_if_done, write_json, write_text
from skr_ray.config import SKRConfig
from skr_ray.evaluate.metrics import bootstrap_auc, percentile_interval
from skr_ray.evaluate.report import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, signed
from skr_ray.tasks.ad.metrics import classification_metrics
from skr_ray.tasks.ad.scoring import cached_score_pairs

log = logging.getLogger(__name__)

TITLES = {
    "base": "Base NTP (generated yes/no)",
    "sft": "SFT (LoRA via NTP, decoded)",
    "head_only": "Head-only (frozen backbone + MLP)",
    "skr": "SKR (LoRA + classifier head)",
}
# (a, b): the report gives paired intervals of AUROC(a) - AUROC(b) and AUPRC(a) - AUPRC(b) when both ran
COMPARISONS = [("skr", "head_only"), ("skr", "sft"), ("skr", "base")]


def _ntp_row(labels: np.ndarray, scored: list[dict]) -> tuple[dict[str, Any], np.ndarray]:
    """Base/SFT: AUROC/AUPRC of the softmax over the yes/no logits (the continuous score, fixed in advance: no
    test label picks it); the generated class's AUROC/AUPRC are reported beside it, accuracy is the generated
    decision's."""
    hard = np.asarray([1.0 if r["answer"] == 1 else 0.0 for r in scored])
    soft = np.asarray([r["p_yes"] for r in scored], dtype=np.float64)
    m_hard = classification_metrics(labels, hard, 0.5)
    m = dict(classification_metrics(labels, soft, 0.5))
    m["accuracy"] = m_hard["accuracy"]  # the decision is what the model generated
    m["score_source"] = "softmax(yes,no)"
    m["auroc_generated_class"] = m_hard["auroc"]
    m["auprc_generated_class"] = m_hard["auprc"]
    m["unparseable"] = sum(1 for r in scored if r["status"] != "ok")
    return m, soft


@skip_if_done("evaluate")
def run_ad_evaluation(cfg: SKRConfig) -> dict[str, Any]:
    from skr_ray.ray_utils import ensure_ray
    from skr_ray.tasks.ad.pairs import read_eval_pairs

    art = Artifacts(cfg.output_dir)
    pairs = read_eval_pairs(cfg.data.eval, cfg.data.max_chars, cfg.evaluate.max_pairs, cfg.seed,
                            images=cfg.data.modality == "image")
    systems = list(cfg.evaluate.systems)
    for name, ckpt in (("skr", art.checkpoint_dir), ("sft", art.sft_checkpoint_dir)):
        if name in systems and not (ckpt / "adapter").is_dir():
            raise FileNotFoundError(f"no {name} checkpoint in {ckpt}; run `skr train task=ad` first")
    ensure_ray(cfg.ray)
    labels = np.asarray([p.label for p in pairs])
    rows = [{"pair_id": p.pair_id, "query": p.query, "passage": p.passage} for p in pairs]
    log.info("evaluating %s on %d pairs (%d positive)", systems, len(pairs), int(labels.sum()))
    summary = json.loads(art.annotate_summary.read_text()) if art.annotate_summary.is_file() else {}
    context = {"eval": cfg.data.eval, "pairs": len(pairs), "positives": int(labels.sum()),
               "model": cfg.model.name_or_path, "self_labels": summary.get("class_balance", {}),
               "label_status": summary.get("status_counts", {})}
    results: dict[str, dict[str, Any]] = {}
    curves: dict[str, np.ndarray] = {}
    cache = art.embedding_cache

    def record(name: str, metrics: dict[str, Any], scores: np.ndarray, scored: list[dict]) -> None:
        metrics["seconds_per_100"] = 100.0 * sum(r["seconds"] for r in scored) / len(scored)
        results[name] = metrics
        curves[name] = scores
        write_pair_scores(art.pair_scores_file(name), pairs, labels, scores)
        log.info("%s: %s", name, json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                              for k, v in metrics.items()}))
        write_ad_report(art.evaluate_dir, results, curves, labels, context)

    for name in systems:
        if name in ("base", "sft"):
            ckpt = str(art.sft_checkpoint_dir) if name == "sft" else None
            scored = cached_score_pairs(rows, cfg, "judge", ckpt, cache, name)
            metrics, scores = _ntp_row(labels, scored)
            record(name, metrics, scores, scored)
        elif name == "skr":
            head_info = json.loads((art.checkpoint_dir / "head.json").read_text())
            scored = cached_score_pairs(rows, cfg, "head", str(art.checkpoint_dir), cache, name)
            scores = np.asarray([r["score"] for r in scored])
            metrics = classification_metrics(labels, scores, float(head_info.get("threshold", 0.5)))
            metrics["threshold"] = float(head_info.get("threshold", 0.5))
            record(name, metrics, scores, scored)
        elif name == "head_only":
            head, threshold = _train_head_only(cfg, art)
            scored = cached_score_pairs(rows, cfg, "states", None, cache, "base_states")
            import torch

            with torch.no_grad():
                states = torch.tensor(np.asarray([r["state"] for r in scored]), dtype=torch.float32)
                scores = torch.sigmoid(head(states)).numpy()
            metrics = classification_metrics(labels, scores, threshold)
            metrics["threshold"] = threshold
            record(name, metrics, scores, scored)

    write_ad_report(art.evaluate_dir, results, curves, labels, context)
    Artifacts.write_config(art.evaluate_dir, cfg)
    Artifacts.mark_done(art.evaluate_dir, {"systems": systems})
    return results


def _train_head_only(cfg: SKRConfig, art: Artifacts) -> tuple[Any, float]:
    """MLP head on frozen base states of the self-labelled training split; threshold from its val split."""
    from skr_ray.tasks.ad.probe import fit_head, self_label_states
    from skr_ray.tasks.ad.training import load_examples, resolve_pos_weight

    train, val = load_examples(cfg, art)
    if not train:
        raise FileNotFoundError(f"head_only needs self-labels; none usable in {art.labels_dir}")
    x_tr, y_tr, x_va, y_va = self_label_states(cfg, art, train, val)
    head, threshold, _ = fit_head(cfg, x_tr, y_tr, x_va, y_va, resolve_pos_weight(cfg, train),
                                  cfg.evaluate.head_only_epochs)
    return head, threshold


def write_pair_scores(path: Path, pairs: Sequence[Any], labels: np.ndarray, scores: np.ndarray) -> None:
    """One system's continuous score for every labelled pair (tab-separated: pair_id, query_id, doc_id, label,
    score; the score exact, as ``repr`` of its float64), so AUROC/AUPRC can be recomputed with any tool."""
    text = io.StringIO()
    out = csv.writer(text, delimiter="\t", lineterminator="\n")
    out.writerow(["pair_id", "query_id", "doc_id", "label", "score"])
    for p, y, s in zip(pairs, np.asarray(labels).tolist(), np.asarray(scores, dtype=np.float64).tolist()):
        out.writerow([p.pair_id, p.query_id, p.doc_id, int(y), repr(s)])
    write_text(path, text.getvalue())


def add_auc_intervals(results: dict[str, dict[str, Any]], scores: dict[str, np.ndarray],
                      labels: np.ndarray) -> list[tuple[str, str]]:
    """Adds ``auroc_ci95`` / ``auprc_ci95`` to each system's row and, to system a of each pair (a, b) in
    COMPARISONS that ran, ``comparisons[b]`` with the paired intervals of the AUROC and AUPRC differences;
    returns the pairs compared.

    With 50-100 positive pairs a few AUPRC points are within noise. Pairs are resampled by class (stratified,
    fixed seed) and every system is scored on the same resamples, so the difference intervals are paired.
    """
    scored = {name: scores[name] for name, row in results.items()
              if name in scores and row.get("auroc") is not None and row.get("auprc") is not None}
    for row in results.values():
        row.pop("comparisons", None)
    if not scored:
        return []
    stats = bootstrap_auc(labels, scored, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
    for name in scored:
        for metric in ("auroc", "auprc"):
            results[name][f"{metric}_ci95"] = list(percentile_interval(stats[name][metric]))
    compared = []
    for a, b in COMPARISONS:
        if a not in scored or b not in scored:
            continue
        entry: dict[str, Any] = {}
        for metric in ("auroc", "auprc"):
            lo, hi = percentile_interval(stats[a][metric] - stats[b][metric])
            entry[f"{metric}_diff"] = float(results[a][metric] - results[b][metric])
            entry[f"{metric}_diff_ci95"] = [lo, hi]
            entry[f"{metric}_excludes_zero"] = bool(lo > 0 or hi < 0)
        results[a].setdefault("comparisons", {})[b] = entry
        compared.append((a, b))
    return compared


def write_ad_report(out_dir: Path, results: dict[str, dict[str, Any]], scores: dict[str, np.ndarray],
                    labels: np.ndarray, context: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    compared = add_auc_intervals(results, scores, labels)
    write_json(out_dir / "metrics.json", results)
    lines = [
        "# SKR answerability (AD) report",
        "",
        f"- evaluation pairs: `{context['eval']}` ({context['pairs']} pairs, {context['positives']} answerable)",
        f"- model: `{context['model']}`; self-label class balance: {context.get('self_labels', {})}"
        f" (statuses: {context.get('label_status', {})})",
        "- thresholds of head_only / skr come from the self-labelled validation split, never from test labels",
        "",
        "| system | accuracy | AUROC | AUPRC | s / 100 cases | notes |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in results.items():
        note = m.get("score_source") or (f"threshold {m['threshold']:.3f}" if "threshold" in m else "")
        if m.get("unparseable"):
            note += f"; {m['unparseable']} unparseable answers (counted as no)"
        fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
        ci = lambda k: f" [{m[k][0]:.3f}, {m[k][1]:.3f}]" if k in m else ""  # noqa: E731
        lines.append(f"| {TITLES.get(name, name)} (`{name}`) | {fmt(m['accuracy'])} | {fmt(m.get('auroc'))}"
                     f"{ci('auroc_ci95')} | {fmt(m.get('auprc'))}{ci('auprc_ci95')} | {m['seconds_per_100']:.1f} | "
                     f"{note} |")
    lines += ["", "Per-pair scores: `scores/<system>.tsv`."]
    if any("auroc_ci95" in m for m in results.values()):
        lines[-1] += (f" [brackets]: 95% percentile bootstrap intervals ({BOOTSTRAP_RESAMPLES} resamples of the "
                      f"pairs, stratified by label, seed {BOOTSTRAP_SEED}).")
    if compared:
        lines += ["", "| comparison | Δ AUROC [95% interval, paired] | excludes 0 | Δ AUPRC [95% interval, paired] "
                  "| excludes 0 |", "|---|---|---|---|---|"]
        for a, b in compared:
            c = results[a]["comparisons"][b]
            cells = []
            for metric in ("auroc", "auprc"):
                lo, hi = c[f"{metric}_diff_ci95"]
                cells += [f"{signed(c[f'{metric}_diff'])} [{signed(lo)}, {signed(hi)}]",
                          "yes" if c[f"{metric}_excludes_zero"] else "no"]
            lines.append(f"| `{a}` − `{b}` | " + " | ".join(cells) + " |")
    lines += ["", "![Precision-recall](pr_curve.png) ![ROC](roc_curve.png)", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    _plot_curves(out_dir, scores, labels)


def _plot_curves(out_dir: Path, scores: dict[str, np.ndarray], labels: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    if len(set(labels.tolist())) < 2:
        return
    for kind in ("pr", "roc"):
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        for name, s in scores.items():
            if kind == "pr":
                p, r, _ = precision_recall_curve(labels, s)
                ax.plot(r, p, label=TITLES.get(name, name), linewidth=2.5 if name == "skr" else 1.5)
            else:
                f, t, _ = roc_curve(labels, s)
                ax.plot(f, t, label=TITLES.get(name, name), linewidth=2.5 if name == "skr" else 1.5)
        if kind == "pr":
            ax.axhline(labels.mean(), color="grey", linestyle=":", label="chance")
            ax.set(xlabel="recall", ylabel="precision", title="Answerability: precision-recall")
        else:
            ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
            ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Answerability: ROC")
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if kind == "roc" else "upper right")
        fig.tight_layout()
        fig.savefig(out_dir / f"{kind}_curve.png", dpi=120)
        plt.close(fig)
