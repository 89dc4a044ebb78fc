"""SKR must beat its own head-only ablation where the frozen states lack what the task needs.

A small separable fixture: every passage is a bag of random words and its queries are other random subsets of
the same bag. The backbone is the tiny random Llama with its attention's value projections zeroed, so its frozen
final-token state never sees the other tokens: it is the same vector for every input, and no head on it
(head-only) can rank passages. LoRA on the value projections can learn to carry the words' content into that
state. Both systems train on the same pairs with the same loss, optimizer and number of steps, and SKR starts
from the head-only fit (``train.head_init=probe``), so the only difference is that LoRA learns. If the LoRA
path stops learning (no gradient reaches the adapter, the optimizer skips it, the adapter is not applied), SKR
equals the projection-only run and the test fails.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from skr_ray.config import load_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def blind_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with every attention value projection zeroed: its final-token state is input-independent."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.v_proj.weight.zero_()
    target = tmp_path_factory.mktemp("tiny-blind")
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(target)
    return target


def _fixture(seed: int = 0, n_docs: int = 48, doc_words: int = 10, query_words: int = 4):
    rng = random.Random(seed)
    vocab = sorted({w for w in Path(__file__).read_text().lower().split() if w.isalpha() and len(w) > 3})
    docs = [rng.sample(vocab, doc_words) for _ in range(n_docs)]
    train, held_out = [], []
    for i, words in enumerate(docs):
        passage = " ".join(words)
        for _ in range(3):
            train.append({"doc_id": f"d{i}", "query": " ".join(rng.sample(words, query_words)), "passage": passage})
        held_out.append((f"d{i}", " ".join(rng.sample(words, query_words))))
    return docs, train, held_out


def _config(model_dir: Path, tmp_path: Path, **train) -> object:
    overrides = [f"model.name_or_path={model_dir}", f"output_dir={tmp_path}", "train.embed_prompt=plain",
                 "train.max_length=32", "train.max_query_length=16", "train.batch_size=16", "train.lr=1e-2",
                 "train.temperature=0.1", "train.lora_r=8", "train.lora_alpha=16", "train.lora_dropout=0.0",
                 "train.head_init=probe", "evaluate.head_only_epochs=20"]
    return load_config(None, overrides + [f"train.{k}={v}" for k, v in train.items()])


def _train(cfg, train: list[dict], epochs: int, lora_learns: bool):
    from skr_ray.models.backbone import load_backbone
    from skr_ray.models.checkpoint import add_lora
    from skr_ray.models.heads import make_embedding_head
    from skr_ray.tasks.ir import training as hooks
    from skr_ray.train.loop import ReexpressionModel

    torch.manual_seed(0)
    backbone, tokenizer = load_backbone(cfg.model)
    backbone = add_lora(backbone, cfg.train)
    info = hooks.head_info(cfg, train)
    model = ReexpressionModel(backbone, make_embedding_head(backbone.config.hidden_size, info["options"]))
    model.head.load_state_dict(hooks.fit_start_head(model, tokenizer, train, cfg, "cpu", info))
    if not lora_learns:
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr)
    bs = cfg.train.batch_size
    for epoch in range(epochs):
        order = list(range(len(train)))
        random.Random(epoch).shuffle(order)
        model.train()
        for i in range(0, len(order) - bs + 1, bs):
            loss = hooks.batch_loss(model, tokenizer, [train[j] for j in order[i : i + bs]], cfg, "cpu", info)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model, tokenizer


def _mrr(model, tokenizer, cfg, docs: list[list[str]], held_out: list[tuple[str, str]]) -> float:
    from skr_ray.tasks.ir.training import embed

    with torch.no_grad():
        d = embed(model, tokenizer, [" ".join(w) for w in docs], cfg.train.max_length, "cpu", "plain").numpy()
        q = embed(model, tokenizer, [t for _, t in held_out], cfg.train.max_query_length, "cpu", "plain").numpy()
    from skr_ray.evaluate.metrics import first_relevant_ranks  # ties rank pessimistically

    q_ids = [f"q{i}" for i in range(len(held_out))]
    ranks = first_relevant_ranks(q @ d.T, [f"d{i}" for i in range(len(docs))], q_ids,
                                 {q: {doc} for q, (doc, _) in zip(q_ids, held_out)})
    return float(np.mean(1.0 / ranks))


def test_skr_beats_head_only_when_lora_learns(blind_model_dir, tmp_path):
    docs, train, held_out = _fixture()
    cfg = _config(blind_model_dir, tmp_path)
    epochs = 6
    skr, tok = _train(cfg, train, epochs, lora_learns=True)
    projection_only, _ = _train(cfg, train, epochs, lora_learns=False)
    skr_mrr = _mrr(skr, tok, cfg, docs, held_out)
    head_only_mrr = _mrr(projection_only, tok, cfg, docs, held_out)
    chance = float(np.mean(1.0 / np.arange(1, len(docs) + 1)))
    assert head_only_mrr <= 2 * chance, (head_only_mrr, chance)  # the frozen states carry nothing to project
    assert skr_mrr >= head_only_mrr + 0.15, (skr_mrr, head_only_mrr)  # LoRA learned what the state lacked
