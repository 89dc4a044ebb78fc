"""OD building blocks: box parsing, coordinates, the box head and its loss, vision-language final states
on real document pages."""

from __future__ import annotations

import pytest
import torch

from skr_ray.models.heads import BoxHead, make_box_head
from skr_ray.tasks.od.boxes import iou, parse_box, to_normalized, to_pixels
from skr_ray.tasks.od.loss import box_l1_loss


@pytest.mark.parametrize(
    ("raw", "box", "status"),
    [
        ("[0.1, 0.2, 0.8, 0.6]", (0.1, 0.2, 0.8, 0.6), "ok"),
        ("The box is [0.8, 0.6, 0.1, 0.2].", (0.1, 0.2, 0.8, 0.6), "ok"),  # corners put in order
        ("[100, 200, 800, 600]", (0.1, 0.2, 0.8, 0.6), "ok"),  # 0..1000 grid
        ("<|box_start|>(100,200),(800,600)<|box_end|>", (0.1, 0.2, 0.8, 0.6), "ok"),  # Qwen2-VL grounding
        ("x0=0.1, y0=0.2, x1=0.8, y1=0.6", (0.1, 0.2, 0.8, 0.6), "ok"),  # the names' digits are not numbers
        ("[x0, y0, x1, y1] = [0.1, 0.2, 0.8, 0.6]", (0.1, 0.2, 0.8, 0.6), "ok"),
        ("0.1, 0.2, 0.8, 0.6", (0.1, 0.2, 0.8, 0.6), "ok"),
        ("Figure 3 spans [0.05, 0.1, 0.95, 0.5]", (0.05, 0.1, 0.95, 0.5), "ok"),
        ("", None, "no_box"),
        ("I cannot see a figure on this page.", None, "no_box"),
        ("[0.1, 0.2, 0.8]", None, "no_box"),
        ("[-0.1, 0.2, 0.8, 0.6]", None, "out_of_range"),
        ("[10, 20, 1800, 600]", None, "out_of_range"),
        ("[0.5, 0.2, 0.5, 0.6]", None, "degenerate"),
    ],
)
def test_parse_box(raw, box, status):
    got, got_status = parse_box(raw)
    assert got_status == status
    if box is None:
        assert got is None
    else:
        assert got == pytest.approx(box)


def test_pixels_normalized_and_iou():
    box = (0.1, 0.2, 0.8, 0.6)
    assert to_pixels(box, 724, 1024) == [72, 205, 579, 614]
    assert to_pixels((-0.1, 0.0, 1.2, 1.0), 100, 50) == [0, 0, 100, 50]  # clipped to the image
    assert to_normalized((72.4, 204.8, 579.2, 614.4), 724, 1024) == pytest.approx(box)
    assert iou(box, box) == pytest.approx(1.0)
    assert iou((0, 0, 1, 1), (1, 1, 2, 2)) == 0.0
    assert iou((0, 0, 2, 2), (1, 0, 3, 2)) == pytest.approx(2 / 6)


def test_box_head_outputs_valid_normalized_boxes():
    torch.manual_seed(0)
    head = make_box_head(32, {"hidden": 64})
    assert isinstance(head, BoxHead)
    head.eval()
    boxes = head(torch.randn(50, 32) * 10)
    assert boxes.shape == (50, 4)
    assert (boxes >= 0).all() and (boxes <= 1).all()
    assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()
    assert [m.out_features for m in head.net if isinstance(m, torch.nn.Linear)] == [64, 64, 4]


def test_box_loss_is_mean_l1_and_trains_the_head():
    pred = torch.tensor([[0.1, 0.2, 0.5, 0.6]])
    target = torch.tensor([[0.2, 0.2, 0.5, 0.2]])
    assert box_l1_loss(pred, target).item() == pytest.approx((0.1 + 0 + 0 + 0.4) / 4)
    torch.manual_seed(0)
    states = torch.randn(64, 16)
    targets = torch.stack([torch.full((64,), 0.1), torch.full((64,), 0.2),
                           0.6 + 0.3 * torch.sigmoid(states[:, 0]), torch.full((64,), 0.7)], dim=1)
    head = BoxHead(16, hidden=64, dropout=0.0)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    first = box_l1_loss(head(states), targets).item()
    for _ in range(300):
        opt.zero_grad()
        loss = box_l1_loss(head(states), targets)
        loss.backward()
        opt.step()
    assert loss.item() < first / 5 and loss.item() < 0.02


def test_heads_share_one_state_dict_layout():
    """AD checkpoints written before the shared MLP body still load: same parameter names."""
    from skr_ray.models.heads import make_classifier_head

    ad = make_classifier_head(32, {"hidden": 64, "input_norm": "batch"})
    od = make_box_head(32, {"hidden": 64, "input_norm": "batch"})
    assert set(ad.state_dict()) == set(od.state_dict()) == {
        "norm.running_mean", "norm.running_var", "norm.num_batches_tracked",
        "net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias", "net.6.weight", "net.6.bias"}


def test_vision_states_on_real_pages_batch_equals_single(tiny_vlm_dir):
    """Left-padded batches of real pages give each page's own final state; the page changes the state."""
    from skr_ray.config import ModelConfig
    from skr_ray.models.backbone import load_backbone
    from skr_ray.models.vision import image_batch, image_final_states
    from skr_ray.tasks.od.prompts import DEFAULT_OBJECT, render_prompts
    from tests.tiny import docpage

    model, processor = load_backbone(ModelConfig(name_or_path=str(tiny_vlm_dir)))
    assert processor.tokenizer.padding_side == "left"
    pages = [docpage(0)[0], docpage(1)[0]]
    prompts = render_prompts(processor, ["", "the table on this page"])
    assert DEFAULT_OBJECT in prompts[0] and prompts[0].count("<start_of_image>") == 1
    with torch.no_grad():
        both = image_final_states(model, image_batch(processor, pages, prompts))
        one = [image_final_states(model, image_batch(processor, [p], [q])) for p, q in zip(pages, prompts)]
        swapped = image_final_states(model, image_batch(processor, pages[::-1], prompts))
    assert both.shape == (2, model.config.get_text_config().hidden_size)
    for i in range(2):
        torch.testing.assert_close(both[i], one[i][0], atol=1e-4, rtol=1e-4)
    assert (swapped[0] - both[0]).abs().max() > 1e-3  # another page, another state


def test_checkpoint_of_a_vision_model_round_trips(tiny_vlm_dir, tmp_path):
    from skr_ray.models.checkpoint import load_skr_model
    from skr_ray.models.vision import image_batch, image_final_states
    from skr_ray.tasks.od.prompts import render_prompts
    from tests.tiny import docpage, make_checkpoint

    ckpt = make_checkpoint(tiny_vlm_dir, tmp_path / "od", "od", seed=4)
    skr = load_skr_model(ckpt)
    assert skr.head_info["task"] == "od" and isinstance(skr.head, BoxHead)
    batch = image_batch(skr.tokenizer, [docpage(0)[0]], render_prompts(skr.tokenizer, [""]))
    with torch.no_grad():
        box = skr.head(image_final_states(skr.model, batch))
        with skr.model.disable_adapter():
            plain = skr.head(image_final_states(skr.model, batch))
    assert box.shape == (1, 4) and 0 <= box.min() and box.max() <= 1
    assert (box - plain).abs().max() > 1e-4  # the LoRA adapter is active in the loaded model


def test_sft_inputs_label_only_the_box_text(tiny_vlm_dir, tmp_path):
    """The SFT baseline learns to write the box: labels cover the answer's tokens and nothing else."""
    from skr_ray.config import ModelConfig
    from skr_ray.models.backbone import load_backbone
    from skr_ray.tasks.od.training import box_text, sft_inputs

    _, processor = load_backbone(ModelConfig(name_or_path=str(tiny_vlm_dir)))
    page, _ = _synthetic_page(tmp_path)
    examples = [{"page_id": "a", "path": page, "box": [0.1, 0.25, 0.9, 0.5]},
                {"page_id": "b", "path": page, "box": [0.0, 0.125, 1.0, 0.75]}]
    batch = sft_inputs(processor, examples, "", "cpu")
    tok = processor.tokenizer
    for i, e in enumerate(examples):
        answer = batch["input_ids"][i][batch["labels"][i] != -100].tolist()
        assert answer == tok(box_text(e["box"]) + tok.eos_token, add_special_tokens=False)["input_ids"]
        assert answer[-1] == tok.eos_token_id and len(answer) > 5
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def _synthetic_page(tmp_path):
    from tests.pages import make_pages

    root = make_pages(tmp_path / "pages", n=1)
    return str(root / "images" / "page-00.png"), root


def test_od_stages_refuse_what_cannot_run_before_any_work(tiny_model_dir, tmp_path, capsys):
    """Text corpora, text backbones and a missing oracle file fail at once with a message that says what to set."""
    from skr_ray.cli import main

    pages = _synthetic_page(tmp_path)[1]
    assert main(["annotate", "task=od", f"output_dir={tmp_path / 'a'}"]) == 1
    assert "task=od reads page images: set data.unlabeled" in capsys.readouterr().err
    assert main(["annotate", "task=od", f"data.unlabeled={pages}", f"model.name_or_path={tiny_model_dir}",
                 f"output_dir={tmp_path / 'b'}"]) == 1
    assert "task=od needs a vision-language model" in capsys.readouterr().err
    assert main(["annotate", "task=od", f"data.unlabeled={pages}", "od.asker=scripted",
                 f"od.scripted_truth={tmp_path / 'nowhere.json'}", f"output_dir={tmp_path / 'c'}"]) == 1
    assert "od.asker=scripted needs od.scripted_truth" in capsys.readouterr().err
    assert main(["annotate", "task=od", "od.strategy=grid"]) == 2
    assert "od.strategy must be one of" in capsys.readouterr().err
