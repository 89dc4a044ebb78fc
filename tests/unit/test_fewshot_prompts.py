"""Base-model self-annotation: a pretrained model without a chat template is asked by few-shot completion
(passage/label records, InPars style) that stops at the end of the label's line; an echo of an example is
counted, and the label rows say which prompt wrote them."""

from __future__ import annotations

import re

import numpy as np
import pytest

from skr_ray.config import ConfigError, load_config
from skr_ray.schema import DOC_ID, TEXT


@pytest.fixture(scope="module")
def tiny_base_gemma(tmp_path_factory):
    """A tiny random Gemma3ForCausalLM built from config, with a base model's tokenizer (no chat template)."""
    from tests.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("gemma-base"), family="gemma3_text", chat=False)


def test_the_style_follows_the_tokenizer_unless_set(tiny_model_dir, tiny_base_gemma):
    from skr_ray.models.backbone import load_tokenizer
    from skr_ray.tasks.ir.prompts import resolve_style

    assert resolve_style("auto", load_tokenizer(tiny_model_dir)) == "chat"
    assert resolve_style("auto", load_tokenizer(tiny_base_gemma)) == "fewshot"
    assert resolve_style("chat", load_tokenizer(tiny_base_gemma)) == "chat"
    with pytest.raises(ConfigError, match="prompt_style"):
        load_config(None, ["annotate.prompt_style=zero-shot"])


@pytest.mark.parametrize("kind", ["question", "keywords", "statement"])
def test_a_fewshot_prompt_is_records_ending_where_the_label_belongs(kind):
    from skr_ray.tasks.ir.labels import QuestionFilter, kind_filter, parse_label
    from skr_ray.tasks.ir.prompts import fewshot_opening, fewshot_prompt, kind_examples

    prompt = fewshot_prompt("Net sales\nwere $5.1 million   in 2019.", kind)
    field = {"question": "Question", "keywords": "Keywords", "statement": "Fact"}[kind]
    assert prompt.startswith(fewshot_opening(kind)) and prompt.endswith(f"Passage: Net sales were $5.1 million in 2019.\n{field}:")
    assert prompt.count("Passage: ") == 4 and prompt.count(f"\n{field}: ") == 3  # three records, then the new one
    examples = kind_examples(kind, "fewshot")
    assert len(examples) == 3 and all(f"{field}: {e}\n" in prompt for e in examples)
    flt = kind_filter(kind, QuestionFilter(), "fewshot")
    assert parse_label(examples[1], "Net sales were $5.1 million in 2019.", flt, kind)[1] == "echoes_example"


def test_a_base_gemma_annotates_by_fewshot_completion(tiny_base_gemma, tmp_path):
    """The annotation UDF on a tiny random base Gemma-3: prompts are few-shot, generation runs with the line-end
    stop (and with the records' KV cache reused), every row gets a status, the prompt version says fewshot."""
    from skr_ray.annotate.labelstore import read_labels
    from skr_ray.tasks.ir.annotate import SelfAnnotator

    cfg = load_config(None, [f"model.name_or_path={tiny_base_gemma}", f"output_dir={tmp_path}",
                             "annotate.max_new_tokens=6", "annotate.label_kinds=[question,keywords]"])
    annotator = SelfAnnotator(cfg.to_dict(), 1)
    assert annotator.style == "fewshot"
    seen = []
    generate = annotator.engine.generate
    annotator.engine.generate = lambda prompts, *a, **k: seen.append((prompts, k)) or generate(prompts, *a, **k)
    out = annotator({DOC_ID: np.array(["a", "b"]),
                     TEXT: np.array(["revenue rose in 2019 .", "the tax rate fell in 2018 ."], dtype=object)})
    assert len(out["status"]) == 4 and all(s != "error" for s in out["status"])
    assert [k["stop"] for _, k in seen] == ["\n", "\n"] and all(k["opening"] and k["avoid"] for _, k in seen)
    assert seen[0][0][0].endswith("Passage: revenue rose in 2019 .\nQuestion:")
    assert annotator.engine.opening_fallbacks == 0  # the records' KV cache was used, not the plain batch
    rows = read_labels(tmp_path / "annotate" / "labels").to_pylist()
    assert {r["prompt_version"] for r in rows} == {"ir-question-v1-fewshot", "ir-keywords-v1-fewshot"}
    assert all("\n" not in r["raw_output"] for r in rows)


def test_the_opening_cache_gives_the_plain_batch_completions(tiny_base_gemma):
    from skr_ray.annotate.generation import GenerationEngine
    from skr_ray.config import ModelConfig
    from skr_ray.models.backbone import load_backbone
    from skr_ray.tasks.ir.prompts import fewshot_opening, fewshot_prompt

    model, tok = load_backbone(ModelConfig(name_or_path=str(tiny_base_gemma)))
    engine = GenerationEngine(model, tok, 64, 6)
    prompts = [fewshot_prompt(t, "question") for t in ["revenue rose in 2019 .", "the tax rate fell ."]]
    assert engine.generate(prompts, stop="\n") == engine.generate(prompts, opening=fewshot_opening("question"),
                                                                  stop="\n")


def test_avoided_words_never_appear_and_the_passage_keeps_its_own(tiny_base_gemma):
    from skr_ray.annotate.generation import GenerationEngine
    from skr_ray.config import ModelConfig
    from skr_ray.models.backbone import load_backbone
    from skr_ray.tasks.ir.prompts import fewshot_avoid, fewshot_prompt

    model, tok = load_backbone(ModelConfig(name_or_path=str(tiny_base_gemma)))
    engine = GenerationEngine(model, tok, 64, 12)
    allowed = {"revenue", "rose", "tax", "what", "?"}
    vocab = set(tok.get_vocab())  # special tokens too: only the allowed words remain
    prompts = [fewshot_prompt("revenue rose .", "question"), fewshot_prompt("the tax rate fell .", "question")]
    out = engine.generate(prompts, avoid=[(vocab - allowed, set()), (vocab, allowed)])
    assert all(set(re.findall(r"\w+|[^\w\s]", o[0])) <= allowed for o in out) and any(o[0] for o in out), out
    # the examples' content is avoided unless the passage has it; question and function words stay free
    banned, free = fewshot_avoid("Revenue rose at the Austin plant.", "question")
    assert "subscription" in {w.lower() for w in banned} and "Austin" not in banned and "revenue" not in {w.lower() for w in banned}
    assert {"What", "the", "How"} <= free and not banned & free


def test_ad_prompts_of_a_base_model_are_records_whose_opening_every_prompt_shares(tiny_base_gemma, tiny_model_dir):
    from skr_ray.models.backbone import load_tokenizer
    from skr_ray.tasks.ad.prompts import prompt_version, render_prompts, shared_prefix_ids

    base, chat = load_tokenizer(tiny_base_gemma), load_tokenizer(tiny_model_dir)
    prompts = render_prompts(base, ["what was revenue ?", "how much tax ?"],
                             ["revenue rose\nin 2019 .", "the tax rate fell ."], 32)
    assert all(p.endswith("Can the question be answered from the passage alone?\nAnswer:") for p in prompts)
    assert prompts[0].count("Answer:") == 3 and " yes\n\n" in prompts[0] and " no\n\n" in prompts[0]
    assert "Passage: revenue rose in 2019" in prompts[0] and "\nQuestion: what was revenue ?\n" in prompts[0]
    head = shared_prefix_ids(base)
    assert len(head) > 20 and all(ids[:len(head)] == head for ids in base(prompts, add_special_tokens=False)["input_ids"])
    assert prompt_version(base) == "ad-answerable-v1-fewshot" and prompt_version(chat) == "ad-answerable-v1"
    assert "Answer:" not in render_prompts(chat, ["q ?"], ["p ."], 32)[0]  # an instruction model keeps its chat


def test_a_fewshot_rewrite_prompt_is_records_and_an_echo_is_counted():
    """AD's on-topic rewrites for a base model: worked (passage, question, rewrite) records, then the row's with
    the rewrite's field open; the examples' words are banned unless the row has them; a copy is an echo."""
    from skr_ray.tasks.ad.ontopic import (_REWRITE_EXAMPLES, echoes_rewrite_example, rewrite_avoid,
                                          rewrite_fewshot_opening, rewrite_fewshot_prompt)

    prompt = rewrite_fewshot_prompt("Where is the\nplant?", "The plant is in Ohio.\nIt opened in 1990.")
    assert prompt.startswith(rewrite_fewshot_opening())
    assert prompt.endswith("Passage: The plant is in Ohio. It opened in 1990.\nQuestion: Where is the plant?\n"
                           "A question the passage does not answer:")
    assert prompt.count("Passage: ") == 4 and prompt.count("A question the passage does not answer: ") == 3
    banned, free = rewrite_avoid("How many engineers work in Ohio?", "The plant in Ohio employs 300 engineers.")
    assert {"Berlin", "Madrid", "dividend"} <= banned and "engineers" not in banned and "the" in free
    assert echoes_rewrite_example(_REWRITE_EXAMPLES[1][2]) and echoes_rewrite_example("how much did net sales rise in 2016")
    assert not echoes_rewrite_example("How much did net sales rise in 2017?")


def test_a_base_gemma_rewrites_by_fewshot_completion(tiny_base_gemma, tmp_path, monkeypatch):
    from skr_ray.tasks.ad.ontopic import _REWRITE_EXAMPLES, REWRITE_STOP, Rewriter

    cfg = load_config(None, [f"model.name_or_path={tiny_base_gemma}", f"output_dir={tmp_path}", "task=ad"])
    rewriter = Rewriter(cfg.to_dict(), 1)
    assert rewriter.style == "fewshot"
    batch = {"index": np.array([0, 1]), "question": np.array(["What did revenue reach in 2019?"] * 2),
             "passage": np.array(["Revenue reached $5 million in 2019.", "Revenue reached $5 million in 2019."])}
    out = rewriter(dict(batch))  # the real tiny model: every row gets a status and the few-shot prompt version
    assert len(out["status"]) == 2 and set(out["prompt"]) == {"ad-ontopic-rewrite-v1-fewshot"}
    calls = []

    def scripted(prompts, **kwargs):
        calls.append(kwargs)
        return [[" " + _REWRITE_EXAMPLES[0][2]], [" What did revenue reach in 2011?\nPassage: more"]]

    monkeypatch.setattr(rewriter.engine, "generate", scripted)
    out = rewriter(dict(batch))
    assert calls[0]["stop"] == REWRITE_STOP and calls[0]["opening"] and len(calls[0]["avoid"]) == 2
    assert list(out["status"]) == ["echoes_example", "ok"] and out["rewrite"][1] == "What did revenue reach in 2011?"
