"""Shared prompt prefix: the prefix KV runs once, states equal a full forward of every row."""

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from skr_ray.models.encoding import final_token_states, pad_left
from skr_ray.models.shared_prompt import SharedPromptPrefix


def test_states_equal_full_forward_with_and_without_the_prefix():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0)
    model = LlamaForCausalLM(config).eval()
    prefix = [3, 4, 5, 6]
    rows = [prefix + [10, 11, 12, 13, 14], prefix + [20], prefix + [30, 31, 32], [3, 4, 9, 40, 41]]
    shared = SharedPromptPrefix(model, prefix, pad_id=0)
    got = shared.states(rows)
    with torch.inference_mode():
        want = final_token_states(model, pad_left(rows, 0))
    assert got.shape == (4, 32)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert (shared.rows_shared, shared.rows_full) == (3, 1)  # the last row does not start with the prefix
    again = shared.states(rows[:2])  # the cached prefix is not consumed by a batch
    torch.testing.assert_close(again, want[:2], atol=1e-5, rtol=1e-4)


def test_ad_prompts_start_with_the_shared_prefix(tiny_model_dir):
    from skr_ray.tasks.ad.prompts import render_prompts, shared_prefix_ids

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prefix = shared_prefix_ids(tok)
    prompts = render_prompts(tok, ["what was revenue?", "who audits?"], ["revenue was 5", "Deloitte audits"], 64)
    rows = tok(prompts, add_special_tokens=False)["input_ids"]
    assert len(prefix) > 3
    assert all(r[: len(prefix)] == prefix for r in rows)
