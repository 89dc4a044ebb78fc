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
