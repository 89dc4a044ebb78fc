"""Scale benchmark on one GPU: random-initialised real-size backbones (no weights needed), the planned settings.

For Gemma-3 4B, 12B and 27B text towers (shape cards in ``skr_ray.plan``): LoRA re-expression steps through
DeepSpeed with the ZeRO stage / offload / checkpointing / micro-batch that ``skr plan`` chooses for this GPU, and
reports samples/s, tokens/s, peak memory against the plan's estimate, and MFU. Annotation: HF ``generate``
tokens/s for a batch of prompts (and vLLM's, where it is installed). Prints the device name with every row.

MFU convention: LoRA on a frozen backbone does no weight-gradient matmuls for the frozen weights, so a token costs
2N (forward) + 2N (input gradients) FLOPs, + 2N more with gradient checkpointing (the recomputed forward); MFU is
those FLOPs per second over the GPU's dense bf16 peak.

    python benchmarks/gpu_train.py [--sizes 4b,12b,27b] [--steps 20] [--seq 512]
    python benchmarks/gpu_train.py --sizes tiny --steps 3      # the same code path on CPU, for a smoke check

The device machines have no Ray or DeepSpeed preinstalled: ``--install`` pip-installs the pinned DeepSpeed first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}
SIZES = {"4b": "gemma-3-4b-it", "12b": "gemma-3-12b-it", "27b": "gemma-3-27b-it"}


def peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def gemma_config(card: str, tiny: bool = False):
    from transformers import Gemma3TextConfig

    from skr_ray.plan import CARDS

    t = dict(CARDS[card]["text"])
    if tiny:
        t.update(hidden=64, layers=2, intermediate=128, heads=4, kv_heads=2, head_dim=16, vocab=512)
    return Gemma3TextConfig(hidden_size=t["hidden"], num_hidden_layers=t["layers"], intermediate_size=t["intermediate"],
                            num_attention_heads=t["heads"], num_key_value_heads=t["kv_heads"], head_dim=t["head_dim"],
                            vocab_size=t["vocab"], max_position_embeddings=8192)


def run_size(size: str, steps: int, seq: int, device: str) -> dict:
    import deepspeed
    import torch
    from transformers import AutoModelForCausalLM

    from skr_ray.config import load_config
    from skr_ray.models.checkpoint import add_lora
    from skr_ray.models.encoding import final_token_states
    from skr_ray.models.heads import EmbeddingHead
    from skr_ray.plan import ModelShape, TowerShape, plan_training, shape_from_config
    from skr_ray.tasks.ir.loss import info_nce
    from skr_ray.train.deepspeed_config import build_deepspeed_config, torch_optimizer

    card = SIZES.get(size, "gemma-3-4b-it")
    tiny = size == "tiny"
    gpu = device == "cuda"
    preset = os.path.join(os.path.dirname(__file__), "..", "configs", "presets", f"{card}.yaml")
    memory_gb = torch.cuda.get_device_properties(0).total_memory / 1024**3 if gpu else 8.0
    cfg = load_config(preset, [f"cluster.gpu_memory_gb={memory_gb:.0f}", "cluster.gpus_per_node=1",
                               f"train.max_length={seq}", f"train.max_query_length={seq // 8}",
                               *([] if gpu else ["model.dtype=float32"])])
    config = gemma_config(card, tiny)
    shape = shape_from_config(config.to_dict(), card)
    shape = ModelShape(card, TowerShape(**{**shape.text.__dict__}), source="random init")
    plan = plan_training(cfg, shape, gpu=gpu)
    best = plan["recommended"]
    if best is None:
        return {"size": size, "error": "the plan finds nothing that fits this GPU"}
    s = best.setting
    cfg.train.zero_stage, cfg.train.offload_optimizer, cfg.train.offload_params = (
        s.zero_stage, s.offload_optimizer, s.offload_params)
    cfg.train.gradient_checkpointing, cfg.train.batch_size = s.gradient_checkpointing, s.micro_batch
    cfg.train.gradient_accumulation_steps = s.gradient_accumulation_steps
    dtype = torch.bfloat16 if gpu else torch.float32
    t0 = time.perf_counter()
    ds_config = build_deepspeed_config(cfg.train, 1, gpu, bf16=gpu)
    if s.zero_stage == 3:
        with deepspeed.zero.Init(config_dict_or_path=ds_config, dtype=dtype):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if s.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = add_lora(model, cfg.train)
    head = EmbeddingHead(config.hidden_size)

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone, self.head = model, head

        def forward(self, ids, mask):
            return self.head(final_token_states(self.backbone, {"input_ids": ids, "attention_mask": mask}))

    trainable = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=Wrapped(), config=ds_config, model_parameters=trainable,
                                      optimizer=torch_optimizer(cfg.train, gpu, trainable))
    setup_s = time.perf_counter() - t0
    b, q_len = s.micro_batch, seq // 8
    g = torch.Generator().manual_seed(0)
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(steps + 1):
        q = torch.randint(0, config.vocab_size, (b, q_len), generator=g).to(engine.device)
        d = torch.randint(0, config.vocab_size, (b, seq), generator=g).to(engine.device)
        if gpu:
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = info_nce(engine(q, torch.ones_like(q)), engine(d, torch.ones_like(d)), 0.05)
        engine.backward(loss)
        engine.step()
        if gpu:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step_s = sum(times[1:]) / steps
    tokens = b * (seq + q_len)
    n = shape.params()
    flops_per_token = (6 if s.gradient_checkpointing else 4) * n
    achieved = flops_per_token * tokens / step_s / 1e12
    name = torch.cuda.get_device_name(0) if gpu else "cpu"
    peak = peak_tflops(name)
    measured = torch.cuda.max_memory_allocated() if gpu else 0
    return {"size": size, "device": name, "params_b": round(n / 1e9, 2), "setting": s.describe(),
            "samples_per_s": round(b / step_s, 2), "tokens_per_s": round(tokens / step_s),
            "achieved_tflops": round(achieved, 1), "mfu": round(achieved / peak, 3) if peak else None,
            "peak_memory_gib": round(measured / 1024**3, 1), "planned_gib": round(best.per_gpu / 1024**3, 1),
            "setup_s": round(setup_s, 1)}


def generation(size: str, batch: int, prompt: int, new: int, device: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    card = SIZES.get(size, "gemma-3-4b-it")
    config = gemma_config(card, size == "tiny")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    ids = torch.randint(0, config.vocab_size, (batch, prompt), device=device)
    with torch.inference_mode():
        model.generate(ids[:, :8], max_new_tokens=2, do_sample=False)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                             do_sample=False)
        if device == "cuda":
            torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    made = (out.shape[1] - prompt) * batch
    return {"size": size, "engine": "hf", "batch": batch, "prompt_tokens": prompt,
            "new_tokens_per_s": round(made / seconds, 1), "seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="4b,12b,27b")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--gen-batch", type=int, default=16)
    parser.add_argument("--install", action="store_true", help="pip install the pinned DeepSpeed first")
    args = parser.parse_args()
    if args.install:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "deepspeed==0.19.8", "ninja"], check=True)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if device == "cuda" else "cpu")
    for var, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29517"), ("RANK", "0"), ("LOCAL_RANK", "0"),
                       ("WORLD_SIZE", "1")):
        os.environ.setdefault(var, value)
    print(f"cores={os.cpu_count()} device={torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu'}")
    for size in args.sizes.split(","):
        print(json.dumps(run_size(size, args.steps, args.seq, device)), flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()
        if size != "27b":  # 27B bf16 weights alone fill most of one 80 GB GPU: generation measured up to 12B
            print(json.dumps(generation(size, args.gen_batch, 256, 64, device)), flush=True)


if __name__ == "__main__":
    main()
