import re
from typing import get_args

import pytest
import yaml

from selfplay.config import PROJECT_ROOT, ConfigError, load_config, parse_overrides


def test_shipped_default_config_loads():
    cfg = load_config(PROJECT_ROOT / "configs" / "default.yaml")
    assert cfg.model == "default" and cfg.iterations == 2
    assert cfg.judge.kind == "program" and cfg.train.algo == "dpo" and cfg.generation.backend == "vllm"
    assert cfg.eval.after_run and cfg.eval.ifeval == "data/ifeval/heldout.jsonl"


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


# --- train's per-algorithm sections ----------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, error", [
    (["train.ppo.clip=0.3"], "train.ppo.clip: belongs to train.algo=ppo (this run has train.algo=dpo)"),
    (["train.algo=rloo", "train.ppo.epochs=2"], "train.ppo.epochs: belongs to train.algo=ppo (this run has train.algo=rloo)"),
    (["train.algo=rest", "train.rl.steps=2"],
     "train.rl.steps: belongs to train.algo=ppo, rloo or grpo (this run has train.algo=rest)"),
    (["train.reward_model.margin=true"],
     "train.reward_model.margin: belongs to train.algo=ppo, rloo or grpo (this run has train.algo=dpo)"),
    (["train.algo=rest", "train.sft.top_k=2"],
     "train.sft.top_k: belongs to train.algo=rejection-sft (this run has train.algo=rest)"),
    (["train.algo=rejection-sft", "train.rest.top_k=2"],
     "train.rest.top_k: belongs to train.algo=rest (this run has train.algo=rejection-sft)"),
    (["train.algo=grpo", "train.dpo.beta=0.2"],
     "train.dpo.beta: belongs to train.algo=dpo or human.seed_warmup=dpo (this run has train.algo=grpo)"),
    (["train.algo=revision-sft", "train.dpo.sft_weight=1.0"],
     "train.dpo.sft_weight: belongs to train.algo=dpo or human.seed_warmup=dpo (this run has train.algo=revision-sft)"),
])
def test_a_section_of_another_algorithm_is_an_error(overrides, error):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert str(info.value) == f"config: {error}"


def test_every_section_is_refused_by_every_algorithm_that_does_not_use_it():
    from selfplay.config import ALGO_SECTIONS, Algo, TrainConfig

    for name, algos in ALGO_SECTIONS.items():
        section = get_args(TrainConfig.model_fields[name].annotation)[0]  # Optional[section]
        key, field = next(iter(section.model_fields.items()))  # its first field, set to its default
        for algo in get_args(Algo):
            overrides = [f"train.algo={algo}", f"train.{name}.{key}={'null' if field.default is None else field.default}"]
            if algo in algos:
                assert getattr(load_config(None, overrides).train, name) is not None
            else:
                with pytest.raises(ConfigError, match=rf"train\.{name}\.{key}: belongs to .*\(this run has train\.algo={algo}\)"):
                    load_config(None, overrides)


def test_sections_are_filled_for_their_algorithm_only():
    from selfplay.config import ALGO_SECTIONS, Algo

    for algo in get_args(Algo):
        train = load_config(None, [f"train.algo={algo}"]).train
        assert {name for name in ALGO_SECTIONS if getattr(train, name) is not None} == \
            {name for name, algos in ALGO_SECTIONS.items() if algo in algos}
    ppo = load_config(None, ["train.algo=ppo", "train.ppo.clip=0.3"]).train
    assert ppo.ppo.clip == 0.3 and ppo.ppo.epochs == 4 and ppo.rl.rollout_prompts == 8 and ppo.reward_model.mode == "retrain"


def test_the_dpo_seed_warmup_uses_the_dpo_section_whatever_the_algorithm():
    seeded = ["human.seed_set=seed.jsonl", "human.seed_warmup=dpo"]
    cfg = load_config(None, ["train.algo=ppo", *seeded])
    assert cfg.train.dpo is not None and cfg.train.dpo.beta == 0.1
    assert load_config(None, ["train.algo=rloo", *seeded, "train.dpo.beta=0.3"]).train.dpo.beta == 0.3
    assert load_config(None, ["train.algo=ppo", "human.seed_set=seed.jsonl", "human.seed_warmup=sft"]).train.dpo is None


def test_a_section_in_a_config_file_for_another_algorithm_names_the_file_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  algo: rest\n  rest:\n    top_k: 2\n  ppo:\n    clip: 0.3\n    epochs: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: train.ppo.clip: belongs to train.algo=ppo (this run has train.algo=rest)"


# --- renamed keys ------------------------------------------------------------------------------------------------

def field_at(dotted: str):
    """The pydantic field a dotted key names in RunConfig (a section may be Optional)."""
    from pydantic import BaseModel

    from selfplay.config import RunConfig

    model, (*parents, leaf) = RunConfig, dotted.split(".")
    for key in parents:
        annotation = model.model_fields[key].annotation
        model = next(a for a in (annotation, *get_args(annotation)) if isinstance(a, type) and issubclass(a, BaseModel))
    return model.model_fields[leaf]


@pytest.mark.parametrize("override, error", [
    ("train.rl_steps=4", "train.rl_steps: renamed to train.rl.steps"),
    ("train.ppo_clip=0.3", "train.ppo_clip: renamed to train.ppo.clip"),
    ("train.lora_r=8", "train.lora_r: renamed to train.lora.r"),
    ("train.lora=false", "train.lora: renamed to train.lora.enabled"),
    ("train.reward_model=frozen", "train.reward_model: renamed to train.reward_model.mode"),
    ("train.sft_min_examples=3", "train.sft_min_examples: renamed to train.min_examples"),
    ("train.seed_set=seed.jsonl", "train.seed_set: renamed to human.seed_set"),
    ("train.launcher=accelerate", "train.launcher: renamed to launch.launcher"),
    ("train.report_to=tensorboard", "train.report_to: renamed to logging.report_to"),
])
def test_an_old_flat_key_names_its_new_key(override, error):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value) == f"config: {error}"


def test_every_renamed_key_maps_to_a_real_field_and_is_refused():
    from selfplay.config import RENAMED, RunConfig, TrainConfig

    assert len(RENAMED) == len(set(RENAMED.values()))  # no two old keys share a new one
    for old, new in RENAMED.items():
        assert field_at(new) is not None, new
        leaf = old.removeprefix("train.")
        # Only the two keys that became sections keep their name; every other old key is gone from TrainConfig.
        assert leaf not in TrainConfig.model_fields or leaf in ("lora", "reward_model"), old
        with pytest.raises(ConfigError, match=rf"^config: {re.escape(old)}: renamed to {re.escape(new)}$"):
            load_config(None, [f"{old}=1"])
    assert set(RunConfig.model_fields) >= {"human", "launch", "logging"}


def test_an_old_config_file_and_an_old_runs_config_name_the_new_keys(tmp_path):
    from selfplay.rundir import Run

    path = tmp_path / "old.yaml"
    path.write_text("train:\n  algo: ppo\n  lora: true\n  lora_r: 16\n  rl_steps: 2\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: train\.lora: renamed to train\.lora\.enabled$"):
        load_config(path)
    root = tmp_path / "old-run"
    root.mkdir()
    (root / "config.yaml").write_text("train:\n  algo: dpo\n  beta: 0.1\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: train\.beta: renamed to train\.dpo\.beta$"):
        Run.open(root)


# --- saved config round trip ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("algo, overrides", [
    ("dpo", ["train.dpo.sft_weight=1.0", "train.lora.r=8"]),
    ("ppo", ["train.ppo.clip=0.3", "train.ppo.target_kl=null", "train.rl.steps=3", "train.reward_model.mode=frozen"]),
    ("rloo", ["train.rl.num_generations=2", "train.reward_model.safety_threshold=0.2"]),
    ("grpo", ["train.rl.kl_coef=0.0", "train.reward_model.path=rm/"]),
    ("rejection-sft", ["train.sft.top_k=null", "train.sft.threshold=3.5", "train.min_examples=4"]),
    ("rest", ["train.rest.thresholds=[3.0, 3.5]", "train.rest.threshold_mode=score"]),
    ("revision-sft", ["train.lora.enabled=false"]),
    ("ppo", ["human.seed_set=seed.jsonl", "human.seed_warmup=dpo", "train.dpo.beta=0.3", "logging.report_to=tensorboard",
             "launch.launcher=accelerate", "launch.num_processes=4"]),
])
def test_saved_config_loads_back_to_the_same_config_and_digest(algo, overrides, tmp_path):
    from selfplay.config import ALGO_SECTIONS, dump_config
    from selfplay.rundir import Run

    cfg = load_config(None, [f"train.algo={algo}", *overrides])
    run = Run.create(tmp_path / "run", cfg)
    saved = yaml.safe_load((run.root / "config.yaml").read_text())
    assert {name for name in ALGO_SECTIONS if name in saved["train"]} == \
        {name for name in ALGO_SECTIONS if getattr(cfg.train, name) is not None}  # unused sections left out
    back = load_config(run.root / "config.yaml")
    assert back == cfg and back.digest() == cfg.digest() and dump_config(back) == dump_config(cfg)
    assert back.train.report_backend == cfg.logging.report_to
    assert Run.open(run.root, cfg).cfg == cfg  # resuming with the same config passes the digest check


def test_overrides_on_a_saved_config_reach_its_sections():
    from selfplay.config import with_overrides

    ppo = load_config(None, ["train.algo=ppo", "logging.report_to=tensorboard"])
    changed = with_overrides(ppo, ["train.ppo.clip=0.3", "launch.num_processes=3"])
    assert changed.train.ppo.clip == 0.3 and changed.launch.num_processes == 3 and changed.train.report_backend == "tensorboard"
    with pytest.raises(ConfigError, match=r"^override: train\.ppo\.clip: belongs to train\.algo=ppo"):
        with_overrides(load_config(None), ["train.ppo.clip=0.3"])  # an unused section is None in the saved tree


def test_trainers_see_the_runs_logging_backend():
    from selfplay.config import TrainConfig

    assert TrainConfig().report_backend == "none"
    assert load_config(None, ["logging.report_to=wandb"]).train.report_backend == "wandb"


# --- upper bounds: a typo is refused at load, naming the key ------------------------------------------------------

PPO, RLOO, SFT, REST = ["train.algo=ppo"], ["train.algo=rloo"], ["train.algo=rejection-sft"], ["train.algo=rest"]


@pytest.mark.parametrize("context, key, value, bound", [
    ([], "iterations", 20000, 1000),
    ([], "prompts.per_iteration", 48_000_000, 1_000_000),
    ([], "prompts.self_instruct_new", 16_000_000, 1_000_000),
    ([], "prompts.self_instruct_oversample", 200.0, 20),
    ([], "prompts.self_instruct_shots", 800, 64),
    ([], "prompts.self_instruct_max_tokens", 960_000, 131_072),
    (["prompts.self_instruct_max_words=131072"], "prompts.self_instruct_min_words", 300_000, 131_072),
    ([], "prompts.self_instruct_max_words", 1_500_000, 131_072),
    ([], "prompts.self_instruct_ngram", 200, 64),
    ([], "generation.n", 40000, 1024),
    ([], "generation.max_tokens", 1_920_000, 131_072),
    ([], "generation.max_model_len", 20_480_000, 1_048_576),
    ([], "generation.kv_cache_gib", 20000.0, 4096),
    ([], "generation.batch_size", 80000, 4096),
    ([], "generation.workers", 10000, 1024),
    ([], "generation.worker_cpus", 10000.0, 1024),
    ([], "generation.worker_gpus", 100.0, 64),
    ([], "generation.tensor_parallel_size", 80, 64),
    ([], "generation.pipeline_parallel_size", 80, 64),
    ([], "judge.samples", 30000, 1024),
    ([], "judge.max_tokens", 2_560_000, 131_072),
    ([], "judge.endpoint_timeout_s", 3e6, 86_400),
    ([], "pairing.max_length_gap", 40_000_000, 1_048_576),
    ([], "train.learning_rate", 5.0, 1),
    ([], "train.epochs", 1000.0, 100),
    ([], "train.batch_size", 80000, 4096),
    ([], "train.grad_accum", 10000, 4096),
    ([], "train.max_length", 44_800_000, 1_048_576),
    ([], "train.save_steps", 20_000_000, 1_000_000),
    ([], "train.min_pairs", 20_000_000, 1_000_000),
    ([], "train.min_examples", 10_000_000, 1_000_000),
    ([], "train.lora.r", 160_000, 16_384),
    ([], "train.lora.alpha", 320_000, 65_536),
    ([], "train.lora.layers", 2000, 1024),
    ([], "train.dpo.beta", 100.0, 10),
    ([], "train.dpo.sft_weight", 1000.0, 100),
    (SFT, "train.sft.top_k", 10000, 1024),
    (REST, "train.rest.top_k", 10000, 1024),
    (PPO, "train.reward_model.lora_r", 160_000, 16_384),
    (PPO, "train.reward_model.lora_alpha", 320_000, 65_536),
    (PPO, "train.reward_model.learning_rate", 10.0, 1),
    (PPO, "train.reward_model.epochs", 1000.0, 100),
    (PPO, "train.reward_model.batch_size", 80000, 4096),
    (PPO, "train.reward_model.center_coef", 1000.0, 100),
    (PPO, "train.rl.steps", 20_000_000, 1_000_000),
    (PPO, "train.rl.rollout_prompts", 80000, 4096),
    (RLOO, "train.rl.num_generations", 40000, 1024),
    (PPO, "train.rl.max_new_tokens", 640_000_000, 131_072),
    (PPO, "train.rl.kl_coef", 50.0, 10),
    (PPO, "train.ppo.target_kl", 6000.0, 1000),
    (PPO, "train.ppo.kl_horizon", 100_000_000, 1_000_000),
    (PPO, "train.ppo.epochs", 400, 100),
    ([*PPO, "train.rl.rollout_prompts=4096"], "train.ppo.minibatch", 40000, 4096),
    (PPO, "train.ppo.value_coef", 1000.0, 100),
    (PPO, "train.ppo.max_grad_norm", 10000.0, 1000),
    ([], "launch.num_processes", 20000, 1024),
    ([], "eval.max_prompts", 64_000_000, 1_000_000),
    ([], "eval.max_tokens", 5_120_000, 131_072),
    ([], "eval.judge_max_tokens", 2_560_000, 131_072),
    ([], "eval.bootstrap", 20_000_000, 1_000_000),
    ([], "eval.best_of_n", 40000, 1024),
    ([], "monitors.max_length_gap_tokens", 4e7, 1_048_576),
    ([], "monitors.max_kl", 5000.0, 1000),
    ([], "monitors.min_samples", 80_000_000, 1_000_000),
])
def test_a_value_past_its_upper_bound_is_one_line_naming_the_key(context, key, value, bound):
    load_config(None, [*context, f"{key}={bound}"])  # the bound itself is allowed
    with pytest.raises(ConfigError) as info:
        load_config(None, [*context, f"{key}={value}"])
    assert str(info.value) == f"config: {key}: Input should be less than or equal to {bound}"


# Numeric keys left without an upper bound, and why (selfplay/config.py says the same beside MAX_BOOTSTRAP).
UNBOUNDED = {
    "seed": "hashed into every seed; any integer",
    "pairing.min_margin": "judge units",
    "train.sft.threshold": "judge units",
    "train.kto.threshold": "judge units (the labellers' in the seed warm-up)",
    "train.rest.thresholds": "judge units or quantiles (checked by the section)",
    "train.ppo.value_clip": "reward units",
    "monitors.max_margin_drop": "judge units",
}


def numeric_keys(model, prefix=""):
    """(dotted key, field) for every int / float / list-of-float field under `model`, sections included."""
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        types = {a for a in (field.annotation, *get_args(field.annotation)) if a is not type(None)}
        section = next((a for a in types if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if section is not None:
            yield from numeric_keys(section, f"{prefix}{name}.")
        elif types & {int, float} or list[float] in types:
            yield f"{prefix}{name}", field


def test_every_numeric_key_has_an_upper_bound_or_a_reason():
    from annotated_types import Le, Lt

    from selfplay.config import RunConfig

    keys = dict(numeric_keys(RunConfig))
    assert len(keys) > 80 and set(UNBOUNDED) <= set(keys)
    unbounded = {key for key, field in keys.items() if not any(isinstance(m, (Le, Lt)) for m in field.metadata)}
    assert unbounded == set(UNBOUNDED), unbounded ^ set(UNBOUNDED)
