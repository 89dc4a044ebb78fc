"""A tiny randomly initialised Gemma-3 vision-language model, built from config (no downloads).

`skr tiny-vlm` writes one into the cache so a user without a vision-language model can watch OD (and the
image paths of IR and AD) run end to end. Its weights are random: every number it produces is plumbing,
not quality, and the model folder carries a marker (``models.backbone.RANDOM_MODEL_MARKER``) that reports
print. Tests and benchmarks build the same model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from skr_ray.models.backbone import RANDOM_MODEL_MARKER

VLM_SPECIALS = ["<unk>", "<pad>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                "<end_of_image>", "<image_soft_token>"]
VLM_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<start_of_image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


VLM_SIZES = {
    # SigLIP tower 32x32 px -> 4 image tokens, 2 text layers of width 32: unit and integration tests.
    "tiny": dict(text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, head_dim=8),
                 vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                             image_size=32, patch_size=8), image_tokens=4),
    # SigLIP-B/16 at 224 px -> 64 image tokens, a SmolLM2-135M-sized text tower: compute of a small real VLM
    # (random weights) for latency benchmarks.
    "small": dict(text=dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                            num_key_value_heads=3, head_dim=64),
                  vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                              image_size=224, patch_size=14), image_tokens=64),
}


def build_tiny_vlm(target: Path, seed: int = 0, size: str = "tiny") -> Path:
    """Write a small random Gemma-3 vision-language model (``VLM_SIZES``) with its processor to ``target``:
    the real Gemma-3 code paths, no downloads."""
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    from skr_ray.tasks.ad.prompts import _ASK_IMAGE
    from skr_ray.tasks.od.prompts import DEFAULT_OBJECT, QUESTIONS

    from skr_ray.models.vision import IMAGE_EMBED_PROMPTS
    from skr_ray.tasks.ir.prompts import IMAGE_ASK

    text = " ".join([*QUESTIONS.values(), DEFAULT_OBJECT, _ASK_IMAGE, IMAGE_ASK, *IMAGE_EMBED_PROMPTS.values(),
                     "user model what share of adults say the economy is good"])
    words = set(re.findall(r"\w+|[^\w\s]", text.lower()))
    words.update("0123456789")
    vocab = {tok: i for i, tok in enumerate(VLM_SPECIALS + sorted(words))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(r"<[a-z_]+>", behavior="isolated"), pre_tokenizers.Whitespace()]
    )
    core.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<end_of_turn>", bos_token="<bos>",
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"},
    )
    tokenizer.add_tokens(VLM_SPECIALS, special_tokens=True)  # already in the vocab: marks them unsplittable
    tokenizer.chat_template = VLM_CHAT_TEMPLATE
    dims = VLM_SIZES[size]
    side = dims["vision"]["image_size"]
    processor = Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": side, "width": side}),
                                tokenizer=tokenizer, chat_template=VLM_CHAT_TEMPLATE,
                                image_seq_length=dims["image_tokens"])
    ids = {k: vocab[k] for k in ("<pad>", "<end_of_turn>", "<bos>")}
    config = Gemma3Config(
        text_config=dict(vocab_size=len(vocab), max_position_embeddings=4096, sliding_window=512,
                         pad_token_id=ids["<pad>"], eos_token_id=ids["<end_of_turn>"], bos_token_id=ids["<bos>"],
                         **dims["text"]),
        vision_config=dims["vision"],
        mm_tokens_per_image=dims["image_tokens"], boi_token_index=vocab["<start_of_image>"], eoi_token_index=vocab["<end_of_image>"],
        image_token_index=vocab["<image_soft_token>"], pad_token_id=ids["<pad>"],
        eos_token_id=ids["<end_of_turn>"], bos_token_id=ids["<bos>"],
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    with torch.no_grad():  # initialised to zeros: the page would not reach the language model at all
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.2)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    processor.save_pretrained(target)
    (target / RANDOM_MODEL_MARKER).write_text(json.dumps(
        {"family": "gemma3", "size": size, "seed": seed, "random_weights": True,
         "note": "randomly initialised; its outputs test the code paths and say nothing about quality"}, indent=2))
    return target


def default_tiny_vlm_dir() -> Path:
    from skr_ray.config import ModelConfig
    from skr_ray.models.backbone import cache_root

    return cache_root(ModelConfig()) / "tiny-gemma3-vlm"


def tiny_vlm_main(out: str | None, size: str = "tiny") -> int:
    """`skr tiny-vlm [--out DIR]`: build the tiny random Gemma-3 (once) and print its folder."""
    target = Path(out).expanduser() if out else default_tiny_vlm_dir()
    if not (target / RANDOM_MODEL_MARKER).is_file():
        build_tiny_vlm(target, size=size)
    print(target)
    return 0
