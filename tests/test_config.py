import pytest

from selfplay.config import PROJECT_ROOT, ConfigError, load_config, parse_overrides


def test_shipped_default_config_loads():
    cfg = load_config(PROJECT_ROOT / "configs" / "default.yaml")
    assert cfg.model == "default" and cfg.iterations == 2
    assert cfg.judge.kind == "pointwise" and cfg.train.algo == "dpo" and cfg.generation.backend == "vllm"


@pytest.mark.parametrize("path", sorted((PROJECT_ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    from selfplay.judges import preflight_judge

    cfg = load_config(path)
    preflight_judge(cfg.judge)  # templates, constitutions and programs it names exist and validate
    assert cfg.iterations >= 1


def test_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("generation:\n  temprature: 0.5\n")
    with pytest.raises(ConfigError, match=r"generation\.temprature: unknown key"):
        load_config(path)


def test_bad_value_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("generation:\n  n: 1\n")
    with pytest.raises(ConfigError, match=r"generation\.n: .*greater than or equal to 2"):
        load_config(path)


def test_overrides_parse_yaml_scalars():
    assert parse_overrides(["generation.n=2", "judge.model=null", "train.lora.enabled=false", "prompts.pool=x.jsonl"]) == [
        ("generation.n", 2), ("judge.model", None), ("train.lora.enabled", False), ("prompts.pool", "x.jsonl")]
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["generation.n"])


def test_override_applies_and_changes_digest():
    base = load_config(None)
    changed = load_config(None, ["generation.n=3"])
    assert changed.generation.n == 3
    assert base.digest() != changed.digest()
    assert base.digest() == load_config(None).digest()


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_report_to_backend_must_be_installed(monkeypatch):
    import importlib.util

    from selfplay.train.setup import check_reporting

    cfg = load_config(None, ["logging.report_to=tensorboard"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match="logging.report_to=tensorboard needs the tensorboard package"):
        check_reporting(cfg.logging)
    check_reporting(load_config(None).logging)  # "none" needs nothing
