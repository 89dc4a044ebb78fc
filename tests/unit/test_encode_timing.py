"""Evaluation times each system by the model time of its own texts: not the actor start or the model load of its
Ray Data pass (paid once per pass, whatever the pass holds), and per job inside a pass of several."""

import time

import numpy as np
import pytest

SEEN = ["revenue grew in 2019", "the tax rate fell", "leases run for seven years"]
TEXTS = SEEN + ["a text training never saw"]


@pytest.fixture()
def setup(tiny_model_dir, tmp_path):
    """A top-layer checkpoint and the frozen-prefix states its training stored for SEEN (e5v format)."""
    from skr_ray.config import load_config
    from skr_ray.models.backbone import load_backbone, model_id
    from skr_ray.models.encoding import decoder_body, format_for_embedding
    from skr_ray.models.prefix_cache import FrozenPrefixCache, cache_directory, prefix_cache_root
    from tests.tiny import make_checkpoint

    overrides = ("train.lora_layers=1",)
    ckpt = make_checkpoint(tiny_model_dir, tmp_path / "ckpt", overrides=overrides)
    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", f"output_dir={tmp_path / 'run'}",
                             "evaluate.max_length=64", "evaluate.num_actors=1", "train.cache_frozen_prefix=true",
                             *overrides])
    base, tokenizer = load_backbone(cfg.model)
    split = len(decoder_body(base).layers) - 1
    stored = format_for_embedding(tokenizer, SEEN, 64, "e5v")
    FrozenPrefixCache(split, cache_directory(prefix_cache_root(cfg), model_id(cfg.model), split, cfg.model.dtype)) \
        .states(decoder_body(base), stored["input_ids"], stored["attention_mask"])
    return cfg, ckpt


def test_rows_carry_their_model_seconds_and_whether_they_were_cached(setup):
    from skr_ray.evaluate.encode import TextEncoder
    from skr_ray.models.prefix_cache import prefix_cache_root

    cfg, ckpt = setup
    batch = {"id": np.array(list("abcd")), "text": np.array(TEXTS), "job": np.array([0, 1, 1, 0])}
    both = TextEncoder(cfg.to_dict(), [{"name": "e5v", "prompt": "e5v"}, {"name": "base"}], 1, prefix_cache_root(cfg))
    out = both(batch)
    assert out["seconds"].shape == (4,) and (out["seconds"] > 0).all()
    assert out["seconds"][0] == out["seconds"][3] and out["seconds"][1] == out["seconds"][2]  # shared within a job
    assert list(out["cached"]) == [True, False, False, False]  # e5v rows training saw; plain rows never are
    skr = TextEncoder(cfg.to_dict(), {"name": "skr", "checkpoint": str(ckpt), "prompt": "e5v"}, 1,
                      prefix_cache_root(cfg))
    out = skr({"id": np.array(list("abcd")), "text": np.array(TEXTS)})
    assert list(out["cached"]) == [True, True, True, False] and (out["seconds"] > 0).all()


def test_a_pass_times_each_job_by_its_own_rows_without_the_model_load(setup, tmp_path, ray_local, monkeypatch):
    import ray.data

    from skr_ray.evaluate.encode import TIMING, EncodeJob, EncoderSpec, encode_many

    for gather in ("take_all", "materialize", "to_pandas", "take"):  # blocks come back as arrays, not row dicts
        monkeypatch.setattr(ray.data.Dataset, gather, lambda *a, **k: pytest.fail("the driver gathered rows"))
    cfg, ckpt = setup
    texts = {f"t{i}": t for i, t in enumerate(TEXTS)}
    jobs = [EncodeJob(texts, EncoderSpec("base"), "eval"), EncodeJob(texts, EncoderSpec("e5v", prompt="e5v"), "eval"),
            EncodeJob(texts, EncoderSpec("skr", checkpoint=str(ckpt), prompt="e5v"), "eval")]
    start = time.perf_counter()
    results = encode_many(jobs, cfg, tmp_path / "cache")  # two passes: base weights (two jobs), SKR's
    wall = time.perf_counter() - start
    seconds = [r[2] for r in results]
    assert all(s > 0 for s in seconds)
    assert sum(seconds) < 0.5 * wall  # two actor starts and model loads: not the model's time
    files = {f.name.split("-")[0]: np.load(f) for f in (tmp_path / "cache").glob("*.npz")}
    assert {k: int(f["cached"]) for k, f in files.items()} == {"base": 0, "e5v": 3, "skr": 3}
    assert all(TIMING in f for f in files.values())

    # a file from before (a pass's wall time shared by text count, no TIMING mark) is encoded again
    old = next((tmp_path / "cache").glob("skr-*.npz"))
    data = dict(np.load(old))
    np.savez(old, id=data["id"], embedding=data["embedding"], seconds=123.0)
    again = encode_many(jobs, cfg, tmp_path / "cache")
    assert again[2][2] != 123.0 and TIMING in np.load(old)
    assert [r[2] for r in again[:2]] == seconds[:2]  # the others are read back as they were
    np.testing.assert_allclose(again[2][0], results[2][0], atol=1e-5)
