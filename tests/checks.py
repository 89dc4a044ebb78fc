"""Recompute a report's figures from the files evaluation writes, with maintained tools (ranx, scikit-learn):
an integration test compares the report against these instead of checking that a number lies in [0, 1]."""

from __future__ import annotations

import csv

import numpy as np

from skr_ray.artifacts import Artifacts


def ranx_metrics(art: Artifacts, system: str, ks: list[int]) -> dict[str, float]:
    """MRR and recall@k (hit rate) of one IR system from its TREC run file and the qrels, by ranx."""
    from ranx import Qrels, Run, evaluate

    qrels, run = Qrels.from_file(str(art.qrels_file)), Run.from_file(str(art.run_file(system)))
    got = evaluate(qrels, run, ["mrr"] + [f"hit_rate@{k}" for k in ks], make_comparable=True)
    return {("mrr" if m == "mrr" else m.replace("hit_rate", "recall")): float(v) for m, v in got.items()}


def pair_scores(art: Artifacts, system: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) of one AD system from its per-pair scores file."""
    with art.pair_scores_file(system).open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return np.array([int(r["label"]) for r in rows]), np.array([float(r["score"]) for r in rows])


def sklearn_metrics(art: Artifacts, system: str) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, s = pair_scores(art, system)
    return {"auroc": float(roc_auc_score(y, s)), "auprc": float(average_precision_score(y, s)), "pairs": len(y)}
