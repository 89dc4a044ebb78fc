"""Caches are keyed by content: a retrained checkpoint in the same folder or a changed text gets new entries."""

import os

from skr_ray.config import load_config
from skr_ray.evaluate.encode import EncoderSpec, _cache_key
from skr_ray.models.checkpoint import checkpoint_stamp


def test_embedding_cache_key_follows_checkpoint_weights_and_texts(tmp_path):
    ckpt = tmp_path / "checkpoint"
    (ckpt / "adapter").mkdir(parents=True)
    weights = ckpt / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(b"epoch-1 weights")
    (ckpt / "head.json").write_text("{}")
    cfg = load_config(None, [])
    spec = EncoderSpec("skr", checkpoint=str(ckpt), prompt="e5v")
    texts = {"d1": "revenue rose", "q1": "what rose?"}
    before = _cache_key(spec, texts, sorted(texts), cfg)
    assert _cache_key(spec, texts, sorted(texts), cfg) == before

    stamp = checkpoint_stamp(ckpt)
    weights.write_bytes(b"epoch-2 weights, retrained in place")  # same path, new model
    os.utime(weights, ns=(1, 2))
    assert checkpoint_stamp(ckpt) != stamp
    assert _cache_key(spec, texts, sorted(texts), cfg) != before
    after = _cache_key(spec, texts, sorted(texts), cfg)
    assert _cache_key(spec, {**texts, "d1": "revenue fell"}, sorted(texts), cfg) != after  # same ids, new text


def test_ad_state_cache_is_keyed_by_pair_content_not_row_position(tmp_path):
    from skr_ray.tasks.ad.scoring import score_cache_path

    cfg = load_config(None, ["task=ad"])
    # the probe numbers its rows 0..n-1: another seed draws other questions under the same ids
    seed0 = [{"pair_id": "0", "query": "What was revenue in 2019?", "passage": "Revenue was $5m."}]
    seed1 = [{"pair_id": "0", "query": "Who audits the group?", "passage": "KPMG audits the group."}]
    path = score_cache_path(seed0, cfg, "states", None, tmp_path, "selflabel_states")
    assert path == score_cache_path([dict(r) for r in seed0], cfg, "states", None, tmp_path, "selflabel_states")
    assert path != score_cache_path(seed1, cfg, "states", None, tmp_path, "selflabel_states")
