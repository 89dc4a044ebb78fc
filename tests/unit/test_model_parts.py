"""Encoding, pooling, loss, generation, LoRA checkpoints and the head-only baseline on a tiny model."""

import numpy as np
import pytest
import torch

from skr_ray.annotate.generation import GenerationEngine
from skr_ray.config import ModelConfig, TrainConfig
from skr_ray.models.backbone import load_backbone
from skr_ray.models.common import last_token_pool
from skr_ray.models.encoding import embed_texts, format_for_embedding, length_groups, tokenize_for_embedding
from skr_ray.models.heads import EmbeddingHead
from skr_ray.tasks.ir.probe import apply_head, train_projection_head
from skr_ray.tasks.ir.loss import contrastive_loss, info_nce
from skr_ray.train.deepspeed_config import build_deepspeed_config, torch_optimizer


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_backbone(ModelConfig(name_or_path=str(tiny_model_dir)))


def test_tokenize_left_pads_and_ends_in_eos(tiny):
    _, tok = tiny
    batch = tokenize_for_embedding(tok, ["revenue rose", "the group revenue rose in 2023"], max_length=4)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == (2, 4)
    assert (ids[:, -1] == tok.eos_token_id).all()  # EOS survives truncation
    assert mask[0].tolist() == [0, 1, 1, 1] and mask[1].tolist() == [1, 1, 1, 1]


def test_e5v_format_truncates_text_then_wraps_in_the_prompt(tiny):
    _, tok = tiny
    long = "the group revenue rose in 2023 " * 20
    batch = format_for_embedding(tok, ["revenue rose", long], max_length=8, prompt="e5v")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    rows = [tok.decode(r[m.bool()]) for r, m in zip(ids, mask)]
    assert all("summarize the above in one word" in r for r in rows)  # instruction survives truncation
    assert rows[0].rstrip().endswith("assistant")  # last token = start of the model's answer
    assert int(mask[1].sum()) - int(mask[0].sum()) == 6  # long text cut to 8 tokens ('revenue rose' = 2)
    plain = format_for_embedding(tok, ["revenue rose"], max_length=8, prompt="plain")
    assert plain["input_ids"][0, -1] == tok.eos_token_id
    with pytest.raises(ValueError, match="unknown embedding prompt"):
        format_for_embedding(tok, ["x"], 8, prompt="nope")


def test_last_token_pool_left_and_right_padding():
    hidden = torch.arange(2 * 3 * 1, dtype=torch.float).view(2, 3, 1)
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    right = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert last_token_pool(hidden, left).squeeze(-1).tolist() == [2.0, 5.0]
    assert last_token_pool(hidden, right).squeeze(-1).tolist() == [1.0, 5.0]


def test_embedding_does_not_depend_on_batch_padding(tiny):
    model, tok = tiny
    alone = embed_texts(model, tok, ["revenue rose"], 32)
    batched = embed_texts(model, tok, ["revenue rose", "the group revenue rose sharply in 2023 and 2024"], 32)
    assert alone.shape == (1, model.config.hidden_size)
    torch.testing.assert_close(alone[0], batched[0], atol=1e-4, rtol=1e-4)


def test_length_groups_cut_padding_exactly():
    # short and long rows apart once a pass's overhead is less than the padding it saves
    assert length_groups([5, 100, 6, 98, 50], overhead=64) == [[0, 2], [4, 3, 1]]
    assert length_groups([5, 100, 6, 98, 50], overhead=0) == [[0], [2], [4], [3], [1]]  # free passes: no padding
    assert length_groups([10, 10, 10, 10], overhead=0) == [[0, 1, 2, 3]]  # no padding: one pass
    assert length_groups([5, 100], overhead=1000) == [[0, 1]]  # passes dearer than padding: one pass
    assert sorted(i for g in length_groups(list(range(1, 17)), 8) for i in g) == list(range(16))


def test_embedding_grouped_by_length_matches_one_padded_pass(tiny):
    model, tok = tiny
    texts = ["revenue rose", "the group revenue rose sharply in 2023 and 2024 " * 6, "debt fell",
             "cash and cash equivalents at the end of the year " * 3]
    one = embed_texts(model, tok, texts, 96)
    grouped = embed_texts(model, tok, texts, 96, group_by_length=True)
    assert len(length_groups(format_for_embedding(tok, texts, 96)["attention_mask"].sum(1).tolist())) > 1
    torch.testing.assert_close(grouped, one, atol=1e-4, rtol=1e-4)  # same rows, same order
    few = ["the group revenue rose sharply in 2023", "debt fell", "revenue rose"]  # one group: rows stay in order
    assert len(length_groups(format_for_embedding(tok, few, 96)["attention_mask"].sum(1).tolist())) == 1
    torch.testing.assert_close(embed_texts(model, tok, few, 96, group_by_length=True), embed_texts(model, tok, few, 96),
                               atol=1e-4, rtol=1e-4)


def test_info_nce_prefers_aligned_pairs():
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    aligned = info_nce(x, x, 0.05).item()
    shuffled = info_nce(x, x.roll(1, dims=0), 0.05).item()
    assert aligned < 0.1 < shuffled
    # without torch.distributed the gathered loss equals the local one
    assert contrastive_loss(x, x, 0.05).item() == pytest.approx(aligned)


def test_generation_batched_equals_single(tiny):
    model, tok = tiny
    engine = GenerationEngine(model, tok, max_input_tokens=32, max_new_tokens=6)
    prompts = [engine.render([{"role": "user", "content": t}]) for t in ["revenue rose", "the debt fell sharply in 2023"]]
    batched = engine.generate(prompts)
    single = [engine.generate([p])[0] for p in prompts]
    assert batched == single and len(batched) == 2
    sampled = engine.generate(prompts, num_return_sequences=3, temperature=0.8, seed=1)
    assert [len(s) for s in sampled] == [3, 3]


def test_generation_from_the_cached_opening_equals_the_plain_batch(tiny):
    from skr_ray.tasks.ir.prompts import build_kind_messages

    model, tok = tiny
    engine = GenerationEngine(model, tok, max_input_tokens=32, max_new_tokens=8)
    texts = ["revenue rose", "the debt fell sharply in 2023", "tax", "leases run for seven years in total",
             "the group revenue rose", "cash fell", "staff numbers grew by ten percent in 2024", "debt"]
    for kind in ("question", "keywords"):
        messages = [build_kind_messages(t, kind) for t in texts]
        prompts = [engine.render(m) for m in messages]
        opening = engine.render_opening(messages[0])
        assert all(p.startswith(opening) for p in prompts) and len(opening) > 100
        plain = engine.generate(prompts)
        cached = engine.generate(prompts, opening=opening)
        assert cached == plain and any(c[0] for c in cached)
        assert engine.generate(prompts[2:3], opening=opening) == plain[2:3]  # the cache is copied, not consumed
    assert len(engine._openings) == 2 and engine.opening_fallbacks == 0
    sampled = engine.generate(prompts[:2], num_return_sequences=3, temperature=0.8, seed=1, opening=opening)
    assert [len(s) for s in sampled] == [3, 3]
    assert engine.generate(["no shared start"], opening=opening) == engine.generate(["no shared start"])
    assert engine.opening_fallbacks == 1  # a prompt without the opening falls back to the plain batch


def test_truncate_by_tokens(tiny):
    _, tok = tiny
    engine = GenerationEngine(None, tok, max_input_tokens=3, max_new_tokens=1)
    assert len(tok(engine.truncate("the group revenue rose sharply"), add_special_tokens=False)["input_ids"]) == 3


def test_lora_checkpoint_round_trip(tmp_path, tiny_model_dir):
    from skr_ray.config import load_config
    from skr_ray.models.checkpoint import ADAPTER, add_lora, load_skr_model, save_head

    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}"])
    model, tok = load_backbone(cfg.model)
    peft_model = add_lora(model, cfg.train)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert 0 < trainable < sum(p.numel() for p in peft_model.parameters())
    names = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert all(any(m in n for m in ("q_proj", "k_proj", "v_proj", "o_proj")) for n in names)
    with torch.no_grad():  # make the adapter non-trivial
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    peft_model.eval()  # no LoRA dropout when comparing outputs
    head = EmbeddingHead(model.config.hidden_size)
    before = embed_texts(peft_model, tok, ["revenue rose"], 16, head)
    peft_model.save_pretrained(tmp_path / ADAPTER)
    save_head(tmp_path, head, {"task": "ir", "hidden_size": model.config.hidden_size, "options": {}})
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    loaded = load_skr_model(tmp_path)
    after = embed_texts(loaded.model, loaded.tokenizer, ["revenue rose"], 16, loaded.head)
    torch.testing.assert_close(before, after)
    merged = embed_texts(loaded.model.merge_and_unload(), loaded.tokenizer, ["revenue rose"], 16, loaded.head)
    torch.testing.assert_close(before, merged, atol=1e-5, rtol=1e-4)


def test_lora_on_last_layers_only(tiny_model_dir):
    from skr_ray.models.checkpoint import add_lora

    model, _ = load_backbone(ModelConfig(name_or_path=str(tiny_model_dir)))
    peft_model = add_lora(model, TrainConfig(lora_layers=1))
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert names and all(".layers.1." in n for n in names)


def test_head_only_learns_a_projection():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(64, 8)).astype(np.float32)
    mix = rng.normal(size=(8, 8)).astype(np.float32)
    p = q @ mix  # passages live in a linearly transformed space
    head = train_projection_head(q, p, epochs=60, batch_size=16, temperature=0.1, lr=1e-2)
    qe, pe = apply_head(head, q), apply_head(head, p)
    acc_after = float(np.mean((qe @ pe.T).argmax(1) == np.arange(64)))
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    pn = p / np.linalg.norm(p, axis=1, keepdims=True)
    acc_before = float(np.mean((qn @ pn.T).argmax(1) == np.arange(64)))
    assert acc_after > acc_before + 0.2


def test_deepspeed_config():
    ds = build_deepspeed_config(TrainConfig(batch_size=4, zero_stage=2, lr=3e-4), world_size=2, use_gpu=False, bf16=True)
    assert ds["train_batch_size"] == 8 and ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["zero_optimization"]["stage"] == 2
    assert "optimizer" not in ds  # on CPU torch's AdamW: nothing to JIT-compile
    opt = torch_optimizer(TrainConfig(lr=3e-4), False, [torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["lr"] == 3e-4
    assert ds["bf16"]["enabled"] is False  # no bf16 on CPU
    big = build_deepspeed_config(TrainConfig(batch_size=2, zero_stage=3, offload_optimizer=True, offload_params=True,
                                             gradient_accumulation_steps=8), world_size=16, use_gpu=True, bf16=True)
    assert big["train_batch_size"] == 2 * 16 * 8 and big["gradient_accumulation_steps"] == 8
    assert big["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert big["zero_optimization"]["offload_param"]["device"] == "cpu" and big["bf16"]["enabled"] is True
    assert big["optimizer"]["params"]["lr"] == TrainConfig().lr  # on GPUs DeepSpeed builds its fused Adam
    assert torch_optimizer(TrainConfig(), True, []) is None
    from skr_ray.config import ConfigError

    with pytest.raises(ConfigError, match="offload_params"):
        TrainConfig(zero_stage=2, offload_params=True)


def test_mean_and_echo_pooling_choose_the_states_they_average(tiny):
    from skr_ray.models.encoding import ECHO_AGAIN, ECHO_OPEN, pool_states

    hidden = torch.arange(2 * 4 * 1, dtype=torch.float).view(2, 4, 1)  # row 0: 0..3, row 1: 4..7
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    assert pool_states(hidden, mask, mask).squeeze(-1).tolist() == [2.0, 5.5]  # padding never averaged
    assert pool_states(hidden, mask, torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1]])).squeeze(-1).tolist() == [2.5, 7.0]
    assert pool_states(hidden, mask).squeeze(-1).tolist() == [3.0, 7.0]  # no pool mask: last token

    model, tok = tiny
    texts = ["revenue rose", "the group revenue rose sharply in 2023"]
    mean = format_for_embedding(tok, texts, 32, prompt="e5v", pooling="mean")
    assert torch.equal(mean["pool_mask"], mean["attention_mask"])
    echo = format_for_embedding(tok, texts, 32, prompt="e5v", pooling="echo")  # echo has its own format
    ids = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    for row, m, pool, text in zip(echo["input_ids"], echo["attention_mask"], echo["pool_mask"], texts):
        assert row[m.bool()].tolist() == ids(ECHO_OPEN) + ids(text) + ids(ECHO_AGAIN) + ids(text)
        assert row[pool.bool()].tolist() == ids(text)  # only the second copy is pooled
    with pytest.raises(ValueError, match="unknown pooling"):
        format_for_embedding(tok, texts, 8, pooling="max")
    # pooled embeddings do not depend on batch padding either
    for pooling in ("mean", "echo"):
        alone = embed_texts(model, tok, texts[:1], 32, pooling=pooling)
        batched = embed_texts(model, tok, texts, 32, pooling=pooling)
        torch.testing.assert_close(alone[0], batched[0], atol=1e-4, rtol=1e-4)
        assert not torch.allclose(alone[0], embed_texts(model, tok, texts[:1], 32)[0], atol=1e-3)
