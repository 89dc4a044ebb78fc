"""Image IR and image AD end to end on a real local Ray cluster with a tiny random Gemma-3 on synthetic pages:
the model writes a question per image -> contrastive (question text, image) training -> retrieval over images
(with BM25 over tesseract's text as the reference) -> (question, image) answerability on the same questions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from skr_ray.artifacts import Artifacts
from skr_ray.config import load_config
from tests.checks import ranx_metrics
from tests.tiny import LOOSE_FILTERS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory):
    from tests.pages import make_pages
    from tests.tiny import image_beir

    root = tmp_path_factory.mktemp("image-sets")
    pages = make_pages(root / "pages", n=6, seed=3)
    return pages, image_beir(pages, root / "beir")


@pytest.fixture(scope="module")
def ir_run(ray_local, tiny_vlm_dir, image_sets, tmp_path_factory):
    from skr_ray.cli import run_pipeline

    pages, beir = image_sets
    out = tmp_path_factory.mktemp("ir-image")
    cfg = load_config(None, ["task=ir", "data.modality=image", f"model.name_or_path={tiny_vlm_dir}",
                             f"output_dir={out}", f"data.unlabeled={pages}", f"data.eval={beir}",
                             "annotate.max_new_tokens=8", "train.epochs=1", "train.batch_size=2",
                             "train.num_workers=1", "evaluate.batch_size=4", "evaluate.head_only_epochs=2",
                             "evaluate.systems=[base,e5v,head_only,skr,bm25]", *LOOSE_FILTERS])
    return cfg, run_pipeline(cfg), Artifacts(out)


def test_image_ir_questions_training_and_retrieval(ir_run, image_sets):
    from skr_ray.annotate.labelstore import read_labels
    from skr_ray.models.checkpoint import load_skr_model
    from skr_ray.models.encoding import embed_texts
    from skr_ray.models.vision import embed_images
    from skr_ray.pages import load_page, PageRef
    from skr_ray.tasks.ir.prompts import IMAGE_PROMPT_VERSION

    cfg, results, art = ir_run
    pages, beir = image_sets
    table = read_labels(art.labels_dir).to_pylist()
    assert sorted(r["doc_id"] for r in table) == [f"page-{i:02d}" for i in range(6)]
    assert all(r["prompt_version"] == IMAGE_PROMPT_VERSION and r["text"].endswith(".png") for r in table)
    assert results["train"]["train_pairs"] + results["train"]["val_pairs"] == sum(r["status"] == "ok" for r in table)
    head = json.loads((art.checkpoint_dir / "head.json").read_text())
    assert head["documents"] == "image" and head["prompt"] == "e5v"
    metrics = results["evaluate"]
    assert set(metrics) == {"base", "e5v", "head_only", "skr", "bm25"}
    for name, row in metrics.items():  # every figure recomputed by ranx from the system's TREC run file
        got = ranx_metrics(art, name, [1, 3, 5, 10])
        assert {k: row[k] for k in got} == pytest.approx(got, abs=1e-9), name
    # the questions name their chart's caption, which tesseract reads: BM25 over OCR text finds most charts
    assert metrics["bm25"]["mrr"] > 0.6
    ocr = json.loads((art.embedding_cache / "ocr.json").read_text())
    assert "revenue" in ocr["page-00"].lower()
    # the SKR system embeds images and question texts with the checkpoint's own forward pass
    skr = load_skr_model(art.checkpoint_dir)
    img = embed_images(skr.model, skr.tokenizer, [load_page(PageRef("p", str(beir / "images" / "page-01.png")))],
                       skr.head, "cpu", "e5v")
    txt = embed_texts(skr.model, skr.tokenizer, ["what does the table show"], 64, skr.head, "cpu", "e5v")
    assert img.shape == txt.shape == (1, 32)
    assert torch.allclose(img.norm(dim=-1), torch.ones(1), atol=1e-4)
    cached = [np.load(p) for p in art.embedding_cache.glob("skr-eval-*.npz")]
    assert len(cached) == 1
    row = list(cached[0]["id"]).index("d:page-01")
    np.testing.assert_allclose(cached[0]["embedding"][row], img[0].numpy(), atol=1e-4)


@pytest.mark.long  # AD end to end is test_ad_pipeline; image encoding and training are this module's other tests
def test_image_ad_from_the_same_questions(ir_run, image_sets, tiny_vlm_dir, tmp_path):
    from skr_ray.cli import run_pipeline
    from skr_ray.models.checkpoint import load_skr_model
    from skr_ray.models.vision import image_batch, image_final_states
    from skr_ray.pages import PageRef, load_page
    from skr_ray.tasks.ad.annotate import read_judgements
    from skr_ray.tasks.ad.prompts import IMAGE_PROMPT_VERSION, render_image_prompts

    _, _, ir_art = ir_run
    pages, beir = image_sets
    cfg = load_config(None, ["task=ad", "data.modality=image", f"model.name_or_path={tiny_vlm_dir}",
                             f"output_dir={tmp_path / 'ad'}", f"data.unlabeled={pages}", f"data.eval={beir}",
                             f"ad.questions_from={ir_art.root}", "ad.label_source=source", "ad.hard_negatives=1",
                             "ad.easy_negatives=1", "ad.head_hidden=64", "ad.probe_epochs=3", "ad.pos_weight=0",
                             "train.epochs=1", "train.batch_size=4", "train.num_workers=1", "train.val_fraction=0.2",
                             "evaluate.batch_size=6", "evaluate.systems=[base,head_only,skr]",
                             "annotate.drop_duplicates=false"])
    results = run_pipeline(cfg)
    art = Artifacts(cfg.output_dir)
    rows = read_judgements(art.labels_dir)
    questions = results["annotate"]["questions"]
    assert len(rows) == 3 * questions and results["annotate"]["answers_by_pair_kind"]["own"] == {"yes": questions, "no": 0}
    assert all(r["passage"].endswith(".png") for r in rows)
    assert (art.annotate_dir / "ocr.json").is_file()  # hard negatives were chosen by the images' OCR text
    head = json.loads((art.checkpoint_dir / "head.json").read_text())
    assert head["prompt"] == IMAGE_PROMPT_VERSION  # Serve reads it as an image classifier
    metrics = results["evaluate"]
    assert set(metrics) == {"base", "head_only", "skr"} and all(m["auroc"] is not None for m in metrics.values())
    # the SKR score of a pair is the checkpoint's forward pass on (image, question prompt)
    scores = json.loads(next(art.embedding_cache.glob("skr-*.json")).read_text())
    pair = json.loads((beir / "matching.jsonl").read_text().splitlines()[0])
    from skr_ray.tasks.ad.pairs import _pair_id

    got = next(s["score"] for s in scores if s["pair_id"] == _pair_id(pair["query_id"], pair["doc_id"]))
    skr = load_skr_model(art.checkpoint_dir)
    batch = image_batch(skr.tokenizer, [load_page(PageRef("p", str(beir / pair["image"])))],
                        render_image_prompts(skr.tokenizer, [pair["query"]]))
    with torch.no_grad():
        want = torch.sigmoid(skr.head(image_final_states(skr.model, batch))).item()
    assert got == pytest.approx(want, abs=1e-4)


def test_image_ir_is_served_on_embeddings(ir_run, image_sets):
    """/v1/embeddings with images embeds documents, with input embeds questions: both as in evaluation. The
    run's page images indexed by `skr index` are searched by a text question on /v1/search."""
    import base64

    import requests

    from skr_ray.tasks.ir.index import run_index
    from tests.tiny import serve_locally

    cfg, _, art = ir_run
    pages, beir = image_sets
    summary = run_index(cfg)  # data.unlabeled: the 6 page images
    assert summary["vectors"] == 6 and summary["dim"] == 32
    with serve_locally({"charts": str(art.root)}, "skr-img-ir") as base:
        found = requests.post(f"{base}/v1/search", json={"model": "charts", "query": "what does the table show",
                                                         "top_k": 6}, timeout=120)
        url = f"{base}/v1/embeddings"
        images = [base64.b64encode((beir / "images" / f"page-0{i}.png").read_bytes()).decode() for i in (1, 2)]
        r = requests.post(url, json={"model": "charts", "image": images}, timeout=180)
        assert r.status_code == 200, r.text
        got = np.asarray([d["embedding"] for d in r.json()["data"]])
        text = requests.post(url, json={"model": "charts", "input": "what does the table show"}, timeout=60).json()
        both = requests.post(url, json={"model": "charts", "input": "x", "image": images[0]}, timeout=60)
        bad = requests.post(url, json={"model": "charts", "image": "bm90IGFuIGltYWdl"}, timeout=60)
    cached = np.load(next(art.embedding_cache.glob("skr-eval-*.npz")))
    ids = list(cached["id"])
    want = cached["embedding"][[ids.index("d:page-01"), ids.index("d:page-02")]]
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert len(text["data"][0]["embedding"]) == 32
    hits = found.json()["data"]  # every page, ranked by cosine with the question as evaluation encodes them
    query = np.asarray(text["data"][0]["embedding"])
    pages_emb = {i[2:]: e for i, e in zip(ids, cached["embedding"]) if i.startswith("d:")}
    assert sorted(h["id"] for h in hits) == sorted(pages_emb) and all(h["text"].endswith(".png") for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    for h in hits:
        assert h["score"] == pytest.approx(float(pages_emb[h["id"]] @ query), abs=1e-3), h["id"]
    assert both.status_code == 400 and both.json()["error"]["code"] == "wrong_input"
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "undecodable_image"
