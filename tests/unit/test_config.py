from pathlib import Path

import pytest

import yaml

from skr_ray.config import ConfigError, SKRConfig, from_dict, load_config, parse_overrides

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_embedded_demo():
    cfg = load_config()
    assert cfg.model.name_or_path == "smollm2-135m-instruct"
    assert cfg.data.unlabeled == "demo" and cfg.data.eval == "demo"
    assert cfg.train.lora_r == 8 and cfg.train.lora_alpha == 16
    assert cfg.train.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert cfg.train.val_fraction == pytest.approx(0.1)


def test_dotted_overrides_are_typed():
    cfg = load_config(None, ["train.epochs=3", "train.lr=2e-4", "data.eval=/x/y", "train.use_gpu=true",
                             "evaluate.ks=[1,5]"])
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr == pytest.approx(2e-4)
    assert cfg.data.eval == "/x/y"
    assert cfg.train.use_gpu is True
    assert cfg.evaluate.ks == [1, 5]


def test_unknown_key_names_the_key_and_suggests():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch'.*train.epochs"):
        load_config(None, ["train.epoch=3"])


def test_bad_type_names_the_key():
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, ["train.epochs=three"])
    with pytest.raises(ConfigError, match="train.use_gpu"):
        load_config(None, ["train.use_gpu=5"])


def test_validation_in_post_init():
    with pytest.raises(ConfigError, match="zero_stage"):
        load_config(None, ["train.zero_stage=7"])
    with pytest.raises(ConfigError, match="evaluate.systems"):
        load_config(None, ["evaluate.systems=[base,nonsense]"])


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 7\n  batch_size: 4\noutput_dir: out\n")
    cfg = load_config(path, ["train.epochs=2"])
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.output_dir) == (2, 4, "out")


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_overrides(["train.epochs"])


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, SKRConfig)
    assert from_dict(yaml.safe_load(cfg.to_yaml())) == cfg  # the resolved tree written to artifacts reloads


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.epochs=2", "annotate.batch_size=4"])
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    assert load_config(tmp_path / "config.yaml") == cfg


def test_annotation_pool_auto_sizes_by_gpus_cpus_and_memory(tiny_model_dir, monkeypatch):
    import ray

    from skr_ray.config import load_config
    from skr_ray.ray_utils import annotation_pool

    weights = sum(f.stat().st_size for f in tiny_model_dir.glob("*.safetensors"))
    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", "annotate.num_actors=0"])
    resources = {"CPU": 4.0, "memory": 100.0 * weights}
    monkeypatch.setattr(ray, "cluster_resources", lambda: dict(resources))
    assert annotation_pool(cfg) == (4, 0.0)  # one single-threaded replica per CPU
    resources["memory"] = 5.0 * weights
    assert annotation_pool(cfg) == (2, 0.0)  # half the memory holds two copies of the model
    resources.update({"GPU": 3.0, "memory": 100.0 * weights})
    assert annotation_pool(cfg) == (3, 1.0)  # one per GPU
    fixed = load_config(None, [f"model.name_or_path={tiny_model_dir}", "annotate.num_actors=2"])
    assert annotation_pool(fixed) == (2, 1.0)


def test_training_workers_get_a_relative_model_path_made_absolute(tmp_path, monkeypatch):
    """Ray Train runs its workers in their trial folder: a relative model path must reach them absolute."""
    from skr_ray.train.trainer import _absolute_paths

    (tmp_path / "models" / "tiny").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["model.name_or_path=models/tiny"]).to_dict()
    assert _absolute_paths(cfg)["model"]["name_or_path"] == str(tmp_path / "models" / "tiny")
    assert cfg["model"]["name_or_path"] == "models/tiny"  # the caller's config is left as it was
    embedded = load_config(None, []).to_dict()
    assert _absolute_paths(embedded)["model"]["name_or_path"] == embedded["model"]["name_or_path"]
