"""`skr plan`: parameter counts, memory estimates against measured peaks of tiny models on CPU, presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skr_ray.config import PACKAGED_MODELS, TrainConfig, load_config
from skr_ray.memory import PeakMemory
from skr_ray.plan import (CARDS, Setting, activation_bytes, annotation_estimate, card_shape, lora_params,
                          shape_from_config, training_estimate)

PRESETS = Path(__file__).resolve().parents[2] / "configs" / "presets"


def _families():
    from transformers import (Gemma3TextConfig, LlamaConfig, MistralConfig, Phi3Config, Qwen2Config)

    common = dict(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2)
    return {"llama": LlamaConfig(**common), "mistral": MistralConfig(**common), "qwen2": Qwen2Config(**common),
            "phi3": Phi3Config(**common, pad_token_id=0),
            "gemma3_text": Gemma3TextConfig(**common, head_dim=16, sliding_window=16)}


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "phi3", "gemma3_text"])
def test_parameter_counts_match_the_instantiated_models(family):
    from transformers import AutoModelForCausalLM

    config = _families()[family]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    real = sum(p.numel() for p in model.parameters())
    shape = shape_from_config(config.to_dict())
    assert shape.params() == pytest.approx(real, rel=0.01)


def test_shape_cards_have_the_published_sizes():
    published = {"gemma-3-4b-it": 4.30e9, "gemma-3-12b-it": 12.19e9, "gemma-3-27b-it": 27.43e9,
                 "qwen2-vl-7b-instruct": 8.29e9, "llava-v1.6-mistral-7b": 7.57e9,
                 "phi-3-vision-128k-instruct": 4.15e9, "llama-3.1-8b-instruct": 8.03e9,
                 "mistral-7b-instruct-v0.2": 7.24e9, "qwen2-7b-instruct": 7.62e9, "phi-3-mini-128k-instruct": 3.82e9,
                 "smollm2-135m-instruct": 0.1345e9, "gemma-3-270m": 0.268e9}
    assert set(published) == set(CARDS)
    for name, size in published.items():
        assert card_shape(name).params() == pytest.approx(size, rel=0.02), name


def _measured_training_peak(batch: int, seq: int, checkpointing: bool) -> tuple[int, object, object]:
    from transformers import LlamaConfig, LlamaForCausalLM

    from skr_ray.models.checkpoint import add_lora
    from skr_ray.models.encoding import final_token_states

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=1000, hidden_size=128, intermediate_size=344, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(config)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = add_lora(model, TrainConfig(lora_dropout=0.0))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(0, 1000, (batch, seq))
    mask = torch.ones_like(ids)
    mask[0, : seq // 2] = 0  # left padding, as in every training batch
    peak = PeakMemory()
    peak.count(*model.parameters())
    with peak:
        for _ in range(2):  # the second step runs with the optimizer states allocated
            states = final_token_states(model, {"input_ids": ids, "attention_mask": mask})
            states.pow(2).sum().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return peak.peak, config, model


@pytest.mark.parametrize("batch,seq,checkpointing", [(8, 64, False), (16, 128, False), (16, 128, True)])
def test_training_estimate_is_within_a_quarter_of_the_measured_peak(batch, seq, checkpointing):
    measured, config, model = _measured_training_peak(batch, seq, checkpointing)
    shape = shape_from_config(config.to_dict(), "tiny-llama")
    cfg = load_config(None, ["model.dtype=float32", f"train.gradient_checkpointing={checkpointing}"])
    trainable, layers = lora_params(shape, cfg)
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = shape.params() * 4
    states = trainable * (4 + 4 + 8)  # fp32 param, grad, Adam moments
    estimate = frozen + states + activation_bytes(shape.text, batch * seq, layers, 4, checkpointing)
    assert 0.9 * measured <= estimate <= 1.25 * measured, (estimate / measured, measured)


def test_annotation_estimate_covers_the_measured_generation_peak(tiny_model_dir):
    from skr_ray.annotate.generation import GenerationEngine
    from skr_ray.models.backbone import load_backbone
    from skr_ray.plan import PROMPT_TOKENS

    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", "annotate.batch_size=8",
                             "annotate.max_input_tokens=64", "annotate.max_new_tokens=16"])
    model, tok = load_backbone(cfg.model)
    engine = GenerationEngine(model, tok, 64, 16)
    words = "revenue rose in the year as the group sold more units and the tax rate fell".split()
    prompts = [" ".join(words * 20)[: 3 * 64 * 5]] * 8  # long prompts: truncated by tokens below
    prompts = [tok.decode(tok(p)["input_ids"][: 64 + 3 * PROMPT_TOKENS]) for p in prompts]
    peak = PeakMemory()
    peak.count(*model.parameters())
    with peak:
        engine.generate(prompts)
    shape = shape_from_config(model.config.to_dict())
    estimate = annotation_estimate(shape, cfg, gpu=False)
    assert 0.8 * peak.peak <= estimate["per_gpu"] <= 3.0 * peak.peak, (estimate["per_gpu"], peak.peak)


def _plan(*files: str, overrides: tuple[str, ...] = ()):
    from skr_ray.plan import plan_training

    cfg = load_config([PRESETS / f for f in files], list(overrides))
    return cfg, plan_training(cfg)


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESETS.glob("*.yaml")
                                          if not p.stem.startswith("cluster") and p.stem not in PACKAGED_MODELS))
def test_every_preset_fits_the_cluster_it_is_written_for(preset):
    from skr_ray.plan import plan_annotation

    for overlay in ("cluster-1x80gb.yaml", "cluster-8x80gb.yaml", "cluster-2x8x80gb.yaml"):
        cfg, training = _plan(f"{preset}.yaml", overlay)
        assert cfg.model.dtype == "bfloat16" and cfg.train.lora_layers == 0  # LoRA on all layers
        assert cfg.model.card == preset and cfg.model.name_or_path.startswith("/models/")
        assert training["configured"].fits, (preset, overlay, training["configured"].per_gpu)
        assert plan_annotation(cfg)["configured"]["fits"]
        trainable, layers = lora_params(card_shape(preset), cfg)
        assert trainable > 0 and layers == card_shape(preset).text.layers


def test_the_packaged_gemma_preset_plans_from_its_card_before_any_download():
    from skr_ray.plan import plan_annotation, plan_training

    cfg = load_config([PRESETS / "gemma-3-270m.yaml"], ["model.name_or_path=gemma-3-270m"])
    assert cfg.model.card == "gemma-3-270m" and cfg.annotate.prompt_style == "fewshot"
    assert plan_training(cfg)["configured"].fits and plan_annotation(cfg)["configured"]["fits"]


def test_a_plan_that_does_not_fit_is_refused_with_the_numbers_and_a_fix(capsys):
    from skr_ray.cli import main

    overrides = ["train.zero_stage=1", "train.offload_optimizer=false", "train.offload_params=false",
                 "train.gradient_checkpointing=false", "train.batch_size=16", "cluster.gpu_memory_gb=40"]
    cfg, training = _plan("gemma-3-27b-it.yaml", "cluster-1x80gb.yaml", overrides=tuple(overrides))
    assert not training["configured"].fits and training["recommended"].fits
    best = training["recommended"].setting
    assert best.zero_stage == 3 and best.offload_params
    assert best.micro_batch * best.gradient_accumulation_steps == 16 * 8  # examples per optimizer step kept
    code = main(["plan", "-c", str(PRESETS / "gemma-3-27b-it.yaml"), "-c", str(PRESETS / "cluster-1x80gb.yaml"),
                 *overrides])
    out = capsys.readouterr().out
    assert code == 1 and "DOES NOT FIT" in out and "-> recommended: train.zero_stage=3" in out
    assert "frozen weights" in out and "GiB" in out
    # ZeRO-3 spreads the frozen weights over the GPUs of the 8-GPU overlay
    one = training_estimate(card_shape("gemma-3-27b-it"), cfg, Setting(3, False, False, True, 2, 8))
    cfg8 = load_config([PRESETS / "gemma-3-27b-it.yaml", PRESETS / "cluster-8x80gb.yaml"])
    eight = training_estimate(card_shape("gemma-3-27b-it"), cfg8, Setting(3, False, False, True, 2, 8))
    assert eight.components["frozen weights"] < one.components["frozen weights"] / 4
