"""`skr plan`: GPU memory for a run before it starts, and the ZeRO / offload / micro-batch that fits.

Counted per GPU, in bytes, from the model's architecture (its ``config.json``, or a shape card of the paper's
backbones when the weights are not downloaded yet) and the run's config:

* **annotation**: one model replica per GPU (weights, KV cache of a batch of prompt + new tokens, the widest
  transient of a prefill layer, last-position logits);
* **training**: frozen weights (partitioned by ZeRO-3, or offloaded to CPU), trainable LoRA + head states
  (DeepSpeed's own ZeRO estimators for the trainable parameters), activations of one micro-batch through
  the layers that backpropagate (with gradient checkpointing: each layer's input plus one layer in full).

Activation coefficients were fitted to measured peaks of LoRA training steps of tiny decoders on CPU
(``skr_ray.memory.PeakMemory``; re-checked in ``tests/unit/test_plan.py``): per token and backpropagating
layer 9 hidden-width and 4.5 MLP-width values (least squares over 12 shapes gave 9.0 and 3.8), plus 4
hidden-width values per token once; with gradient checkpointing 1.5 hidden-width values per layer (its
input, as checkpointing intends) plus 1.2 layers in full (the recomputed layer and its gradients). Attention is assumed to keep no sequence-squared scores (SDPA/flash on GPUs; on CPU the
measured peaks did not grow with them either). A fixed 1 GiB per GPU and 10 % on top cover the CUDA
context and allocator fragmentation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from skr_ray.config import ConfigError, SKRConfig

GiB = 1024**3
CONTEXT_BYTES = 1 * GiB
FRAGMENTATION = 1.10
ACT_H, ACT_I = 9.0, 4.5  # values kept per token and backpropagating layer, x hidden / MLP width
ACT_ONCE_H = 4.0  # per token once (embeddings, final states and their gradients), x hidden width
CKPT_H, CKPT_FULL = 1.5, 1.2  # with gradient checkpointing: saved inputs per layer (x hidden), full layers
PROMPT_TOKENS = 64  # chat template and instruction around a text input


@dataclass
class TowerShape:
    """One transformer stack: widths, depth and attention layout."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int = 0
    tied: bool = True
    qkv_bias: bool = False
    mlp_matrices: int = 3  # gated MLPs (gate, up, down); 2 for the ViT MLP (fc1, fc2)
    fused_qkv: bool = False  # Phi-3 (qkv_proj, gate_up_proj)

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_params(self) -> int:
        h, q, kv = self.hidden, self.q_width, self.kv_width
        attn = h * q + 2 * h * kv + q * h + (q + 2 * kv if self.qkv_bias else 0)
        return attn + self.mlp_matrices * h * self.intermediate + 2 * h

    def params(self) -> int:
        embed = self.vocab * self.hidden * (1 if self.tied else 2)
        return embed + self.layers * self.layer_params() + self.hidden

    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear a LoRA target name can match."""
        h, q, kv, i = self.hidden, self.q_width, self.kv_width, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h), "out_proj": (q, h),
                "qkv_proj": (h, q + 2 * kv), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h),
                "gate_up_proj": (h, 2 * i), "fc1": (h, i), "fc2": (i, h)}


@dataclass
class ModelShape:
    name: str
    text: TowerShape
    vision: TowerShape | None = None
    image_tokens: int = 0
    """Language-model tokens one image (page) becomes."""
    vision_tokens: int = 0
    """Vision-tower tokens of one image (patches of every tile)."""
    vision_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    """Linear names inside the vision tower (LoRA target names that also match there)."""
    projector: int = 0
    source: str = ""

    def params(self) -> int:
        return self.text.params() + (self.vision.params() if self.vision else 0) + self.projector


# Architectures of the paper's backbones, from their published config.json files: `skr plan` works before a
# multi-GB download. A model folder with a config.json always wins over its card.
CARDS: dict[str, dict[str, Any]] = {
    "gemma-3-4b-it": {"text": dict(hidden=2560, layers=34, intermediate=10240, heads=8, kv_heads=4, head_dim=256,
                                   vocab=262208),
                      "vision": "siglip-so400m-896", "image_tokens": 256, "projector": 1152 * 2560},
    "gemma-3-12b-it": {"text": dict(hidden=3840, layers=48, intermediate=15360, heads=16, kv_heads=8, head_dim=256,
                                    vocab=262208),
                       "vision": "siglip-so400m-896", "image_tokens": 256, "projector": 1152 * 3840},
    "gemma-3-27b-it": {"text": dict(hidden=5376, layers=62, intermediate=21504, heads=32, kv_heads=16, head_dim=128,
                                    vocab=262208),
                       "vision": "siglip-so400m-896", "image_tokens": 256, "projector": 1152 * 5376},
    "qwen2-vl-7b-instruct": {"text": dict(hidden=3584, layers=28, intermediate=18944, heads=28, kv_heads=4,
                                          head_dim=128, vocab=152064, tied=False, qkv_bias=True),
                             # a page at max_pixels = 1024 x 28 x 28: 4,096 patches merged 2x2 into 1,024 tokens
                             "vision": "qwen2-vl-vit", "image_tokens": 1024, "projector": 5120 * 5120 + 5120 * 3584},
    "llava-v1.6-mistral-7b": {"text": dict(hidden=4096, layers=32, intermediate=14336, heads=32, kv_heads=8,
                                           head_dim=128, vocab=32064, tied=False),
                              # anyres: up to 4 tiles + the overview, 576 patches each, plus row newlines
                              "vision": "clip-vit-l-336", "image_tokens": 2928, "vision_images": 5,
                              "projector": 1024 * 4096 + 4096 * 4096},
    "phi-3-vision-128k-instruct": {"text": dict(hidden=3072, layers=32, intermediate=8192, heads=32, kv_heads=32,
                                                head_dim=96, vocab=32064, tied=False, fused_qkv=True),
                                   # 16 crops + the overview, 144 tokens each after the 2x2 merge, plus newlines
                                   "vision": "clip-vit-l-336", "image_tokens": 2509, "vision_images": 17,
                                   "projector": 4096 * 3072 + 3072 * 3072},
    "llama-3.1-8b-instruct": {"text": dict(hidden=4096, layers=32, intermediate=14336, heads=32, kv_heads=8,
                                           head_dim=128, vocab=128256, tied=False)},
    "mistral-7b-instruct-v0.2": {"text": dict(hidden=4096, layers=32, intermediate=14336, heads=32, kv_heads=8,
                                              head_dim=128, vocab=32000, tied=False)},
    "qwen2-7b-instruct": {"text": dict(hidden=3584, layers=28, intermediate=18944, heads=28, kv_heads=4,
                                       head_dim=128, vocab=152064, tied=False, qkv_bias=True)},
    "phi-3-mini-128k-instruct": {"text": dict(hidden=3072, layers=32, intermediate=8192, heads=32, kv_heads=32,
                                              head_dim=96, vocab=32064, tied=False, fused_qkv=True)},
    "smollm2-135m-instruct": {"text": dict(hidden=576, layers=30, intermediate=1536, heads=9, kv_heads=3,
                                           head_dim=64, vocab=49152)},
    "gemma-3-270m": {"text": dict(hidden=640, layers=18, intermediate=2048, heads=4, kv_heads=1, head_dim=256,
                                  vocab=262144)},  # the base model of the `gemma` extra (268M parameters)
}
VISION_TOWERS: dict[str, tuple[dict[str, Any], int]] = {  # tower, patches per image
    "siglip-so400m-896": (dict(hidden=1152, layers=27, intermediate=4304, heads=16, kv_heads=16, head_dim=72,
                               mlp_matrices=2, qkv_bias=True), (896 // 14) ** 2),
    "clip-vit-l-336": (dict(hidden=1024, layers=24, intermediate=4096, heads=16, kv_heads=16, head_dim=64,
                            mlp_matrices=2, qkv_bias=True), (336 // 14) ** 2 + 1),
    "qwen2-vl-vit": (dict(hidden=1280, layers=32, intermediate=5120, heads=16, kv_heads=16, head_dim=80,
                          mlp_matrices=2, qkv_bias=True), 4096),
}


def card_shape(name: str) -> ModelShape:
    key = Path(name).name.lower()
    if key not in CARDS:
        raise ConfigError(f"no config.json at {name!r} and no shape card {key!r}; known cards: {sorted(CARDS)}")
    card = CARDS[key]
    vision, tokens = None, 0
    if "vision" in card:
        tower, patches = VISION_TOWERS[card["vision"]]
        vision, tokens = TowerShape(**tower), patches * card.get("vision_images", 1)
    return ModelShape(key, TowerShape(**card["text"]), vision, card.get("image_tokens", 0), tokens,
                      projector=card.get("projector", 0), source=f"shape card {key}")


def _tower(c: dict[str, Any], vocab: int = 0, tied: bool = True) -> TowerShape:
    hidden = c.get("embed_dim") or c.get("hidden_size") or c["n_embd"]  # Qwen2-VL's vision hidden_size is its output
    heads = c.get("num_attention_heads") or c.get("num_heads") or 1
    layers = c.get("num_hidden_layers") or c.get("depth") or c.get("n_layer")
    inter = c.get("intermediate_size") or int(hidden * c.get("mlp_ratio", 4))
    vision = "patch_size" in c
    return TowerShape(hidden=hidden, layers=layers, intermediate=inter, heads=heads,
                      kv_heads=c.get("num_key_value_heads") or heads,
                      head_dim=c.get("head_dim") or hidden // heads, vocab=0 if vision else vocab, tied=tied,
                      qkv_bias=bool(c.get("attention_bias") or c.get("model_type") in ("qwen2", "qwen2_vl_text")
                                    or vision),
                      mlp_matrices=2 if vision else 3)


def shape_from_config(config: dict[str, Any], name: str = "") -> ModelShape:
    """A model's shape from its (HF) config.json dict: a decoder, or a vision-language model."""
    text_cfg = config.get("text_config") or config
    vocab = text_cfg.get("vocab_size") or config.get("vocab_size") or 0
    tied = bool(config.get("tie_word_embeddings", text_cfg.get("tie_word_embeddings", True)))
    text = _tower(text_cfg, vocab, tied)
    vision_cfg = config.get("vision_config")
    if not vision_cfg:
        return ModelShape(name, text, source="config.json")
    vision = _tower(vision_cfg)
    patch = vision_cfg.get("patch_size", 14)
    size = vision_cfg.get("image_size", 0)
    patches = (size // patch) ** 2 if size else 4096
    merge = vision_cfg.get("spatial_merge_size", 0)
    image_tokens = config.get("mm_tokens_per_image") or (patches // merge**2 if merge else patches)
    return ModelShape(name, text, vision, int(image_tokens), patches, projector=vision.hidden * text.hidden * 2,
                      source="config.json")


def model_shape(cfg: SKRConfig) -> ModelShape:
    """From the model folder's config.json (the bundled model: its dequantized folder), else ``model.card``
    or the folder name as a shape card."""
    from skr_ray.config import EMBEDDED_MODEL

    path = Path(cfg.model.name_or_path)
    if (path / "config.json").is_file():
        return shape_from_config(json.loads((path / "config.json").read_text()), path.name)
    if cfg.model.name_or_path == EMBEDDED_MODEL and not cfg.model.card:
        return card_shape("smollm2-135m-instruct")
    return card_shape(cfg.model.card or cfg.model.name_or_path)


def _dtype_bytes(cfg: SKRConfig, gpu: bool) -> int:
    return 4 if (cfg.model.dtype == "float32" or not gpu) else 2


def lora_params(shape: ModelShape, cfg: SKRConfig) -> tuple[int, int]:
    """(trainable LoRA parameters, decoder layers they sit on)."""
    t = cfg.train
    text_mods = shape.text.module_shapes()
    layers = min(t.lora_layers, shape.text.layers) if t.lora_layers else shape.text.layers
    per_layer = sum(t.lora_r * (a + b) for m, (a, b) in text_mods.items() if m in t.target_modules)
    total = per_layer * layers
    if shape.vision is not None and not t.lora_layers:  # the same target names inside the vision tower
        vis = shape.vision.module_shapes()
        total += shape.vision.layers * sum(t.lora_r * (a + b) for m, (a, b) in vis.items()
                                           if m in t.target_modules and m in shape.vision_modules)
    return total, layers


def head_params(shape: ModelShape, cfg: SKRConfig) -> int:
    import torch

    from skr_ray.tasks import get_task

    task = get_task(cfg.task)
    with torch.device("meta"):
        head = task.make_head(shape.text.hidden, task.head_options(cfg))
    return sum(p.numel() for p in head.parameters())


def _image_inputs(cfg: SKRConfig) -> bool:
    from skr_ray.tasks import get_task

    return cfg.data.modality == "image" or get_task(cfg.task).image_inputs


def tokens_per_example(shape: ModelShape, cfg: SKRConfig) -> tuple[int, int]:
    """(language-model tokens, vision-tower tokens) one training example runs through the backbone."""
    t = cfg.train
    if _image_inputs(cfg):
        image = shape.image_tokens + PROMPT_TOKENS
        if cfg.task == "ir":  # a query (text) and an image document per example
            return t.max_query_length + PROMPT_TOKENS + image * (1 + t.hard_negatives), shape.vision_tokens
        return image, shape.vision_tokens
    if cfg.task == "ad":
        return cfg.ad.max_passage_tokens + t.max_query_length + PROMPT_TOKENS, 0
    return (t.max_query_length + PROMPT_TOKENS) + (t.max_length + PROMPT_TOKENS) * (1 + t.hard_negatives), 0


def activation_bytes(tower: TowerShape, tokens: int, layers: int, dtype_bytes: int, checkpointing: bool) -> int:
    """Bytes kept for the backward pass of ``tokens`` tokens through ``layers`` layers."""
    per_layer = ACT_H * tower.hidden + ACT_I * tower.intermediate
    once = ACT_ONCE_H * tower.hidden
    if checkpointing:
        values = tokens * (layers * CKPT_H * tower.hidden + CKPT_FULL * per_layer + once)
    else:
        values = tokens * (layers * per_layer + once)
    return int(values * dtype_bytes)


@dataclass
class Setting:
    zero_stage: int
    offload_optimizer: bool
    offload_params: bool
    gradient_checkpointing: bool
    micro_batch: int
    gradient_accumulation_steps: int

    def describe(self) -> str:
        off = "+".join(x for x, on in (("optimizer", self.offload_optimizer), ("params", self.offload_params)) if on)
        return (f"ZeRO-{self.zero_stage}, offload {off or 'none'}, checkpointing "
                f"{'on' if self.gradient_checkpointing else 'off'}, micro-batch {self.micro_batch} "
                f"x accumulation {self.gradient_accumulation_steps}")


@dataclass
class TrainingEstimate:
    setting: Setting
    gpus: int
    components: dict[str, int]
    per_gpu: int
    cpu_per_node: int
    fits: bool
    notes: list[str] = field(default_factory=list)


def _trainable_states(trainable: int, largest_layer: int, stage: int, gpus: int, nodes: int, offload: bool,
                      offload_params: bool, dtype_bytes: int) -> tuple[int, int]:
    """(GPU bytes, CPU bytes per node) of the trainable parameters' model states: DeepSpeed's estimators where
    they apply (ZeRO-2 and ZeRO-3 with bf16 states), the same counting for fp32 and stages 0-1."""
    if dtype_bytes == 2 and stage in (2, 3):
        import os

        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # the estimators are arithmetic: no device probing
        per_node = max(1, gpus // max(1, nodes))
        if stage == 3:
            from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

            cpu, gpu, _ = estimate_zero3_model_states_mem_needs(trainable, largest_layer, per_node, nodes, offload,
                                                                offload_params, True, 1.0)
        else:
            from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

            cpu, gpu = estimate_zero2_model_states_mem_needs(trainable, per_node, nodes, offload, 1.0)
        return int(gpu), int(cpu)
    # param + grad in the compute dtype, fp32 master (bf16 only) + Adam moments, partitioned by stage
    params_b, grads_b, states_b = dtype_bytes, dtype_bytes, 8 + (4 if dtype_bytes == 2 else 0)
    if offload:
        return trainable * (params_b + grads_b), trainable * states_b
    share = gpus if stage >= 1 else 1
    return trainable * (params_b + grads_b) + trainable * states_b // share, 0


def training_estimate(shape: ModelShape, cfg: SKRConfig, setting: Setting, gpu: bool = True) -> TrainingEstimate:
    c = cfg.cluster
    gpus = max(1, c.nodes * c.gpus_per_node) if gpu else 1
    b = _dtype_bytes(cfg, gpu)
    trainable_lora, lora_layers = lora_params(shape, cfg)
    trainable = trainable_lora + head_params(shape, cfg)
    frozen = shape.params()
    largest_layer = max(shape.text.layer_params(), shape.text.vocab * shape.text.hidden)
    comp: dict[str, int] = {}
    if setting.offload_params:
        comp["frozen weights"] = 2 * largest_layer * b  # gathered layer by layer (and prefetched)
    elif setting.zero_stage == 3:
        comp["frozen weights"] = frozen * b // gpus + 2 * largest_layer * b
    else:
        comp["frozen weights"] = frozen * b
    gpu_states, cpu_states = _trainable_states(trainable, trainable_lora // max(1, lora_layers),
                                               setting.zero_stage, gpus, c.nodes, setting.offload_optimizer,
                                               setting.offload_params, b)
    comp["LoRA + head states"] = gpu_states
    text_tokens, vision_tokens = tokens_per_example(shape, cfg)
    comp["activations"] = activation_bytes(shape.text, setting.micro_batch * text_tokens, lora_layers, b,
                                           setting.gradient_checkpointing)
    if shape.vision is not None and vision_tokens and not cfg.train.lora_layers:
        comp["vision activations"] = activation_bytes(shape.vision, setting.micro_batch * vision_tokens,
                                                      shape.vision.layers, b, setting.gradient_checkpointing)
    comp["CUDA context"] = CONTEXT_BYTES if gpu else 0
    per_gpu = int(sum(comp.values()) * FRAGMENTATION)
    cpu = cpu_states
    if setting.offload_params:
        cpu += frozen * b * c.gpus_per_node // gpus  # this node's share of the partitioned weights
    fits = per_gpu <= c.gpu_memory_gb * GiB
    notes = []
    if c.cpu_memory_gb and cpu > c.cpu_memory_gb * GiB:
        fits = False
        notes.append(f"offloaded states need {cpu / GiB:.1f} GiB of CPU memory per node, more than "
                     f"cluster.cpu_memory_gb={c.cpu_memory_gb:g}")
    return TrainingEstimate(setting, gpus, comp, per_gpu, cpu, fits, notes)


def configured_setting(cfg: SKRConfig) -> Setting:
    t = cfg.train
    return Setting(t.zero_stage, t.offload_optimizer, t.offload_params, t.gradient_checkpointing, t.batch_size,
                   t.gradient_accumulation_steps)


def candidates(start: Setting) -> list[Setting]:
    """Cheapest first: checkpointing, then ZeRO-3, optimizer offload, parameter offload, then smaller
    micro-batches with more accumulation (same examples per optimizer step)."""
    out = [start]
    s = start
    for change in ({"gradient_checkpointing": True}, {"zero_stage": 3}, {"offload_optimizer": True},
                   {"offload_params": True}):
        if any(getattr(s, k) != v and not (k == "zero_stage" and s.zero_stage > v) for k, v in change.items()):
            s = replace(s, **change)
            out.append(s)
    while s.micro_batch > 1:
        s = replace(s, micro_batch=s.micro_batch // 2, gradient_accumulation_steps=s.gradient_accumulation_steps * 2)
        out.append(s)
    return out


def plan_training(cfg: SKRConfig, shape: ModelShape | None = None, gpu: bool = True) -> dict[str, Any]:
    shape = shape or model_shape(cfg)
    start = configured_setting(cfg)
    configured = training_estimate(shape, cfg, start, gpu)
    tried = [configured]
    recommended = configured if configured.fits else None
    if recommended is None:
        for setting in candidates(start)[1:]:
            est = training_estimate(shape, cfg, setting, gpu)
            tried.append(est)
            if est.fits:
                recommended = est
                break
    return {"configured": configured, "recommended": recommended, "tried": tried}


def annotation_estimate(shape: ModelShape, cfg: SKRConfig, batch: int | None = None, gpu: bool = True) -> dict[str, Any]:
    """One replica per GPU: the whole model, the KV cache of a batch and the widest prefill transient."""
    a = cfg.annotate
    b = _dtype_bytes(cfg, gpu)
    batch = batch or a.batch_size
    t = shape.text
    prompt = (shape.image_tokens if _image_inputs(cfg) else a.max_input_tokens)
    prompt += 3 * PROMPT_TOKENS  # system turn, worked example, instruction
    seq = prompt + a.max_new_tokens
    comp = {
        "weights": shape.params() * b,
        "KV cache": batch * seq * t.layers * 2 * t.kv_width * b,
        "prefill transient": batch * prompt * (4 * t.hidden + 3 * t.intermediate) * b,
        "logits": batch * t.vocab * 4,
        "CUDA context": CONTEXT_BYTES if gpu else 0,
    }
    if shape.vision is not None and prompt and _image_inputs(cfg):
        v = shape.vision
        comp["vision transient"] = batch * shape.vision_tokens * (4 * v.hidden + 2 * v.intermediate) * b
    per_gpu = int(sum(comp.values()) * FRAGMENTATION)
    return {"batch": batch, "components": comp, "per_gpu": per_gpu,
            "fits": per_gpu <= cfg.cluster.gpu_memory_gb * GiB}


def plan_annotation(cfg: SKRConfig, shape: ModelShape | None = None, gpu: bool = True) -> dict[str, Any]:
    shape = shape or model_shape(cfg)
    configured = annotation_estimate(shape, cfg, gpu=gpu)
    best = None
    batch = cfg.annotate.batch_size
    while batch >= 1:
        est = annotation_estimate(shape, cfg, batch, gpu)
        if est["fits"]:
            best = est
            break
        batch //= 2
    return {"configured": configured, "recommended": best}


def _gib(n: int) -> str:
    return f"{n / GiB:,.1f} GiB" if n >= GiB / 10 else f"{n / 1024**2:,.0f} MiB"


def render(cfg: SKRConfig, shape: ModelShape, annotation: dict[str, Any], training: dict[str, Any]) -> str:
    c = cfg.cluster
    trainable, layers = lora_params(shape, cfg)
    lines = [
        f"model   {shape.name} ({shape.source}): {shape.params() / 1e9:.2f} B parameters"
        + (f", vision tower {shape.vision.params() / 1e6:.0f} M, {shape.image_tokens} tokens per image"
           if shape.vision else ""),
        f"dtype   {cfg.model.dtype}; LoRA r={cfg.train.lora_r} on {', '.join(cfg.train.target_modules)} "
        f"of {layers} layers: {trainable / 1e6:.1f} M trainable",
        f"cluster {c.nodes} node(s) x {c.gpus_per_node} GPU(s) of {c.gpu_memory_gb:g} GiB"
        + (f", {c.cpu_memory_gb:g} GiB CPU memory per node" if c.cpu_memory_gb else ""),
        "",
        f"annotation (one replica per GPU, batch {annotation['configured']['batch']}):",
    ]
    for k, v in annotation["configured"]["components"].items():
        lines.append(f"  {k:<22}{_gib(v):>12}")
    lines.append(f"  {'total (+10 %)':<22}{_gib(annotation['configured']['per_gpu']):>12}  "
                 + ("fits" if annotation["configured"]["fits"] else "DOES NOT FIT"))
    rec = annotation["recommended"]
    if not annotation["configured"]["fits"]:
        lines.append(f"  -> annotate.batch_size={rec['batch']} fits ({_gib(rec['per_gpu'])})" if rec else
                     "  -> the weights alone do not fit one GPU: shard the model (tensor parallelism, "
                     "annotate.engine=vllm) or use GPUs with more memory")
    conf = training["configured"]
    lines += ["", f"training ({conf.gpus} GPU(s), one worker each; {conf.setting.describe()}):"]
    for k, v in conf.components.items():
        lines.append(f"  {k:<22}{_gib(v):>12}")
    lines.append(f"  {'total (+10 %)':<22}{_gib(conf.per_gpu):>12}  " + ("fits" if conf.fits else "DOES NOT FIT"))
    if conf.cpu_per_node:
        lines.append(f"  {'CPU memory per node':<22}{_gib(conf.cpu_per_node):>12}")
    lines += [f"  note: {n}" for n in conf.notes]
    if not conf.fits:
        for est in training["tried"][1:]:
            lines.append(f"  tried {est.setting.describe()}: {_gib(est.per_gpu)}"
                         + (" fits" if est.fits else ""))
        best = training["recommended"]
        if best:
            s = best.setting
            lines.append(f"  -> recommended: train.zero_stage={s.zero_stage} train.offload_optimizer="
                         f"{str(s.offload_optimizer).lower()} train.offload_params={str(s.offload_params).lower()} "
                         f"train.gradient_checkpointing={str(s.gradient_checkpointing).lower()} "
                         f"train.batch_size={s.micro_batch} train.gradient_accumulation_steps="
                         f"{s.gradient_accumulation_steps}")
        else:
            lines.append("  -> nothing fits on these GPUs, even at micro-batch 1 with ZeRO-3 and full offload")
    return "\n".join(lines)


def run_plan(cfg: SKRConfig, as_json: bool = False) -> tuple[str, bool]:
    """The plan's text (or JSON) and whether the configured run fits."""
    shape = model_shape(cfg)
    annotation = plan_annotation(cfg, shape)
    training = plan_training(cfg, shape)
    fits = bool(annotation["configured"]["fits"] and training["configured"].fits)
    if as_json:
        def est(e: TrainingEstimate | None) -> dict | None:
            return None if e is None else {**asdict(e), "setting": asdict(e.setting)}

        return json.dumps({"model": shape.name, "parameters": shape.params(), "annotation": annotation,
                           "training": {"configured": est(training["configured"]),
                                        "recommended": est(training["recommended"])},
                           "fits": fits}, indent=2), fits
    return render(cfg, shape, annotation, training), fits

