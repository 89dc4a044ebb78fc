"""Both annotation engines: prompts longer than the context get status too_long (never a crash), and the
vLLM path's prompts and label rows are the HF path's (its engine itself runs only on GPUs: test marked gpu)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from skr_ray.artifacts import Artifacts
from skr_ray.config import load_config
from skr_ray.schema import DOC_ID, LABEL_SCHEMA, TEXT
from tests.tiny import FAMILIES, LOOSE_FILTERS

LONG = "revenue " * 4200  # more tokens than the tiny model's 4,096-token context


def _cfg(tiny_model_dir, tmp_path, *extra):
    return load_config(None, [f"model.name_or_path={tiny_model_dir}", f"output_dir={tmp_path}",
                              "annotate.max_input_tokens=5000", "annotate.max_new_tokens=8",
                              "annotate.label_kinds=[question,keywords]", *extra])


def test_hf_engine_counts_a_prompt_longer_than_the_context_as_too_long(tiny_model_dir, tmp_path):
    from skr_ray.annotate.labelstore import read_labels
    from skr_ray.tasks.ir.annotate import SelfAnnotator

    cfg = _cfg(tiny_model_dir, tmp_path)
    annotator = SelfAnnotator(cfg.to_dict(), 1)
    out = annotator({DOC_ID: np.array(["short", "long", "empty"]),
                     TEXT: np.array(["revenue rose in 2019", LONG, " "], dtype=object)})
    statuses = dict(zip(zip(out[DOC_ID], range(6)), out["status"]))
    assert [s for (d, _), s in statuses.items() if d == "long"] == ["too_long", "too_long"]
    assert all(s not in ("too_long", "error") for (d, _), s in statuses.items() if d == "short")
    table = read_labels(tmp_path / "annotate" / "labels")
    assert table.schema.names == LABEL_SCHEMA.names and len(table) == 6
    long_rows = [r for r in table.to_pylist() if r[DOC_ID] == "long"]
    assert all("context" in r["raw_output"] and r["label"] == "" for r in long_rows)


def test_vllm_path_builds_the_hf_prompts_and_writes_the_same_label_rows(tiny_model_dir, tmp_path):
    from skr_ray.annotate.generation import GenerationEngine
    from skr_ray.annotate.labelstore import read_labels
    from skr_ray.models.backbone import load_backbone
    from skr_ray.tasks.ir.prompts import build_kind_messages
    from skr_ray.tasks.ir.vllm_engine import ERROR_COLUMN, LabelWriter, PromptBuilder, requests, sampling_params

    cfg = _cfg(tiny_model_dir, tmp_path, "annotate.engine=vllm", "annotate.questions_per_doc=2")
    todo = requests(["a", "b", "c"], ["revenue rose in 2019", LONG, ""], ["question", "keywords"], 2,
                    done={("a", 0)})
    assert len(todo) == 11 and [r["label_index"] for r in todo if r[DOC_ID] == "a"] == [1, 2, 3]
    assert [(r["kind"], r["sampled"]) for r in todo if r[DOC_ID] == "b"] == [
        ("question", False), ("question", True), ("keywords", False), ("keywords", True)]
    assert sampling_params(cfg, False, 0)["temperature"] == 0.0 and sampling_params(cfg, True, 3)["seed"] == 3

    batch = {k: np.array([r[k] for r in todo], dtype=object) for k in todo[0]}
    prepared = PromptBuilder(cfg.to_dict(), str(tiny_model_dir))(batch)
    model, tok = load_backbone(cfg.model)
    engine = GenerationEngine(model, tok, 5000, 8)
    assert prepared["prompt"][0] == engine.render(build_kind_messages("revenue rose in 2019", "question"))
    assert [bool(x) for x in prepared["too_long"]] == [False] * 3 + [True] * 4 + [False] * 4
    assert [bool(x) for x in prepared["empty"]] == [False] * 7 + [True] * 4

    # the engine's answers (one failed row) and the skipped rows go through the same writer
    generated = np.array(["What did revenue do in 2019?", "", "revenue 2019"] + [""] * 8, dtype=object)
    errors = np.array(["", "RuntimeError: engine failed"] + [""] * 9, dtype=object)
    out = LabelWriter(cfg.to_dict(), "tiny")({**prepared, "generated_text": generated, ERROR_COLUMN: errors})
    assert out["status"][:3] == ["ok", "error", "ok"]
    assert out["status"][3:7] == ["too_long"] * 4 and out["status"][7:] == ["empty_input"] * 4
    table = read_labels(tmp_path / "annotate" / "labels")
    assert table.schema.names == LABEL_SCHEMA.names and len(table) == 11
    row = table.to_pylist()[0]
    assert row["label"] == "What did revenue do in 2019?" and row["label_kind"] == "question"
    assert '"engine": "vllm"' in row["generation"] and row["model_id"] == "tiny"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None,
                    reason="needs CUDA and vLLM (pip install 'skr_ray[vllm]')")
def test_vllm_engine_annotates_and_resumes_on_a_gpu(tiny_model_dir, tmp_path, ray_local):
    from skr_ray.annotate.labelstore import read_labels
    from skr_ray.tasks.ir.annotate import run_annotation

    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", f"output_dir={tmp_path}", "data.max_docs=6",
                             "annotate.engine=vllm", "annotate.max_new_tokens=8", "annotate.max_model_len=512"])
    summary = run_annotation(cfg)
    assert summary["documents_labelled"] == 6 and summary["label_rows"] == 6
    table = read_labels(tmp_path / "annotate" / "labels")
    assert "error" not in table["status"].to_pylist() and '"engine": "vllm"' in table["generation"][0].as_py()
    assert run_annotation(cfg)["labelled_this_run"] == 0  # done: a re-run labels nothing


def test_a_separate_annotator_writes_the_labels_the_learner_trains_on(tiny_model_dir, tiny_judge_model_dir, tmp_path):
    """annotate.model: a different model writes the labels; rows record both ids; training reads them as usual."""
    from skr_ray.annotate.labelstore import read_labels
    from skr_ray.config import annotator_model
    from skr_ray.models.backbone import model_id
    from skr_ray.tasks.ir.annotate import SelfAnnotator

    texts = np.array(["revenue rose in 2019", "the tax rate fell to 21 percent", "leases run for seven years"],
                     dtype=object)
    batch = {DOC_ID: np.array(["a", "b", "c"]), TEXT: texts}
    own = _cfg(tiny_model_dir, tmp_path / "own", "annotate.max_new_tokens=12", "annotate.label_kinds=[question]")
    other = _cfg(tiny_model_dir, tmp_path / "other", "annotate.max_new_tokens=12", "annotate.label_kinds=[question]",
                 f"annotate.model.name_or_path={tiny_judge_model_dir}")
    assert annotator_model(own) is own.model and annotator_model(other).name_or_path == str(tiny_judge_model_dir)
    SelfAnnotator(own.to_dict(), 1)(batch)
    SelfAnnotator(other.to_dict(), 1)(batch)
    mine = read_labels(tmp_path / "own" / "annotate" / "labels").to_pylist()
    theirs = read_labels(tmp_path / "other" / "annotate" / "labels").to_pylist()
    learner, annotator = model_id(own.model), model_id(annotator_model(other))
    assert learner != annotator
    assert {(r["model_id"], r["learner_model_id"]) for r in mine} == {(learner, learner)}
    assert {(r["model_id"], r["learner_model_id"]) for r in theirs} == {(annotator, learner)}
    assert [r["raw_output"] for r in mine] != [r["raw_output"] for r in theirs]  # another model wrote them


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_writes_labels_with_its_own_model(family, tmp_path):
    """The annotation UDF (what each Ray Data actor runs) on every decoder family: its chat template, its
    shared-opening KV cache, a label file whose rows name that model."""
    import numpy as np

    from skr_ray.annotate.labelstore import read_labels
    from skr_ray.models.backbone import model_id
    from skr_ray.tasks.ir.annotate import SelfAnnotator
    from tests.tiny import build_tiny_model

    model_dir = build_tiny_model(tmp_path / family, family=family)
    cfg = load_config(None, [f"model.name_or_path={model_dir}", f"output_dir={tmp_path / 'run'}",
                             "annotate.batch_size=3", "annotate.max_new_tokens=6", *LOOSE_FILTERS])
    out = SelfAnnotator(cfg.to_dict(), 1)({DOC_ID: np.array(["a", "b", "c"]),
                                           TEXT: np.array(["revenue rose in 2019", "leases run 7 years", ""])})
    assert list(out[DOC_ID]) == ["a", "b", "c"] and out["status"][2] == "empty_input"
    table = read_labels(Artifacts(cfg.output_dir).labels_dir, quarantine=False)
    assert sorted(table[DOC_ID].to_pylist()) == ["a", "b", "c"]
    assert set(table["model_id"].to_pylist()) == {model_id(cfg.model)}
    raw = dict(zip(table[DOC_ID].to_pylist(), table["raw_output"].to_pylist()))
    assert raw["a"] and raw["b"] and raw["c"] == ""  # the model generated for both texts, nothing for the empty one


def test_vllm_path_streams_the_corpus_through_one_pipeline_and_resumes(tiny_model_dir, tmp_path, ray_local,
                                                                      monkeypatch):
    """The whole vLLM path on Ray Data, with a scripted engine where vLLM would run (it needs CUDA): each request
    becomes one label row; a too-long and an empty row are counted without their prompt reaching the engine; a
    resume asks only for the missing (document, label index) pairs; the driver never gathers the corpus."""
    import json
    import uuid

    import ray.data
    import ray.data.llm

    from skr_ray.annotate.labelstore import read_labels
    from skr_ray.tasks.ir.annotate import run_annotation
    from skr_ray.tasks.ir.vllm_engine import SKIPPED_PROMPT

    engine_log = tmp_path / "engine"
    engine_log.mkdir()

    def build_processor(config, preprocess, postprocess):
        def generate(batch):
            prompts = [str(p) for p in batch["prompt"]]
            (engine_log / uuid.uuid4().hex).write_text(json.dumps(prompts))
            batch["generated_text"] = np.asarray(
                ["" if p == SKIPPED_PROMPT else f"What did the company report in {d} for part {k}?"
                 for p, d, k in zip(prompts, batch[DOC_ID], batch["label_index"])], dtype=object)
            return batch

        return lambda ds: ds.map(preprocess).map_batches(generate).map(postprocess)

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm"
                        else real_find_spec(name, *a))
    monkeypatch.setattr(ray.data.llm, "build_processor", build_processor)
    monkeypatch.setattr(ray.data.llm, "vLLMEngineProcessorConfig", lambda **kw: kw)
    for gather in ("take_all", "materialize", "to_pandas", "take", "to_arrow_refs"):  # nothing comes to the driver
        monkeypatch.setattr(ray.data.Dataset, gather, lambda *a, **k: pytest.fail("the driver gathered rows"))

    corpus = tmp_path / "corpus.jsonl"
    rows = [("a", "Revenue rose 12% in 2019 to $4.1 billion."), ("b", "Net income fell in 2018 after a charge."),
            ("c", LONG), ("d", "Cash from operations was $900 million."), ("e", "Debt was repaid in 2020.")]
    corpus.write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in rows))
    over = [f"data.unlabeled={corpus}", "data.max_chars=100000", "annotate.engine=vllm", *LOOSE_FILTERS]
    first = run_annotation(_cfg(tiny_model_dir, tmp_path, *over, "data.max_docs=3"))
    assert first["documents_labelled"] == 3 and first["label_rows"] == 6
    sent = [p for f in engine_log.iterdir() for p in json.loads(f.read_text())]
    assert len(sent) == 6 and sent.count(SKIPPED_PROMPT) == 2 and max(len(p) for p in sent) < len(LONG)

    for f in engine_log.iterdir():
        f.unlink()
    (tmp_path / "annotate" / "_SUCCESS").unlink(missing_ok=True)
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for f in (tmp_path / "annotate" / "labels").glob("*.parquet"):  # b's second label was in flight at a kill
        t = pq.read_table(f)
        keep = pc.invert(pc.and_(pc.equal(t[DOC_ID], "b"), pc.equal(t["label_index"], 1)))
        pq.write_table(t.filter(keep), f)
    second = run_annotation(_cfg(tiny_model_dir, tmp_path, *over))
    assert second["resumed_from_documents"] == 3 and second["labelled_this_run"] == 2
    sent = [p for f in engine_log.iterdir() for p in json.loads(f.read_text())]
    assert len(sent) == 5 and SKIPPED_PROMPT not in sent  # b's missing label, then d and e, two kinds each
    table = read_labels(tmp_path / "annotate" / "labels").to_pylist()
    assert sorted((r[DOC_ID], r["label_index"]) for r in table) == [(d, k) for d in "abcde" for k in (0, 1)]
    status = {(r[DOC_ID], r["label_index"]): r["status"] for r in table}
    assert status[("c", 0)] == status[("c", 1)] == "too_long" and status[("a", 0)] == "ok"
    assert all('"engine": "vllm"' in r["generation"] for r in table)


def test_hf_path_streams_blocks_to_label_files_and_resumes_by_file(tiny_model_dir, tmp_path, ray_local,
                                                                   monkeypatch):
    """The HF path is one stream from the corpus files to the label files: nothing is gathered, sorted as a
    whole or materialized (each read block is sorted as it streams), every document is labelled once, one
    label file per actor call, and a resume after losing label files redoes exactly their documents."""
    import json

    import pyarrow.parquet as pq
    import ray.data

    from skr_ray.annotate.labelstore import journal_counts, read_labels
    from skr_ray.tasks.ir.annotate import run_annotation

    for barrier in ("take_all", "materialize", "to_pandas", "take", "to_arrow_refs", "sort", "random_shuffle"):
        # each of these holds the whole corpus at once somewhere (repartition by rows per block streams)
        monkeypatch.setattr(ray.data.Dataset, barrier, lambda *a, **k: pytest.fail(f"the pipeline used {barrier}"))
    corpus = tmp_path / "corpus.jsonl"
    words = ["revenue", "income", "cash", "debt", "margin", "growth", "assets", "equity"]
    docs = {f"p{i:03d}": " ".join(words[(i + j) % 8] for j in range(3 + i % 9)) for i in range(48)}
    corpus.write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in docs.items()))
    over = [f"data.unlabeled={corpus}", "annotate.batch_size=4", "annotate.rows_per_file_batches=2",
            "annotate.num_actors=2", "annotate.max_new_tokens=4", "annotate.label_kinds=[question]", *LOOSE_FILTERS]
    art = Artifacts(str(tmp_path))
    first = run_annotation(_cfg(tiny_model_dir, tmp_path, *over))
    assert first["documents_labelled"] == 48 and first["label_rows"] == 48
    files = sorted(art.labels_dir.glob("*.parquet"))
    assert len(files) == 48 // 8  # one file per block of batch_size x rows_per_file_batches rows
    assert sum(journal_counts(art.annotate_journal).values()) == 48  # each document generated once

    lost = files[:2]
    lost_ids = {d for f in lost for d in pq.read_table(f)[DOC_ID].to_pylist()}
    for f in lost:
        f.unlink()
    (art.annotate_dir / "_SUCCESS").unlink(missing_ok=True)
    second = run_annotation(_cfg(tiny_model_dir, tmp_path, *over))
    assert second["resumed_from_documents"] == 48 - len(lost_ids) and second["labelled_this_run"] == len(lost_ids)
    table = read_labels(art.labels_dir)
    assert sorted(table[DOC_ID].to_pylist()) == sorted(docs)  # each document exactly once
    redone = journal_counts(art.annotate_journal)
    assert {d for d, n in redone.items() if n > 1} == lost_ids  # exactly the lost files' documents, once more


def test_labelled_requests_splits_whole_and_part_labelled_documents(tmp_path):
    """The vLLM resume: documents with every label index are skipped by id; the pairs of a part-labelled one
    are the only Python objects; a row written twice (a redone call) counts once."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from skr_ray.annotate.labelstore import labelled_requests

    labels = tmp_path / "labels"
    assert [len(x) for x in labelled_requests(labels, 2)] == [0, 0, 0]
    labels.mkdir()
    for name, pairs in (("1", [("a", 0), ("a", 1), ("b", 0), ("c", 1)]), ("2", [("c", 0), ("b", 0)])):
        pq.write_table(pa.table({DOC_ID: [d for d, _ in pairs], "label_index": [k for _, k in pairs]}),
                       labels / f"{name}.parquet")
    ids, full, partial = labelled_requests(labels, 2)
    assert ids.to_pylist() == ["a", "b", "c"] and full.to_pylist() == ["a", "c"] and partial == {("b", 0)}
