"""The frozen-prefix cache gives the same states and gradients as a full forward with top-K LoRA."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from skr_ray.config import ConfigError, TrainConfig
from skr_ray.models.checkpoint import add_lora
from skr_ray.models.encoding import decoder_body, final_token_states, pad_left
from skr_ray.models.prefix_cache import FrozenPrefixCache, check_supported


@pytest.fixture()
def lora_model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0)
    model = add_lora(LlamaForCausalLM(config), TrainConfig(lora_layers=2, lora_dropout=0.0))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapters matter
            torch.nn.init.normal_(p, std=0.5)
    return model


ROWS = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17]]


def test_cached_states_equal_the_full_forward(lora_model):
    body = decoder_body(lora_model)
    check_supported(body, 2)
    cache = FrozenPrefixCache(split=2)
    batch = pad_left(ROWS, 0)
    full = final_token_states(lora_model, batch)  # (3, 32)
    cached = cache.final_token_states(body, batch)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-4)
    assert len(cache) == 3 and cache.misses == 3 and cache.hits == 0
    assert len(body.layers) == 4 and not isinstance(body.norm, torch.nn.Identity)  # window restored

    # Reused under other padding (row 1 alone, row 0 with a longer new row): RoPE is shift-invariant.
    other = pad_left([ROWS[1], [20, 21, 22, 23, 24, 25, 26, 27]], 0)
    again = cache.final_token_states(body, other)
    torch.testing.assert_close(again, final_token_states(lora_model, other), atol=1e-5, rtol=1e-4)
    assert cache.hits == 1 and cache.misses == 4


def test_cached_gradients_equal_the_full_forward(lora_model):
    body = decoder_body(lora_model)
    batch = pad_left(ROWS, 0)
    lora = {n: p for n, p in lora_model.named_parameters() if p.requires_grad}
    assert lora and all(".layers.2." in n or ".layers.3." in n for n in lora)  # top 2 layers only

    final_token_states(lora_model, batch).pow(2).sum().backward()
    full = {n: p.grad.clone() for n, p in lora.items()}
    lora_model.zero_grad()
    cache = FrozenPrefixCache(split=2)
    cache.final_token_states(body, batch)  # first pass fills the cache
    lora_model.zero_grad()
    cache.final_token_states(body, batch).pow(2).sum().backward()  # second pass reads it
    for n, p in lora.items():
        torch.testing.assert_close(p.grad, full[n], atol=1e-5, rtol=1e-4)
    assert all(not t.requires_grad for t in cache.store.values())


def test_config_requires_top_layer_lora():
    with pytest.raises(ConfigError, match="lora_layers"):
        TrainConfig(cache_frozen_prefix=True)
    with pytest.raises(ConfigError, match="zero_stage"):
        TrainConfig(cache_frozen_prefix=True, lora_layers=2, zero_stage=3)
    assert TrainConfig(cache_frozen_prefix=True, lora_layers=2).lora_layers == 2


def test_disk_cache_is_reloaded_by_a_new_run_and_skips_unreadable_shards(lora_model, tmp_path):
    from skr_ray.models.prefix_cache import cache_directory

    body = decoder_body(lora_model)
    batch = pad_left(ROWS, 0)
    folder = cache_directory(tmp_path, "tiny-llama", 2, "float32")
    assert folder != cache_directory(tmp_path, "tiny-llama", 3, "float32")  # another split never mixes in
    first = FrozenPrefixCache(split=2, directory=folder)
    expected = first.final_token_states(body, batch)
    assert first.misses == 3 and len(list(folder.glob("shard-*.pt"))) == 1
    (folder / "shard-broken.pt").write_bytes(b"cut short by a kill")

    resumed = FrozenPrefixCache(split=2, directory=folder)  # a resumed run: nothing recomputed
    assert resumed.loaded == 3
    torch.testing.assert_close(resumed.final_token_states(body, batch), expected)
    assert resumed.misses == 0 and resumed.hits == 3


@pytest.mark.parametrize("pooling", ["last_token", "echo"])
def test_evaluation_encodes_over_the_states_training_stored(tiny_model_dir, tmp_path, pooling):
    """A dev split over the unlabeled corpus: the encoder reads training's frozen-prefix shards and runs only
    the top layers, with the same embeddings as the full forward."""
    import numpy as np

    from skr_ray.config import load_config
    from skr_ray.evaluate.encode import TextEncoder
    from skr_ray.models.backbone import load_backbone, model_id
    from skr_ray.models.encoding import format_for_embedding
    from skr_ray.models.prefix_cache import cache_directory, frozen_split, prefix_cache_root
    from tests.tiny import make_checkpoint

    overrides = ("train.lora_layers=1",)
    ckpt = make_checkpoint(tiny_model_dir, tmp_path / "ckpt", overrides=overrides)
    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", f"output_dir={tmp_path / 'run'}",
                             "evaluate.max_length=64", "train.cache_frozen_prefix=true", *overrides])
    base, tokenizer = load_backbone(cfg.model)
    n_layers = len(decoder_body(base).layers)
    assert frozen_split(ckpt, n_layers) == n_layers - 1
    seen = ["revenue grew in 2019", "the tax rate fell", "leases run for seven years"]
    folder = cache_directory(prefix_cache_root(cfg), model_id(cfg.model), n_layers - 1, cfg.model.dtype)
    stored = format_for_embedding(tokenizer, seen, 64, "e5v", pooling)
    FrozenPrefixCache(n_layers - 1, folder).states(  # what training stored (base lower layers)
        decoder_body(base), stored["input_ids"], stored["attention_mask"])

    spec = {"name": "skr", "checkpoint": str(ckpt), "prompt": "e5v", "pooling": pooling}
    batch = {"id": np.array(["a", "b", "c", "d"]), "text": np.array(seen + ["a text training never saw"])}
    full = TextEncoder(cfg.to_dict(), spec, 1)(batch)["embedding"]
    cached_encoder = TextEncoder(cfg.to_dict(), spec, 1, prefix_cache_root(cfg))
    assert cached_encoder.prefix is not None and cached_encoder.prefix.loaded == 3
    cached = cached_encoder(batch)["embedding"]
    np.testing.assert_allclose(cached, full, atol=1e-4)
    if pooling != "last_token":  # the encoder pools as the checkpoint was trained
        plain = TextEncoder(cfg.to_dict(), {**spec, "pooling": "last_token"}, 1)(batch)["embedding"]
        assert not np.allclose(plain, full, atol=1e-3)
    assert cached_encoder.prefix.hits == 3 and cached_encoder.prefix.misses == 1
    assert len(list(folder.glob("shard-*.pt"))) == 1  # evaluation reads, never writes

    # the untouched base model (e5v, base, head_only systems) reads the same lower-layer states
    e5v = {"name": "e5v", "prompt": "e5v", "pooling": pooling}
    base_cached = TextEncoder(cfg.to_dict(), e5v, 1, prefix_cache_root(cfg))
    assert base_cached.prefix is not None
    np.testing.assert_allclose(base_cached(batch)["embedding"], TextEncoder(cfg.to_dict(), e5v, 1)(batch)["embedding"],
                               atol=1e-4)
    assert base_cached.prefix.hits == 3
    # one encoder (one model load) serves several specs with the same weights, each row as its job says
    plain = {"name": "base", "prompt": "plain", "pooling": pooling}
    both = TextEncoder(cfg.to_dict(), [e5v, plain], 1)
    mixed = both({**batch, "job": np.array([0, 1, 1, 0])})
    alone = {0: TextEncoder(cfg.to_dict(), e5v, 1)(batch)["embedding"],
             1: TextEncoder(cfg.to_dict(), plain, 1)(batch)["embedding"]}
    for row, job in enumerate([0, 1, 1, 0]):
        np.testing.assert_allclose(mixed["embedding"][row], alone[job][row], atol=1e-4)
    assert list(mixed["job"]) == [0, 1, 1, 0]
    with pytest.raises(ValueError, match="same weights"):
        TextEncoder(cfg.to_dict(), [spec, plain], 1)


def test_cached_mean_pooling_equals_the_full_forward(lora_model):
    body = decoder_body(lora_model)
    batch = pad_left(ROWS, 0)
    batch["pool_mask"] = batch["attention_mask"].clone()
    batch["pool_mask"][:, -1] = 0  # any subset of the attended tokens
    full = final_token_states(lora_model, batch)
    torch.testing.assert_close(FrozenPrefixCache(split=2).final_token_states(body, batch), full, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(full, final_token_states(lora_model, pad_left(ROWS, 0)), atol=1e-3)
