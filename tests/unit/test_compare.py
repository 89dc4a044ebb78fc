"""`skr compare`: runs' metrics side by side, table and chart."""

from __future__ import annotations

import json

from skr_ray.cli import main


def _run(root, name, metrics, folder="evaluate"):
    (root / name / folder).mkdir(parents=True)
    (root / name / folder / "metrics.json").write_text(json.dumps(metrics))
    return str(root / name)


def test_compare_tables_and_charts_runs(tmp_path, capsys):
    a = _run(tmp_path, "r0", {"bm25": {"mrr": 0.46, "seconds_per_100": 0.2}, "skr": {"mrr": 0.38, "recall@1": 0.28}})
    b = _run(tmp_path, "r1", {"bm25": {"mrr": 0.46, "seconds_per_100": 0.1}, "skr": {"mrr": 0.40, "recall@1": 0.30},
                              "skr_bm25": {"mrr": 0.51}})
    dev = _run(tmp_path, "r1", {"skr": {"mrr": 0.41, "curve": [1, 2], "counts": {"ok": 3}}}, folder="evaluate_dev")
    assert main(["compare", a, b, dev + "/evaluate_dev", "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "| system | metric | r0 | r1 | r1_dev |"
    assert "| skr | mrr | 0.38 | 0.4 | **0.41** |" in lines
    assert "| bm25 | mrr | 0.46 | 0.46 | – |" in lines  # equal values: nothing in bold
    assert "| bm25 | seconds_per_100 | 0.2 | **0.1** | – |" in lines  # lower is better for time
    assert "| skr_bm25 | mrr | – | 0.51 | – |" in lines and "curve" not in out and "counts" not in out
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000
    assert (tmp_path / "cmp" / "compare.md").read_text().startswith("| system | metric |")
    assert "mrr chart" in out


def test_compare_names_a_missing_run(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nothing-here")]) == 1
    assert "nothing-here" in capsys.readouterr().err
