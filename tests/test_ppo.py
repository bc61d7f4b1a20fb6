"""Our PPO: each piece against numbers worked out by hand, then the whole loop on a tiny model, where a length
reward must rise while the KL to the reference stays bounded."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from selfplay.config import TrainConfig
from selfplay.records import Prompt, TrainInputs
from selfplay.train.ppo import (
    AdaptiveKLController, PPOTrainer, a2c_policy_loss, gae, kl_penalized_rewards, policy_loss, value_loss, whiten,
)


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_gae_by_hand():
    # gamma = 0.9, lam = 0.5, so gamma * lam = 0.45. Row 0: three response tokens, score 1 at the last.
    #   t=2: delta = 1 + 0.9 * 0 (episode ends) - 0.4 = 0.6              A2 = 0.6
    #   t=1: delta = 0 + 0.9 * 0.4 - 0.2         = 0.16             A1 = 0.16 + 0.45 * 0.6  = 0.43
    #   t=0: delta = 0 + 0.9 * 0.2 - 0.5         = -0.32            A0 = -0.32 + 0.45 * 0.43 = -0.1265
    #   returns = A + V = [-0.1265 + 0.5, 0.43 + 0.2, 0.6 + 0.4] = [0.3735, 0.63, 1.0]
    # Row 1: two response tokens then padding (its reward 9 and value 7 must not leak in).
    #   t=1: delta = 2 + 0.9 * 0 (next is padding) - 0.5 = 1.5       A1 = 1.5
    #   t=0: delta = 0.5 + 0.9 * 0.5 - 1.0 = -0.05                   A0 = -0.05 + 0.45 * 1.5 = 0.625
    #   returns = [0.625 + 1.0, 1.5 + 0.5, 0] = [1.625, 2.0, 0]
    rewards = t([[0.0, 0.0, 1.0], [0.5, 2.0, 9.0]])
    values = t([[0.5, 0.2, 0.4], [1.0, 0.5, 7.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    assert torch.allclose(advantages, t([[-0.1265, 0.43, 0.6], [0.625, 1.5, 0.0]]), atol=1e-6)
    assert torch.allclose(returns, t([[0.3735, 0.63, 1.0], [1.625, 2.0, 0.0]]), atol=1e-6)


def test_gae_with_gamma_and_lambda_one_is_the_monte_carlo_return_minus_the_value():
    # lam = gamma = 1: A_t = (sum of rewards from t on) - V_t. Rewards [1, 2, 3]: returns-to-go [6, 5, 3].
    advantages, returns = gae(t([[1.0, 2.0, 3.0]]), t([[1.0, 1.0, 1.0]]), t([[1, 1, 1]]), gamma=1.0, lam=1.0)
    assert torch.allclose(advantages, t([[5.0, 4.0, 2.0]]))
    assert torch.allclose(returns, t([[6.0, 5.0, 3.0]]))


def test_whiten_by_hand():
    # Unmasked entries 1, 2, 3, 4: mean 2.5; population variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25,
    # std 1.118034. (x - 2.5) / 1.118034 = -1.341641, -0.447214, 0.447214, 1.341641; padding returns 0.
    x, mask = t([[1, 2, 3], [4, 100, 100]]), t([[1, 1, 1], [1, 0, 0]])
    assert torch.allclose(whiten(x, mask), t([[-1.341641, -0.447214, 0.447214], [1.341641, 0, 0]]), atol=1e-5)
    # shift_mean=False keeps the mean: add 2.5 back.
    assert torch.allclose(whiten(x, mask, shift_mean=False), t([[1.158359, 2.052786, 2.947214], [3.841641, 0, 0]]), atol=1e-5)


def test_kl_penalized_rewards_by_hand():
    # kl_coef 0.1. Row 0: logp - ref = [0.5, -1.0, 0.0] -> -0.1 * that = [-0.05, 0.1, 0.0]; score 1 at the last
    # token (index 2) -> [-0.05, 0.1, 1.0]. Row 1: two tokens; logp - ref = [1.0, 0.0] -> [-0.1, 0.0], score -2 at
    # index 1 -> [-0.1, -2.0]; the padding's log-prob gap of 6 is masked out -> 0.
    score = t([1.0, -2.0])
    logprobs = t([[-1.0, -2.0, -0.5], [-1.0, -1.0, -3.0]])
    ref = t([[-1.5, -1.0, -0.5], [-2.0, -1.0, -9.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    rewards = kl_penalized_rewards(score, logprobs, ref, mask, kl_coef=0.1)
    assert torch.allclose(rewards, t([[-0.05, 0.1, 1.0], [-0.1, -2.0, 0.0]]), atol=1e-6)


def test_policy_loss_by_hand():
    # clip 0.2; old log-probs 0, so ratio = exp(new) = the numbers below.
    #   ratio 1.5, A =  1: max(-1.5, -1.2) = -1.2   (clipped: no credit beyond 1.2)
    #   ratio 0.5, A =  1: max(-0.5, -0.8) = -0.5   (the pessimistic, unclipped term)
    #   ratio 1.0, A = -2: max( 2.0,  2.0) =  2.0
    #   ratio 0.5, A = -1: max( 0.5,  0.8) =  0.8   (row 1; its padded token, ratio 3, is masked)
    # mean over 4 tokens: (-1.2 - 0.5 + 2.0 + 0.8) / 4 = 0.275
    new = torch.log(t([[1.5, 0.5, 1.0], [0.5, 3.0, 1.0]]))
    old = torch.zeros(2, 3)
    advantages = t([[1.0, 1.0, -2.0], [-1.0, 5.0, 0.0]])
    mask = t([[1, 1, 1], [1, 0, 0]])
    assert policy_loss(new, old, advantages, mask, clip=0.2).item() == pytest.approx(0.275, abs=1e-6)
    # Ratio 1 everywhere (the first minibatch): the loss is -mean(A) = -(1 + 1 - 2 - 1) / 4 = 0.25
    assert policy_loss(old, old, advantages, mask, clip=0.2).item() == pytest.approx(0.25, abs=1e-6)


def test_value_loss_by_hand():
    # clip 0.2.
    #   V 1.0, V_old 0.5, R 2: clipped V = 0.5 + 0.2 = 0.7; max((1 - 2)^2, (0.7 - 2)^2) = max(1, 1.69) = 1.69
    #   V 0.0, V_old 0.0, R 1: max(1, 1) = 1
    #   V 3.0, V_old 2.0, R 2: clipped V = 2.2;           max((3 - 2)^2, (2.2 - 2)^2) = max(1, 0.04) = 1
    # 0.5 * mean(1.69, 1, 1) = 0.5 * 1.23 = 0.615
    values, old = t([[1.0, 0.0], [3.0, 50.0]]), t([[0.5, 0.0], [2.0, 0.0]])
    returns, mask = t([[2.0, 1.0], [2.0, 0.0]]), t([[1, 1], [1, 0]])
    assert value_loss(values, old, returns, mask, clip=0.2).item() == pytest.approx(0.615, abs=1e-6)


def test_a2c_losses_by_hand_and_where_ppo_clipping_differs():
    # A2C's policy loss is mean over response tokens of -A * log pi. Five tokens (row 1's third is padding):
    #   -A * logp: -(1.0 * -0.5) = 0.5, -(-2.0 * -1.0) = -2.0, -(0.5 * -2.0) = 1.0, -(2.0 * -0.2) = 0.4, -(1.0 * -3.0) = 3.0
    #   mean: (0.5 - 2.0 + 1.0 + 0.4 + 3.0) / 5 = 2.9 / 5 = 0.58
    logp = t([[-0.5, -1.0, -2.0], [-0.2, -3.0, -7.0]]).requires_grad_()
    advantages = t([[1.0, -2.0, 0.5], [2.0, 1.0, 9.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    loss = a2c_policy_loss(logp, advantages, mask)
    assert loss.item() == pytest.approx(0.58, abs=1e-6)
    loss.backward()
    # d loss / d logp = -A / 5 on response tokens, 0 on padding:
    assert torch.allclose(logp.grad, t([[-0.2, 0.4, -0.1], [-0.4, -0.2, 0.0]]), atol=1e-6)
    # On-policy (new = old, ratio 1) PPO's surrogate has exactly this gradient: one A2C step is the ratio-1 PPO step.
    at_one = logp.detach().clone().requires_grad_()
    policy_loss(at_one, logp.detach(), advantages, mask, clip=0.2).backward()
    assert torch.allclose(at_one.grad, logp.grad, atol=1e-6)

    # Where clipping bites, PPO's loss differs: one token, ratio 1.5 (new - old = ln 1.5), A = 1, clip 0.2.
    #   PPO: max(-1 * 1.5, -1 * clip(1.5, 0.8, 1.2)) = max(-1.5, -1.2) = -1.2, and its gradient is 0 (clipped);
    #   the unclipped surrogate -A * ratio = -1.5, with gradient -A * ratio = -1.5; A2C's -A * logp has gradient -1.
    new = torch.log(t([[1.5]])).requires_grad_()
    ppo = policy_loss(new, torch.zeros(1, 1), t([[1.0]]), t([[1]]), clip=0.2)
    assert ppo.item() == pytest.approx(-1.2, abs=1e-6)
    ppo.backward()
    assert new.grad.item() == 0.0
    a2c_new = torch.log(t([[1.5]])).requires_grad_()
    a2c = a2c_policy_loss(a2c_new, t([[1.0]]), t([[1]]))
    assert a2c.item() == pytest.approx(-math.log(1.5), abs=1e-6) and a2c.item() != pytest.approx(ppo.item())
    a2c.backward()
    assert a2c_new.grad.item() == pytest.approx(-1.0)

    # The value loss is unclipped with clip None: the case of test_value_loss_by_hand, where clipping gave 0.615:
    #   0.5 * mean((1 - 2)^2, (0 - 1)^2, (3 - 2)^2) = 0.5 * 1 = 0.5
    values, old = t([[1.0, 0.0], [3.0, 50.0]]), t([[0.5, 0.0], [2.0, 0.0]])
    returns, vmask = t([[2.0, 1.0], [2.0, 0.0]]), t([[1, 1], [1, 0]])
    assert value_loss(values, old, returns, vmask, clip=None).item() == pytest.approx(0.5, abs=1e-6)
    assert value_loss(values, old, returns, vmask, clip=0.2).item() == pytest.approx(0.615, abs=1e-6)


def test_adaptive_kl_controller_by_hand():
    ctl = AdaptiveKLController(value=0.1, target=6.0, horizon=100)
    # KL 9 vs target 6: error 9/6 - 1 = 0.5, clipped to 0.2; 10 responses: x (1 + 0.2 * 10/100) = x 1.02 -> 0.102
    assert ctl.update(9.0, n_steps=10) == pytest.approx(0.102)
    # KL 5.4: error 5.4/6 - 1 = -0.1; 50 responses: x (1 - 0.1 * 50/100) = x 0.95 -> 0.102 * 0.95 = 0.0969
    assert ctl.update(5.4, n_steps=50) == pytest.approx(0.0969)
    fixed = AdaptiveKLController(value=0.1, target=None, horizon=100)
    assert fixed.update(100.0, n_steps=1000) == 0.1


MAX_NEW = 12


def ppo_config(rl: dict | None = None, ppo: dict | None = None, **overrides):
    base = dict(algo="ppo", lora={"enabled": False}, learning_rate=3e-3, precision="fp32")
    return TrainConfig(**{**base, **overrides},
                       rl={"rollout_prompts": 8, "max_new_tokens": MAX_NEW, "kl_coef": 0.05, **(rl or {})},
                       ppo={"minibatch": 4, "epochs": 4, **(ppo or {})})


PROMPTS = [Prompt(id=f"p{i}", text=f"Write about topic {i}.") for i in range(16)]


@pytest.mark.slow
def test_ppo_length_reward_rises_kl_stays_bounded_and_a_nan_batch_is_skipped(tiny_chat_model_dir, tmp_path, one_thread):
    # The tiny model ends a response after ~6 tokens on average (see the fixture); the reward is the response's
    # length as a fraction of the limit (one character = one token), so longer is better.
    calls = []

    def reward(prompts, responses):
        calls.append(len(calls))
        if len(calls) == 3:  # a broken reward on the third batch: recorded and skipped, never trained on
            return [math.nan] * len(responses)
        return [len(r) / MAX_NEW for r in responses]

    out = tmp_path / "ppo"
    result = PPOTrainer(ppo_config(rl={"steps": 10}), seed=0, reward=lambda: reward).train(TrainInputs(prompts=PROMPTS), tiny_chat_model_dir, out)
    stats = [json.loads(line) for line in (out / "ppo_stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == list(range(1, 11))
    assert stats[2]["skipped"].startswith("non-finite reward") and stats[2]["policy_loss"] is None
    assert result.rl.skipped_steps == 1 and result.steps == 9
    done = [s for s in stats if s["skipped"] is None]
    assert done[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # the first batch samples from the reference itself
    first, last = sum(s["reward_mean"] for s in done[:3]) / 3, sum(s["reward_mean"] for s in done[-3:]) / 3
    assert last > first + 0.2, f"length reward did not rise: {first:.2f} -> {last:.2f}"
    assert result.rl.reward_first == pytest.approx(first) and result.rl.reward_last == pytest.approx(last)
    assert all(s["kl"] < 10.0 for s in done), [s["kl"] for s in done]  # nats per response, bounded
    # The result's KL is per response token, the unit every RL algorithm reports it in.
    per_token = [s["kl_per_token"] for s in done[-3:]]
    assert result.rl.kl_last == pytest.approx(sum(per_token) / 3)
    assert all(s["kl_per_token"] == pytest.approx(s["kl"] / s["response_tokens"]) for s in done)
    assert result.rl.kl_coef is not None and math.isfinite(result.rl.kl_coef)
    # The policy was saved merged, as safetensors only, and differs from where it started.
    before = load_file(tiny_chat_model_dir / "model.safetensors")
    after = load_file(out / "merged" / "model.safetensors")
    assert any(not before[k].to(after[k].dtype).equal(after[k]) for k in before)
    assert all(torch.isfinite(v.float()).all() for v in after.values())
    assert not list(out.rglob("*.bin")) and result.policy == str(out / "merged")


@pytest.mark.slow
def test_ppo_with_lora_saves_an_adapter_and_starts_at_zero_kl(tiny_chat_model_dir, tmp_path, one_thread):
    out = tmp_path / "ppo-lora"
    cfg = ppo_config(lora={"enabled": True, "r": 4}, learning_rate=1e-2, rl={"steps": 2, "rollout_prompts": 4},
                     ppo={"minibatch": 2, "epochs": 2})
    result = PPOTrainer(cfg, seed=1, reward=lambda: lambda p, r: [len(x) / MAX_NEW for x in r]).train(
        TrainInputs(prompts=PROMPTS[:4]), tiny_chat_model_dir, out)
    stats = [json.loads(line) for line in (out / "ppo_stats.jsonl").read_text().splitlines()]
    # The reference is the LoRA-disabled model, and LoRA starts as the identity (B = 0): no KL on batch one.
    assert stats[0]["kl"] == pytest.approx(0.0, abs=1e-5) and result.steps == 2
    assert result.adapter == str(out / "adapter") and (out / "adapter" / "adapter_model.safetensors").exists()
    before = load_file(tiny_chat_model_dir / "model.safetensors")
    after = load_file(out / "merged" / "model.safetensors")
    assert any(not before[k].to(after[k].dtype).equal(after[k]) for k in before)


def test_ppo_config_is_validated():
    from selfplay.config import ConfigError, load_config

    cfg = load_config(None, ["train.algo=ppo", "train.ppo.target_kl=null", "train.rl.kl_coef=0.2"])
    assert cfg.train.ppo.target_kl is None and cfg.train.rl.kl_coef == 0.2
    with pytest.raises(ConfigError, match=r"ppo\.minibatch \(16\) exceeds rl\.rollout_prompts \(8\)"):
        load_config(None, ["train.algo=ppo", "train.ppo.minibatch=16"])
    with pytest.raises(ConfigError, match=r"train\.ppo\.clip: Input should be less than 1"):
        load_config(None, ["train.algo=ppo", "train.ppo.clip=1.5"])
    with pytest.raises(ConfigError, match=r"train\.reward_model\.mode: Input should be 'retrain' or 'frozen'"):
        load_config(None, ["train.algo=ppo", "train.reward_model.mode=sometimes"])


def test_a2c_variant_is_validated():
    from selfplay.config import ConfigError, dump_config, load_config, with_overrides

    cfg = load_config(None, ["train.algo=ppo", "train.ppo.variant=a2c", "train.rl.rollout_prompts=2"])
    ppo = cfg.train.ppo
    assert (ppo.epochs, ppo.minibatch, ppo.clip, ppo.value_clip) == (1, None, None, None)
    # PPO keeps its defaults; an explicit epochs=1 is a2c's own value, not a conflict.
    assert load_config(None, ["train.algo=ppo"]).train.ppo.model_dump(include={"epochs", "minibatch", "clip", "value_clip"}) == {
        "epochs": 4, "minibatch": 4, "clip": 0.2, "value_clip": 0.2}
    assert load_config(None, ["train.algo=ppo", "train.ppo.variant=a2c", "train.ppo.epochs=1"]).train.ppo.epochs == 1
    # The saved config.yaml reads back to the same config.
    assert with_overrides(cfg, []).digest() == cfg.digest() and "variant: a2c" in dump_config(cfg)
    for key, value, why in [("epochs", 4, "takes one pass over each rollout batch"),
                            ("minibatch", 2, "takes the whole rollout batch as its one minibatch"),
                            ("clip", 0.2, "has no ratio to clip"), ("value_clip", 0.5, "fits the value head unclipped")]:
        with pytest.raises(ConfigError, match=rf"^config: train\.ppo\.{key}: variant a2c {why}.*drop {key}={value}, or use "
                                              "variant ppo$"):
            load_config(None, ["train.algo=ppo", "train.ppo.variant=a2c", f"train.ppo.{key}={value}"])
    with pytest.raises(ConfigError, match=r"train\.ppo\.variant: Input should be 'ppo' or 'a2c'"):
        load_config(None, ["train.algo=ppo", "train.ppo.variant=trpo"])


@pytest.mark.slow
def test_a2c_takes_one_unclipped_step_per_rollout_batch(tiny_chat_model_dir, tmp_path, one_thread, monkeypatch):
    steps = []
    real_step = torch.optim.AdamW.step

    def counted(self, *args, **kwargs):
        steps.append(1)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counted)
    cfg = TrainConfig(algo="ppo", lora={"enabled": False}, learning_rate=3e-3, precision="fp32",
                      rl={"rollout_prompts": 8, "max_new_tokens": MAX_NEW, "kl_coef": 0.05, "steps": 6},
                      ppo={"variant": "a2c"})
    out = tmp_path / "a2c"
    result = PPOTrainer(cfg, seed=0, reward=lambda: lambda p, r: [len(x) / MAX_NEW for x in r]).train(
        TrainInputs(prompts=PROMPTS), tiny_chat_model_dir, out)
    stats = [json.loads(line) for line in (out / "ppo_stats.jsonl").read_text().splitlines()]
    # One optimizer step per rollout batch (PPO's defaults would take 4 epochs x 2 minibatches = 8 per batch).
    assert len(steps) == 6 == result.steps and all(s["skipped"] is None for s in stats)
    assert all(s["clip_frac"] is None and s["policy_loss"] is not None and s["value_loss"] > 0 for s in stats)
    assert stats[0]["kl"] == pytest.approx(0.0, abs=1e-5)
    # The step moved the policy: after it, the batch's log-probabilities changed (approx_kl != 0), weights too.
    assert all(s["approx_kl"] != 0.0 for s in stats)
    before = load_file(tiny_chat_model_dir / "model.safetensors")
    after = load_file(out / "merged" / "model.safetensors")
    assert any(not before[k].to(after[k].dtype).equal(after[k]) for k in before)
