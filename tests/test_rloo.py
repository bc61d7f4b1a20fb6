"""RLOO and GRPO through TRL: our reward wrapper as a pure function, then a few real steps on the tiny model."""

import json
import math

import pytest
from safetensors.torch import load_file

from selfplay.config import TrainConfig
from selfplay.records import Prompt, TrainInputs
from selfplay.train.reward import RewardModelError
from selfplay.train.rloo import GroupRLTrainer, message_text, trl_reward_func


def test_reward_wrapper_turns_trl_conversations_into_strings():
    seen = {}

    def reward_fn(prompts, responses):
        seen["args"] = (prompts, responses)
        return [float(len(r)) for r in responses]

    wrapped = trl_reward_func(reward_fn)
    prompts = [[{"role": "system", "content": "be brief"}, {"role": "user", "content": "Say hi."}], "plain prompt"]
    completions = [[{"role": "assistant", "content": "hi!"}], "plain answer"]
    assert wrapped(prompts=prompts, completions=completions, completion_ids=[[1], [2]], trainer_state=None) == [3.0, 12.0]
    assert seen["args"] == (["Say hi.", "plain prompt"], ["hi!", "plain answer"])
    assert wrapped.__name__ == "reward"
    assert message_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]) == "ab"


def test_reward_wrapper_refuses_nan_and_miscounted_rewards():
    with pytest.raises(RewardModelError, match=r"returned nan for 1 of 2 responses \(first: prompt 'p2'\)"):
        trl_reward_func(lambda p, r: [1.0, math.nan])(prompts=["p1", "p2"], completions=["a", "b"])
    with pytest.raises(RewardModelError, match="returned 1 scores for 2 responses"):
        trl_reward_func(lambda p, r: [1.0])(prompts=["p1", "p2"], completions=["a", "b"])


def test_group_trainer_refuses_other_algorithms(tmp_path):
    with pytest.raises(ValueError, match="rloo or grpo"):
        GroupRLTrainer(TrainConfig(algo="dpo"), seed=0, reward=lambda: lambda p, r: []).train(TrainInputs(), tmp_path, tmp_path / "out")


PROMPTS = [Prompt(id=f"p{i}", text=f"Write about topic {i}.") for i in range(4)]


def length_reward(prompts, responses):
    return [len(r) / 8 for r in responses]


def run(algo: str, lora: bool, model_dir, out):
    cfg = TrainConfig(algo=algo, lora={"enabled": lora, "r": 4}, learning_rate=1e-2, batch_size=4, precision="fp32",
                      rl={"steps": 2, "rollout_prompts": 2, "num_generations": 2, "max_new_tokens": 8, "kl_coef": 0.05})
    return GroupRLTrainer(cfg, seed=0, reward=lambda: length_reward).train(TrainInputs(prompts=PROMPTS), model_dir, out)


def changed(model_dir, merged_dir) -> bool:
    before, after = load_file(model_dir / "model.safetensors"), load_file(merged_dir / "model.safetensors")
    return any(not before[k].to(after[k].dtype).equal(after[k]) for k in before)


@pytest.mark.slow
def test_rloo_with_lora_runs_steps_changes_the_policy_and_records_metrics(tiny_chat_model_dir, tmp_path, one_thread):
    out = tmp_path / "rloo"
    result = run("rloo", True, tiny_chat_model_dir, out)
    assert result.algo == "rloo" and result.steps == 2 and result.rl.prompts == 4 and result.nan_steps == 0
    assert result.rl.reward_first is not None and 0.0 <= result.rl.reward_first <= 1.0
    assert result.rl.kl_last is not None and result.rl.kl_coef == 0.05
    assert (out / "adapter" / "adapter_model.safetensors").exists() and changed(tiny_chat_model_dir, out / "merged")
    logged = [json.loads(line) for line in (out / "rloo_stats.jsonl").read_text().splitlines()]
    assert sum("reward" in row for row in logged) == 2 and not list(out.rglob("*.bin"))


@pytest.mark.slow
def test_grpo_full_fine_tuning_changes_the_policy(tiny_chat_model_dir, tmp_path, one_thread):
    out = tmp_path / "grpo"
    result = run("grpo", False, tiny_chat_model_dir, out)
    assert result.algo == "grpo" and result.steps == 2 and result.adapter is None
    assert result.rl.reward_first is not None and changed(tiny_chat_model_dir, out / "merged")
    assert (out / "grpo_stats.jsonl").exists()


def test_config_checks_the_rollout_batch_divides_into_micro_batches():
    from selfplay.config import ConfigError, load_config

    cfg = load_config(None, ["train.algo=grpo", "train.rl.rollout_prompts=3", "train.rl.num_generations=4", "train.batch_size=6"])
    assert cfg.train.algo == "grpo"
    with pytest.raises(ConfigError, match=r"train: .*rl\.rollout_prompts \* rl\.num_generations \(12\) must be a multiple of batch_size \(5\)"):
        load_config(None, ["train.algo=rloo", "train.rl.rollout_prompts=3", "train.rl.num_generations=4", "train.batch_size=5"])
    with pytest.raises(ConfigError, match=r"train\.rl\.num_generations: .*greater than or equal to 2"):
        load_config(None, ["train.algo=rloo", "train.rl.num_generations=1"])
