"""A tiny random Llama with a small word-level tokenizer, built from config (no downloads)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from skr_ray.corpus import demo_dir
from skr_ray.tiny_vlm import VLM_CHAT_TEMPLATE, VLM_SIZES, VLM_SPECIALS, build_tiny_vlm  # noqa: F401  (tests import them from here)

SPECIALS = ["<unk>", "<|im_start|>", "<|im_end|>", "<pad>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The tiny model writes gibberish: integration tests loosen the question filters to keep its labels.
LOOSE_FILTERS = [
    "annotate.require_question_mark=false",
    "annotate.min_words=1",
    "annotate.max_words=1000",
    "annotate.max_copy_ratio=1.0",
    "annotate.drop_duplicates=false",
]


FAMILIES = ("llama", "mistral", "qwen2", "phi3", "gemma3_text")


def build_tiny_model(target: Path, seed: int = 0, family: str = "llama", chat: bool = True, hidden: int = 32) -> Path:
    """Write a 2-layer decoder (hidden 32 unless said) of ``family`` (FAMILIES; Llama by default) and its tokenizer
    to ``target``; returns the folder. ``chat=False``: a base model's tokenizer, without a chat template."""
    import torch

    words: set[str] = set()
    for line in (demo_dir() / "corpus.jsonl").read_text().splitlines():
        words.update(re.findall(r"\w+|[^\w\s]", json.loads(line)["text"].lower()))
    words.update("what which how much did the was is of in for a an ? question passage write one user assistant system summarize above word yes no answer answered can be from alone or".split())
    vocab = {tok: i for i, tok in enumerate(SPECIALS + sorted(words))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(r"<\|im_start\|>|<\|im_end\|>", behavior="isolated"),
         pre_tokenizers.Whitespace()]
    )
    core.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<|im_end|>",
        bos_token="<|im_start|>", additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    shape = dict(
        vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        bos_token_id=vocab["<|im_start|>"], eos_token_id=vocab["<|im_end|>"], pad_token_id=vocab["<pad>"],
        tie_word_embeddings=True,
    )
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**shape))
    else:
        from transformers import AutoConfig, AutoModelForCausalLM

        extra = {"gemma3_text": {"head_dim": 8, "sliding_window": 64}, "phi3": {"sliding_window": None}}.get(family, {})
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(family, **shape, **extra))
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def make_yes_no_judge(source: Path, target: Path, scale: float = 30.0) -> Path:
    """Copy of a tiny model whose greedy answer to an AD prompt is 'yes' or 'no', depending on the input.

    The output rows of 'yes' and 'no' are rewritten so both beat every other token (along the mean
    final state) and differ along the main direction in which final states of AD prompts vary, so
    both answers occur. Logits stay a real forward pass of a real model.
    """
    import torch
    from transformers import AutoTokenizer

    from skr_ray.models.encoding import final_token_states
    from skr_ray.tasks.ad.prompts import render_prompts

    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.padding_side = "left"
    model = LlamaForCausalLM.from_pretrained(source).eval()
    texts = [json.loads(line)["text"] for line in (demo_dir() / "corpus.jsonl").read_text().splitlines()]
    prompts = render_prompts(tokenizer, texts[:40], texts[40:80], 48)
    with torch.no_grad():
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        states = final_token_states(model, enc)
    mean = states.mean(0)
    mean_dir = mean / mean.norm()
    centred = states - mean
    centred = centred - (centred @ mean_dir)[:, None] * mean_dir  # orthogonal to the mean
    direction = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    yes = tokenizer("yes", add_special_tokens=False)["input_ids"][0]
    no = tokenizer("no", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        weight = model.get_output_embeddings().weight
        weight[yes] = scale * direction + scale * mean_dir
        weight[no] = -scale * direction + scale * mean_dir
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def make_checkpoint(model_dir: Path, target: Path, task: str = "ir", seed: int = 0, overrides: tuple[str, ...] = (),
                    **head_extra) -> Path:
    """A real SKR checkpoint folder (adapter/ + head + config) of the tiny model, with non-zero LoRA
    weights so that different checkpoints give different outputs. Written by the project's own savers."""
    import torch

    from skr_ray.config import load_config
    from skr_ray.models.backbone import load_backbone
    from skr_ray.models.checkpoint import ADAPTER, RUN_CONFIG, add_lora, save_head
    from skr_ray.tasks import get_task

    cfg = load_config(None, [f"task={task}", f"model.name_or_path={model_dir}", "evaluate.max_length=64", *overrides])
    model, _ = load_backbone(cfg.model)
    torch.manual_seed(seed)
    peft_model = add_lora(model, cfg.train)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    hidden = model.config.get_text_config().hidden_size
    options = {"hidden": 64} if task in ("ad", "od") else {}
    head = get_task(task).make_head(hidden, options)
    from skr_ray.tasks.od.prompts import PROMPT_VERSION as OD_PROMPT

    prompt = {"ir": "e5v", "ad": "ad-answerable-v1", "od": OD_PROMPT}[task]
    info = {"task": task, "objective": "head", "pooling": "last_token", "hidden_size": hidden,
            "prompt": prompt, "options": options, **head_extra}
    if task == "ad":
        info.setdefault("threshold", 0.5)
        info.setdefault("max_passage_tokens", 48)
    target.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(target / ADAPTER))
    save_head(target, head, info)
    (target / RUN_CONFIG).write_text(cfg.to_yaml())
    return target


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _synthetic_root() -> Path:
    """Synthetic pages (tests/pages.py) standing in for ../shared in a clone without it."""
    import tempfile

    from tests.pages import make_pages

    root = Path(tempfile.gettempdir()) / "skr-test-synthetic-pages"
    if not (root / "annotations.json").is_file():
        make_pages(root, n=6)
    return root


def chart(index: int = 0):
    """A real chart image from ../shared/data/charts/test (RGB) and its human question; without ../shared, a
    synthetic page and a question about its caption."""
    from PIL import Image

    root = SHARED / "charts" / "test"
    if not root.is_dir():
        image, record = docpage(index)
        return image, "What does the chart show about " + record["objects"][0]["caption_text"].split(". ", 1)[-1] + "?"
    query = json.loads((root / "queries.jsonl").read_text().splitlines()[index])
    return Image.open(root / query["image"]).convert("RGB"), query["text"]


def docpage(index: int = 0):
    """A real page image from ../shared/data/docpages (RGB) and its annotation record; without ../shared, a
    synthetic page with its record (same layout)."""
    from PIL import Image

    root = SHARED / "docpages"
    if not root.is_dir():
        root = _synthetic_root()
    record = json.loads((root / "annotations.json").read_text())["pages"][index]
    return Image.open(root / record["file"]).convert("RGB"), record


def image_beir(pages_dir: Path, target: Path) -> Path:
    """A small image retrieval set over synthetic pages: one question per page (its caption as a question),
    corpus rows naming the images, qrels, and answerability pairs (own image 1, two others 0)."""
    import shutil

    records = json.loads((pages_dir / "annotations.json").read_text())["pages"]
    (target / "qrels").mkdir(parents=True, exist_ok=True)
    (target / "images").mkdir(exist_ok=True)
    corpus, queries, qrels, pairs = [], [], ["query-id\tcorpus-id\tscore"], []
    for i, rec in enumerate(records):
        doc = Path(rec["file"]).stem
        shutil.copy(pages_dir / rec["file"], target / "images" / f"{doc}.png")
        corpus.append({"_id": doc, "image": f"images/{doc}.png"})
        caption = rec["objects"][0]["caption_text"].split(". ", 1)[-1]
        queries.append({"_id": f"q-{doc}", "text": f"What does the {rec['objects'][0]['category']} show about {caption.lower()}?"})
        qrels.append(f"q-{doc}\t{doc}\t1")
        for j in (i, (i + 1) % len(records), (i + 2) % len(records)):
            other = Path(records[j]["file"]).stem
            pairs.append({"query_id": f"q-{doc}", "query": queries[-1]["text"], "doc_id": other,
                          "image": f"images/{other}.png", "label": int(j == i)})
    (target / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (target / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (target / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    (target / "matching.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    return target


def serve_locally(models: dict[str, str], name: str):
    """A context manager: the Serve app for ``models`` (id -> run or checkpoint folder) on a free local port,
    yielding its base URL; Serve is shut down afterwards."""
    import contextlib
    import socket

    @contextlib.contextmanager
    def running():
        from ray import serve

        from skr_ray.serve.app import build_app

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            serve.run(build_app({"models": models, "auth": {"disabled": True}}), name=name, route_prefix="/")
            yield f"http://127.0.0.1:{port}"
        finally:
            serve.shutdown()

    return running()


def run_with_eval_hidden(cfg) -> dict:
    """annotate -> train -> evaluate with the evaluation set (a copy of the demo's at ``cfg.data.eval``) moved
    away until evaluate starts: annotate and train cannot open an evaluation file, in any Ray process."""
    import shutil

    from skr_ray.cli import _stage
    from skr_ray.corpus import demo_dir

    evalset = Path(cfg.data.eval)
    hidden = evalset.with_name(evalset.name + "-hidden")
    shutil.copytree(demo_dir(), hidden)
    results = {stage: _stage(stage, cfg) for stage in ("annotate", "train")}
    hidden.rename(evalset)
    results["evaluate"] = _stage("evaluate", cfg)
    return results


def text_pdf(pages: list[str]) -> bytes:
    """A minimal PDF with a Helvetica text layer, one page per string."""
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objs.append(f"<< /Length {len(stream)} >>\nstream\n{stream.decode()}\nendstream")
        content = len(objs)
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content} 0 R "
                    "/Resources << /Font << /F1 3 0 R >> >> >>")
        kids.append(len(objs))
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>"
    out, offsets = b"%PDF-1.4\n", []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out
