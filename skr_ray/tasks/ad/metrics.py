"""Classification metrics for imbalanced yes/no scoring (scikit-learn)."""

from __future__ import annotations

import numpy as np


def classification_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float | None]:
    """Accuracy at ``threshold`` plus AUROC and AUPRC (None when only one class is present)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    out: dict[str, float | None] = {"accuracy": float(np.mean((s >= threshold).astype(int) == y))}
    if len(set(y.tolist())) == 2:
        out["auroc"] = float(roc_auc_score(y, s))
        out["auprc"] = float(average_precision_score(y, s))
    else:
        out["auroc"] = out["auprc"] = None
    out["positive_rate"] = float(y.mean()) if len(y) else None
    return out


def best_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """Threshold maximising accuracy (midpoint between neighbouring scores; 0.5 if nothing better)."""
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    if len(s) == 0:
        return 0.5
    uniq = np.unique(s)
    candidates = np.concatenate([[0.5], (uniq[:-1] + uniq[1:]) / 2, [uniq[0] - 1e-6, uniq[-1] + 1e-6]])
    accs = [np.mean((s >= t).astype(int) == y) for t in candidates]
    return float(candidates[int(np.argmax(accs))])
