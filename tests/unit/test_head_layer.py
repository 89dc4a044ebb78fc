"""ad.head_layer: the head reads an inner decoder layer and the layers above it never run."""

import pytest
import torch

from skr_ray.config import ConfigError, ModelConfig, load_config
from skr_ray.models.backbone import keep_layers, load_backbone
from skr_ray.models.encoding import decoder_body, final_token_states, tokenize_for_embedding


def _batch(tok):
    return tokenize_for_embedding(tok, ["revenue rose in 2019", "the board met"], 16)


def test_a_cut_decoder_outputs_the_final_norm_of_that_layers_states(tiny_model_dir):
    full, tok = load_backbone(ModelConfig(name_or_path=str(tiny_model_dir)))
    cut, _ = load_backbone(ModelConfig(name_or_path=str(tiny_model_dir)), layers=1)
    assert len(decoder_body(full).layers) == 2 and len(decoder_body(cut).layers) == 1
    assert cut.config.num_hidden_layers == 1
    batch = _batch(tok)
    with torch.no_grad():
        inner = full(**batch, output_hidden_states=True).hidden_states[1]  # after layer 1, before the norm
        want = decoder_body(full).norm(inner)[:, -1]  # left padding: the final token is the last column
        got = final_token_states(cut, batch)
        assert not torch.allclose(got, final_token_states(full, batch))
    torch.testing.assert_close(got, want)


def test_keep_layers_refuses_more_layers_than_the_model_has(tiny_model_dir):
    model, _ = load_backbone(ModelConfig(name_or_path=str(tiny_model_dir)))
    assert keep_layers(model, 2) is model and len(decoder_body(model).layers) == 2  # its depth: unchanged
    with pytest.raises(ValueError, match="cannot keep 3 decoder layers of a model with 2"):
        keep_layers(model, 3)


def test_head_layer_config_checks():
    assert load_config(None, ["task=ad", "ad.head_layer=14"]).ad.head_layer == 14
    with pytest.raises(ConfigError, match="ad.head_layer must be >= 0"):
        load_config(None, ["task=ad", "ad.head_layer=-1"])
    with pytest.raises(ConfigError, match="text pairs only"):
        load_config(None, ["task=ad", "ad.head_layer=14", "data.modality=image"])
    with pytest.raises(ConfigError, match=r"train.lora_layers \(6\) must be below ad.head_layer \(6\)"):
        load_config(None, ["task=ad", "ad.head_layer=6", "train.lora_layers=6", "train.cache_frozen_prefix=true"])


def _checkpoint(path, tiny_model_dir, layers: int, objective: str = "head"):
    from skr_ray.models.checkpoint import ADAPTER, add_lora, save_head
    from skr_ray.tasks import get_task

    cfg = load_config(None, ["task=ad", f"model.name_or_path={tiny_model_dir}", "train.lora_layers=1",
                             f"ad.head_layer={layers}"])
    model, tok = load_backbone(cfg.model, layers=layers)
    peft_model = add_lora(model, cfg.train)
    with torch.no_grad():  # a non-trivial adapter
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    peft_model.eval()
    info = {"task": "ad", "objective": objective, "hidden_size": model.config.hidden_size,
            "options": {"hidden": 8, "input_norm": "none"}, "layers": layers}
    head = get_task("ad").make_head(info["hidden_size"], info["options"]).eval()
    peft_model.save_pretrained(path / ADAPTER)
    save_head(path, head, info)
    (path / "config.yaml").write_text(cfg.to_yaml())
    with torch.no_grad():
        return head(final_token_states(peft_model, _batch(tok)))


def test_a_checkpoint_that_reads_an_inner_layer_loads_cut_and_gives_the_same_scores(tmp_path, tiny_model_dir):
    from skr_ray.models.checkpoint import load_skr_model

    before = _checkpoint(tmp_path, tiny_model_dir, layers=1)
    loaded = load_skr_model(tmp_path)
    assert len(decoder_body(loaded.model).layers) == 1
    names = [n for n, _ in loaded.model.named_parameters() if "lora_A" in n]
    assert names and all(".layers.0." in n for n in names)  # LoRA on the top layer of the one kept
    with torch.no_grad():
        after = loaded.head(final_token_states(loaded.model, _batch(loaded.tokenizer)))
    torch.testing.assert_close(before, after)


def test_serving_gives_a_head_that_reads_an_inner_layer_a_backbone_of_its_own(tmp_path, tiny_model_dir):
    from skr_ray.serve.registry import build_registry

    for name, layers in (("cut", 1), ("whole", 0), ("whole_too", 0)):
        (tmp_path / name).mkdir()
        _checkpoint(tmp_path / name, tiny_model_dir, layers)
    entries, bases = build_registry({n: str(tmp_path / n) for n in ("cut", "whole", "whole_too")})
    assert len(bases) == 2
    assert entries["whole"].backbone == entries["whole_too"].backbone != entries["cut"].backbone


def test_head_only_states_of_another_layer_are_cached_apart(tmp_path):
    from skr_ray.tasks.ad.scoring import score_cache_path

    rows = [{"pair_id": "p1", "query": "q", "passage": "d"}]
    whole, cut = (load_config(None, ["task=ad", f"ad.head_layer={n}"]) for n in (0, 14))
    assert score_cache_path(rows, whole, "states", None, tmp_path, "s") != score_cache_path(rows, cut, "states", None,
                                                                                               tmp_path, "s")
    assert score_cache_path(rows, whole, "judge", None, tmp_path, "s") == score_cache_path(rows, cut, "judge", None,
                                                                                              tmp_path, "s")


def test_a_served_cut_head_scores_as_its_checkpoint_does(tmp_path, tiny_model_dir):
    from skr_ray.models.checkpoint import load_skr_model
    from skr_ray.serve.backbone import AdapterBank
    from skr_ray.serve.registry import build_registry
    from skr_ray.tasks.ad.prompts import render_prompts, shared_prompt_prefix

    _checkpoint(tmp_path, tiny_model_dir, layers=1)
    entries, bases = build_registry({"cut": str(tmp_path)})
    bank = AdapterBank(bases[entries["cut"].backbone], layers=1)
    bank.load(entries["cut"])
    pairs = [("when did revenue rise", "revenue rose in 2019"), ("who met", "the board met on monday")]
    served = torch.tensor(bank.classify("cut", pairs))
    skr = load_skr_model(tmp_path)
    rows = skr.tokenizer(render_prompts(skr.tokenizer, [q for q, _ in pairs], [p for _, p in pairs], 192),
                         add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        direct = torch.sigmoid(skr.head(shared_prompt_prefix(skr.model, skr.tokenizer).states(rows).float()))
    torch.testing.assert_close(served, direct)


def test_a_killed_training_run_resumes_only_under_its_own_head_settings(tmp_path):
    """Resuming with another ``ad.head_layer`` names the setting instead of failing inside DeepSpeed."""
    import json

    from skr_ray.artifacts import StageInputError
    from skr_ray.train.checkpoints import latest_ray_checkpoint
    from skr_ray.train.trainer import check_resume

    ckpt = tmp_path / "train" / "ray" / "reexpression" / "checkpoint_000001"
    (ckpt / "deepspeed").mkdir(parents=True)
    (ckpt / "deepspeed" / "latest").write_text("state")
    (ckpt / "state.json").write_text(json.dumps({"epoch": 1, "history": []}))
    info = {"task": "ad", "objective": "head", "layers": 14, "hidden_size": 64, "threshold": 0.31}
    (ckpt / "head.json").write_text(json.dumps(info))
    found = latest_ray_checkpoint(tmp_path / "train" / "ray")
    assert found == ckpt
    check_resume(found, {**info, "threshold": 0.5}, tmp_path / "train")  # a refitted threshold is no change
    with pytest.raises(StageInputError, match=r"layers: 14 in the checkpoint, 0 now.*delete .*train"):
        check_resume(found, {**info, "layers": 0}, tmp_path / "train")
