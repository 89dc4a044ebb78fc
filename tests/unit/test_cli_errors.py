"""A stage that cannot finish reaches the user as one line naming what to do, not a traceback."""

from skr_ray import cli
from skr_ray.artifacts import StageError


def test_stage_error_is_one_line(monkeypatch, capsys, tmp_path):
    def stage(name, cfg):
        raise StageError("annotation wrote 3 of 5 documents; re-run to resume")

    monkeypatch.setattr(cli, "_stage", stage)
    assert cli.main(["annotate", f"output_dir={tmp_path}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "skr: error: annotation wrote 3 of 5 documents; re-run to resume"
    assert "Traceback" not in err


def test_od_on_a_text_model_fails_before_any_stage_starts(monkeypatch, capsys, tmp_path, tiny_model_dir):
    """The README's OD line with the scripted describer but a text-only backbone: before, annotation ran and
    training crashed inside a Ray worker on the chat template; now `skr run` names the model and the way out."""
    started = []
    monkeypatch.setattr(cli, "_stage", lambda name, cfg: started.append(name) or {})
    truth = tmp_path / "annotations.json"
    truth.write_text("{}")
    argv = ["run", "-c", "configs/docpages_od.yaml", f"model.name_or_path={tiny_model_dir}", "od.asker=scripted",
            f"od.scripted_truth={truth}", f"output_dir={tmp_path / 'run'}"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "needs a vision-language model" in err and "skr tiny-vlm" in err and "Traceback" not in err
    assert started == []  # no stage ran, annotation included
    assert cli.main(["train", *argv[1:]]) == 1 and started == []


def test_tiny_vlm_command_builds_a_marked_random_model_once(tmp_path, capsys):
    from skr_ray.config import load_config
    from skr_ray.models.backbone import RANDOM_MODEL_MARKER, random_weights_note
    from skr_ray.models.vision import is_vision_model

    out = tmp_path / "vlm"
    assert cli.main(["tiny-vlm", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert is_vision_model(out) and (out / RANDOM_MODEL_MARKER).is_file()
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert cli.main(["tiny-vlm", "--out", str(out)]) == 0  # built once: a second call only prints the folder
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    assert "random weights" in random_weights_note(load_config(None, [f"model.name_or_path={out}"]).model)
    assert random_weights_note(load_config(None, []).model) == ""
