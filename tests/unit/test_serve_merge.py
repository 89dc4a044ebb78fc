"""A replica holding one adapter serves it merged into the base weights; a second adapter unmerges it
(multiplexing), and the answers are the same either way. AdapterBank is built without Ray Serve."""

import pytest
import torch

from skr_ray.serve.backbone import AdapterBank
from skr_ray.serve.registry import build_registry

TEXTS = ["what was revenue in 2019 ?", "the tax rate fell", "leases run for seven years and the board met"]
PAIRS = [("when did revenue rise", "revenue rose in 2019"), ("who met", "the board met on monday")]


@pytest.fixture(scope="module")
def registry(tiny_model_dir, tmp_path_factory):
    from tests.tiny import make_checkpoint

    root = tmp_path_factory.mktemp("merge")
    models = {"ir-a": make_checkpoint(tiny_model_dir, root / "ir-a", seed=1),
              "ir-b": make_checkpoint(tiny_model_dir, root / "ir-b", seed=2),
              "ad": make_checkpoint(tiny_model_dir, root / "ad", task="ad", seed=3)}
    entries, bases = build_registry({k: str(v) for k, v in models.items()})
    assert len(bases) == 1
    return entries, bases[entries["ir-a"].backbone]


def _lora_modules(bank: AdapterBank) -> list:
    from peft.tuners.lora import LoraLayer

    return [m for m in bank.model.modules() if isinstance(m, LoraLayer)]


def _served(registry, model_id: str, kind: str = "embed", merge: bool = True) -> tuple[AdapterBank, torch.Tensor]:
    """A fresh bank holding ``model_id`` alone, and its answer to TEXTS (embed) or PAIRS (classify)."""
    entries, base = registry
    bank = AdapterBank(base, merge=merge)
    bank.load(entries[model_id])
    out = bank.embed(model_id, TEXTS) if kind == "embed" else bank.classify(model_id, PAIRS)
    return bank, torch.tensor(out)


def _unmerged(registry, model_id: str, kind: str = "embed") -> torch.Tensor:
    """The answer of the multiplexing path (merging off)."""
    bank, out = _served(registry, model_id, kind, merge=False)
    assert bank.merged is None and not any(m.merged for m in _lora_modules(bank))
    return out


def test_one_adapter_is_served_merged_with_the_unmerged_answers(registry):
    bank, merged = _served(registry, "ir-a")
    assert bank.merged == "ir-a"
    layers = _lora_modules(bank)
    assert layers and all(m.merged for m in layers)  # the forward ran the base weights with LoRA folded in
    torch.testing.assert_close(merged, _unmerged(registry, "ir-a"), atol=1e-4, rtol=1e-4)
    again = torch.tensor(bank.embed("ir-a", TEXTS))  # stays merged across requests: merged once
    assert bank.merged == "ir-a"
    torch.testing.assert_close(again, merged)


@pytest.mark.filterwarnings("error:Adapter cannot be set")  # PEFT's warning on switching a merged model
def test_a_second_adapter_unmerges_and_the_last_one_left_is_merged_again(registry):
    entries, base = registry
    alone = {m: _unmerged(registry, m) for m in ("ir-a", "ir-b")}
    assert not torch.allclose(alone["ir-a"], alone["ir-b"], atol=1e-3)  # the adapters matter
    bank = AdapterBank(base)
    bank.load(entries["ir-a"])
    bank.embed("ir-a", TEXTS)
    assert bank.merged == "ir-a"

    bank.load(entries["ir-b"])  # multiplexing: both as PEFT adapters, none merged
    assert bank.merged is None and not any(m.merged for m in _lora_modules(bank))
    for model_id in ("ir-b", "ir-a", "ir-b"):
        torch.testing.assert_close(torch.tensor(bank.embed(model_id, TEXTS)), alone[model_id], atol=1e-4, rtol=1e-4)
        assert bank.merged is None

    bank.unload("ir-a")  # one adapter left: merged again on its next request
    torch.testing.assert_close(torch.tensor(bank.embed("ir-b", TEXTS)), alone["ir-b"], atol=1e-4, rtol=1e-4)
    assert bank.merged == "ir-b"

    bank.unload("ir-b")  # the last one goes: the base weights are the base model's again
    assert bank.merged is None and not any(m.merged for m in _lora_modules(bank))
    bank.load(entries["ir-a"])
    torch.testing.assert_close(torch.tensor(bank.embed("ir-a", TEXTS)), alone["ir-a"], atol=1e-4, rtol=1e-4)
    assert bank.merged == "ir-a"


def test_the_other_head_routes_run_merged_too(registry):
    bank, probs = _served(registry, "ad", "classify")
    assert bank.merged == "ad"
    torch.testing.assert_close(probs, _unmerged(registry, "ad", "classify"), atol=1e-4, rtol=1e-4)


def test_merged_weights_are_the_checkpoint_merged_by_peft(registry):
    """The served merged weights equal merge_and_unload of the checkpoint (what evaluation encodes with)."""
    from skr_ray.models.checkpoint import load_skr_model
    from skr_ray.models.encoding import embed_texts

    entries, base = registry
    bank = AdapterBank(base)
    bank.load(entries["ir-a"])
    served = torch.tensor(bank.embed("ir-a", TEXTS))
    skr = load_skr_model(entries["ir-a"].checkpoint)
    plain = skr.model.merge_and_unload()
    info, e = skr.head_info, entries["ir-a"]
    direct = embed_texts(plain, skr.tokenizer, TEXTS, e.max_length, skr.head, "cpu", info["prompt"],
                         info.get("pooling", "last_token"), group_by_length=True)
    torch.testing.assert_close(served, direct, atol=1e-4, rtol=1e-4)
