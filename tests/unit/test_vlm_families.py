"""LLaVA-1.6 (LLaVA-NeXT) and Qwen2-VL through the OD code paths, with tiny random models built from config.

LLaVA-NeXT's processor has a PIL backend in transformers 5, so it runs here on CPU end to end. Qwen2-VL's
processor checks its video processor class, which imports torchvision, and torchvision has no CPU build on the
project's CPU machines: loading it through AutoProcessor is marked ``gpu`` (skips unless CUDA and torchvision are
present), and its model side runs here on CPU behind a processor built without the video half. Phi-3-V ships
as remote code (not in transformers), so it is not covered here.

Each family: load through ``load_backbone`` (AutoModelForImageTextToText + AutoProcessor), final-token states of
a left-padded batch of different-sized pages equal each page's own, the OD asker generates on crops, and one
LoRA + box-head step on the re-expression model lowers the L1 loss.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_gpu = [pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("torchvision") is None,
    reason="needs CUDA and torchvision (Qwen2-VL's processor imports it)")]

WORDS = ("find the figure or table on this page together with its caption and source line give bounding box "
         "as x0 y0 x1 y1 left top right bottom edges fractions of width height between describe in at most "
         "five words copy word for none if there is 0 1 2 3 4 5 6 7 8 9 , . [ ] :")


def _tokenizer(specials: list[str], template: str, pad: str, eos: str):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(specials + sorted(set(WORDS.split())))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    pattern = "|".join(re.escape(s) for s in specials)
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(pattern, behavior="isolated"),
                                                  pre_tokenizers.Whitespace()])
    core.decoder = decoders.WordPiece(prefix="##")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token=pad, eos_token=eos)
    tok.add_tokens(specials, special_tokens=True)
    tok.chat_template = template
    return tok, vocab


def build_qwen2_vl(target: Path) -> Path:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    specials = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
                "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|>"
                "<|vision_end|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tok, vocab = _tokenizer(specials, template, "<|endoftext|>", "<|im_end|>")
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16),
                                 tokenizer=tok, chat_template=template)
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
                         pad_token_id=vocab["<|endoftext|>"], eos_token_id=vocab["<|im_end|>"],
                         bos_token_id=vocab["<|im_start|>"]),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_chans=3),
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"], pad_token_id=vocab["<|endoftext|>"],
        eos_token_id=vocab["<|im_end|>"], bos_token_id=vocab["<|im_start|>"])
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(config).save_pretrained(target)
    processor.save_pretrained(target)
    return target


def build_llava_next(target: Path) -> Path:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    specials = ["<unk>", "<pad>", "<s>", "</s>", "<image>", "[INST]", "[/INST]"]
    template = ("{% for m in messages %}{% if m['role'] == 'user' %}[INST] {% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} [/INST]"
                "{% else %}{{ m['content'] }}</s>{% endif %}{% endfor %}")
    tok, vocab = _tokenizer(specials, template, "<pad>", "</s>")
    pinpoints = [[56, 56], [56, 112], [112, 56], [112, 112]]
    image_processor = LlavaNextImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56},
                                                 image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tok, patch_size=14, num_additional_image_tokens=1,
                                   vision_feature_select_strategy="default", chat_template=template)
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=56, patch_size=14),
        text_config=LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, pad_token_id=vocab["<pad>"],
                                eos_token_id=vocab["</s>"]),
        image_token_index=vocab["<image>"], image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(0)
    LlavaNextForConditionalGeneration(config).save_pretrained(target)
    processor.save_pretrained(target)
    return target


@pytest.mark.parametrize("build", [pytest.param(build_qwen2_vl, marks=needs_gpu), build_llava_next],
                         ids=["qwen2_vl", "llava_next"])
def test_family_runs_the_od_paths(build, tmp_path):
    """Through load_backbone (AutoModelForImageTextToText + AutoProcessor), as a user's model folder loads."""
    from skr_ray.config import ModelConfig
    from skr_ray.models.backbone import load_backbone

    model, processor = load_backbone(ModelConfig(name_or_path=str(build(tmp_path / "vlm"))), device=DEVICE)
    _check_od_paths(model, processor)


def test_qwen2_vl_model_paths_on_cpu(tmp_path):
    """Qwen2-VL's model side on CPU: the processor built without its video half (the part that imports
    torchvision); everything after the processor is the production path."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        def __init__(self, image_processor, tokenizer, chat_template=None):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    ImageOnlyQwen2VLProcessor.get_attributes = classmethod(lambda cls: ["image_processor", "tokenizer"])
    original = Qwen2VLProcessor
    import transformers

    transformers.Qwen2VLProcessor = ImageOnlyQwen2VLProcessor  # the builder saves through it
    try:
        folder = build_qwen2_vl(tmp_path / "qwen")
    finally:
        transformers.Qwen2VLProcessor = original
    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    processor = ImageOnlyQwen2VLProcessor(Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16),
                                          tok, chat_template=tok.chat_template)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    _check_od_paths(model, processor)


def _check_od_paths(model, processor) -> None:
    from PIL import Image

    from skr_ray.config import TrainConfig
    from skr_ray.models.checkpoint import add_lora
    from skr_ray.models.heads import make_box_head
    from skr_ray.models.vision import image_batch, image_final_states
    from skr_ray.tasks.od.ask import ModelAsker
    from skr_ray.tasks.od.loss import box_l1_loss
    from skr_ray.tasks.od.prompts import render_prompts
    from skr_ray.tasks.od.search import Ask
    from skr_ray.train.loop import ReexpressionModel

    pages = [Image.new("RGB", (200, 300), "white"), Image.new("RGB", (120, 90), "red")]
    prompts = render_prompts(processor, ["", ""])
    with torch.no_grad():
        both = image_final_states(model, image_batch(processor, pages, prompts, DEVICE))
        one = image_final_states(model, image_batch(processor, pages[1:], prompts[1:], DEVICE))
    torch.testing.assert_close(both[1], one[0], atol=1e-3, rtol=1e-3)  # left padding changes nothing

    asker = ModelAsker(model, processor, "tiny", max_new_tokens=4, device=DEVICE)
    asker.pages = {"a": pages[0], "b": pages[1]}
    answers = asker([Ask("a", (0, 0, 100, 150), "describe"), Ask("b", (10, 10, 120, 90), "box")])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)

    hidden = model.config.get_text_config().hidden_size
    reexpress = ReexpressionModel(add_lora(model, TrainConfig()), make_box_head(hidden, {"hidden": 64})).to(DEVICE)
    opt = torch.optim.Adam([p for p in reexpress.parameters() if p.requires_grad], lr=1e-2)
    batch = image_batch(processor, pages, prompts, DEVICE)
    target = torch.tensor([[0.1, 0.1, 0.9, 0.5], [0.2, 0.3, 0.6, 0.9]], device=DEVICE)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = box_l1_loss(reexpress(**batch), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
