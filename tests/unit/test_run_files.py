"""The evaluation folder is enough to check the report with standard tools: ranx recomputes MRR and
recall@k (success@k) from the TREC run files and qrels, scikit-learn recomputes AUROC/AUPRC from the per-pair
score files, and both agree with metrics.json."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from skr_ray.artifacts import Artifacts
from skr_ray.evaluate.metrics import first_relevant_ranks, retrieval_metrics
from skr_ray.evaluate.report import write_qrels, write_report, write_run

KS = [1, 2, 3, 5]


def _ranx(qrels_path: Path, run_path: Path, ks: list[int]) -> dict[str, float]:
    from ranx import Qrels, Run, evaluate

    qrels, run = Qrels.from_file(str(qrels_path)), Run.from_file(str(run_path))
    got = evaluate(qrels, run, ["mrr"] + [f"hit_rate@{k}" for k in ks], make_comparable=True)
    return {("mrr" if m == "mrr" else m.replace("hit_rate", "recall")): float(v) for m, v in got.items()}


def _fixture() -> tuple[np.ndarray, list[str], list[str], dict[str, set[str]]]:
    """Ties everywhere: relevant tied with non-relevant documents at the top and in the middle, a constant
    scorer row, several relevant documents per query, and a relevant document below depth 3."""
    docs = ["a", "b", "c", "d", "e", "f", "g", "h"]
    queries = ["q1", "q2", "q3", "q4", "q5"]
    scores = np.array([
        [0.9, 0.9, 0.9, 0.1, 0.1, 0.0, 0.0, 0.0],  # q1: relevant c tied with a, b at the top -> rank 3
        [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],  # q2: constant scorer -> rank 7 (two relevant)
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],  # q3: relevant a, b at the bottom -> rank 7
        [0.3, 0.8, 0.8, 0.3, 0.3, 0.2, 0.1, 0.8],  # q4: relevant d, e tied with a -> rank 5
        [1.0, 0.7, 0.7, 0.2, 0.3, 0.3, 0.3, 0.3],  # q5: relevant a -> rank 1
    ], dtype=np.float32)
    qrels = {"q1": {"c", "h"}, "q2": {"a", "h"}, "q3": {"a", "b"}, "q4": {"d", "e"}, "q5": {"a", "f"}}
    return scores, docs, queries, qrels


@pytest.mark.parametrize("depth", [3, 100])
def test_ranx_recomputes_the_report_from_the_run_file(tmp_path: Path, depth: int):
    scores, docs, queries, qrels = _fixture()
    ranks = first_relevant_ranks(scores, docs, queries, qrels)
    assert ranks.tolist() == [3, 7, 7, 5, 1]
    expected = retrieval_metrics(ranks, KS)
    write_run(tmp_path / "runs" / "sys.trec", scores, queries, docs, qrels, "sys", depth=depth)
    write_qrels(tmp_path / "qrels.txt", qrels, queries)
    write_report(tmp_path, {"sys": dict(expected, seconds_per_100=None)}, {"sys": np.ones(3)},
                 {"eval": "fixture", "queries": 5, "candidates": 8, "model": "m"},
                 {"sys": dict(zip(queries, (1.0 / ranks).tolist()))})
    reported = json.loads((tmp_path / "metrics.json").read_text())["sys"]
    got = _ranx(tmp_path / "qrels.txt", tmp_path / "runs" / "sys.trec", KS)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
        assert reported[key] == pytest.approx(got[key], abs=1e-9), key
    lines = [line.split() for line in (tmp_path / "runs" / "sys.trec").read_text().splitlines()]
    assert all(len(fields) == 6 and fields[1] == "Q0" and fields[5] == "sys" for fields in lines)
    per_query = {q: [f for f in lines if f[0] == q] for q in queries}
    # top `depth` (all 8 when fewer), and below it only as deep as the first relevant document
    assert [len(v) for v in per_query.values()] == ([3, 7, 7, 5, 3] if depth == 3 else [8] * 5)
    for rows in per_query.values():
        assert [int(f[3]) for f in rows] == list(range(1, len(rows) + 1))
        assert all(float(x[4]) > float(y[4]) for x, y in zip(rows, rows[1:]))  # no tie left to break
    assert per_query["q1"][2][2] == "c" and {f[2] for f in per_query["q1"][:2]} == {"a", "b"}


def test_qrels_file_is_trec_format(tmp_path: Path):
    write_qrels(tmp_path / "qrels.txt", {"q1": {"b", "a"}, "q2": {"c"}, "unused": {"d"}}, ["q1", "q2"])
    assert (tmp_path / "qrels.txt").read_text() == "q1 0 a 1\nq1 0 b 1\nq2 0 c 1\n"


def test_report_intervals_and_comparisons(tmp_path: Path):
    rng = np.random.default_rng(0)
    queries = [f"q{i}" for i in range(60)]
    base = 1.0 / rng.integers(1, 30, size=60)
    rr = {"base": base, "head_only": base, "skr": np.minimum(1.0, 4 * base)}
    metrics = {name: {"mrr": float(v.mean()), "recall@1": float((v == 1).mean()), "seconds_per_100": None}
               for name, v in rr.items()}
    write_report(tmp_path, metrics, {n: np.ones(3) for n in rr},
                 {"eval": "x", "queries": 60, "candidates": 30, "model": "m"},
                 {n: dict(zip(queries, v.tolist())) for n, v in rr.items()})
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for name, row in saved.items():
        lo, hi = row["mrr_ci95"]
        assert lo <= row["mrr"] <= hi, name
    vs_base = saved["skr"]["comparisons"]["base"]
    assert vs_base["mrr_diff"] == pytest.approx(saved["skr"]["mrr"] - saved["base"]["mrr"])
    assert vs_base["excludes_zero"] and vs_base["mrr_diff_ci95"][0] > 0 and vs_base["queries"] == 60
    assert set(saved["skr"]["comparisons"]) == {"base", "head_only"} and "comparisons" not in saved["base"]
    report = (tmp_path / "report.md").read_text()
    lo, hi = vs_base["mrr_diff_ci95"]
    assert f"| `skr` − `base` | +{vs_base['mrr_diff']:.3f} | [+{lo:.3f}, +{hi:.3f}] | yes |" in report


def test_the_ir_evaluation_writes_runs_and_qrels_that_ranx_agrees_with(tmp_path: Path, monkeypatch):
    """The real `skr evaluate` path (record()) on the bundled demo set, with BM25 and a stand-in for MiniLM that
    scores in coarse steps (so ties matter), no model needed."""
    from skr_ray.config import load_config
    from skr_ray.evaluate import baselines
    from skr_ray.tasks.ir.evaluate import run_ir_evaluation

    monkeypatch.setattr(baselines, "minilm_scores", lambda q, d: np.floor(baselines.bm25_scores(q, d) / 4.0))
    cfg = load_config(None, ["data.eval=demo", f"output_dir={tmp_path / 'run'}", "evaluate.systems=[bm25,minilm]"])
    results = run_ir_evaluation(cfg)
    art = Artifacts(cfg.output_dir)
    saved = json.loads(art.metrics.read_text())
    assert set(saved) == {"bm25", "minilm"}
    for name in saved:
        got = _ranx(art.qrels_file, art.run_file(name), list(cfg.evaluate.ks))
        for key in ["mrr"] + [f"recall@{k}" for k in cfg.evaluate.ks]:
            assert got[key] == pytest.approx(saved[name][key], abs=1e-9), (name, key)
            assert results[name][key] == saved[name][key]
        lo, hi = saved[name]["mrr_ci95"]
        assert lo <= saved[name]["mrr"] <= hi
    assert saved["minilm"]["mrr"] < saved["bm25"]["mrr"]  # the coarse steps tie, and ties count against it


@dataclass(frozen=True)
class _Pair:
    pair_id: str
    query_id: str
    doc_id: str


def test_scikit_learn_recomputes_auroc_and_auprc_from_the_pair_scores(tmp_path: Path):
    from sklearn.metrics import average_precision_score, roc_auc_score

    from skr_ray.tasks.ad.evaluate import write_ad_report, write_pair_scores
    from skr_ray.tasks.ad.metrics import classification_metrics

    rng = np.random.default_rng(3)
    labels = (rng.random(300) < 0.2).astype(int)
    pairs = [_Pair(f"p{i}", f"q{i // 3}", f"d{i}") for i in range(300)]
    scores = {"base": np.round(rng.random(300) + 0.2 * labels, 1),  # coarse: ties across classes
              "head_only": (rng.random(300) + 0.5 * labels).astype(np.float32),
              "skr": rng.random(300) + 1.5 * labels}
    results = {name: classification_metrics(labels, s, 0.5) | {"seconds_per_100": 1.0} for name, s in scores.items()}
    for name, s in scores.items():
        write_pair_scores(tmp_path / "scores" / f"{name}.tsv", pairs, labels, s)
    write_ad_report(tmp_path, results, scores, labels, {"eval": "x", "pairs": 300, "positives": int(labels.sum()),
                                                         "model": "m"})
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for name in scores:
        with (tmp_path / "scores" / f"{name}.tsv").open() as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        assert [r["pair_id"] for r in rows] == [p.pair_id for p in pairs]
        y = np.array([int(r["label"]) for r in rows])
        s = np.array([float(r["score"]) for r in rows])
        assert saved[name]["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
        assert saved[name]["auprc"] == pytest.approx(average_precision_score(y, s), abs=1e-9)
        for metric in ("auroc", "auprc"):
            lo, hi = saved[name][f"{metric}_ci95"]
            assert lo - 1e-12 <= saved[name][metric] <= hi + 1e-12, (name, metric)  # sklearn can pass 1 by an ulp
    assert set(saved["skr"]["comparisons"]) == {"base", "head_only"}
    for other in ("base", "head_only"):
        c = saved["skr"]["comparisons"][other]
        assert c["auroc_diff"] == pytest.approx(saved["skr"]["auroc"] - saved[other]["auroc"])
        assert c["auroc_excludes_zero"] and c["auroc_diff_ci95"][0] > 0
    report = (tmp_path / "report.md").read_text()
    assert "| `skr` − `base` | +" in report and "scores/<system>.tsv" in report
