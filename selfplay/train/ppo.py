"""PPO for language models, ours: the InstructGPT recipe in one file, read top to bottom.

TRL removed its PPOTrainer, so this is a compact actor-critic after Ziegler et al. 2019 ("Fine-Tuning Language
Models from Human Preferences") and Ouyang et al. 2022 (InstructGPT), with PPO from Schulman et al. 2017:

    for each rollout batch of prompts:
        sample one response per prompt from the policy (transformers generate, temperature T)
        score each response once (a reward model or a program judge): one number per response
        per-token reward = -kl_coef * (log pi(y_t) - log pi_ref(y_t)), plus the score at the last token
        advantages and returns by GAE over the response tokens, with a value head on the policy
        several epochs of minibatches: clipped surrogate loss + clipped value loss
        adapt kl_coef toward a target KL (Ziegler et al. 2019)

train.ppo.variant=a2c is the special case of one epoch and one minibatch (the whole rollout batch): the single step
is on-policy, so the ratio is 1 and there is nothing to clip; the policy loss is -A * log pi (whose gradient is the
surrogate's at ratio 1) and the value loss is unclipped: advantage actor-critic (Mnih et al. 2016) with GAE.

Under `accelerate launch` (launch.launcher=accelerate) every process rolls out and scores a shard of each rollout
batch, and the statistics (advantage whitening, KL, token counts) and gradients are summed over the processes:
each takes the step one process would take on the whole batch (DataParallel below).

Shapes: B responses, T response tokens (right-padded); `mask` is 1 on response tokens (up to and including the
end token) and 0 on padding. Every loss is a mean over response tokens. The reference policy is the policy we
start from: the LoRA-disabled base with LoRA, else a frozen copy.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from selfplay.config import TrainConfig, used
from selfplay.models import bf16_is_fast
from selfplay.progress import progress
from selfplay.records import Prompt, RLStats, TrainInputs, TrainResult, derive_seed, write_records
from selfplay.scale import shard_bounds, under_launch
from selfplay.train.judge_reward import JudgeReward
from selfplay.train.setup import is_quantized, load_causal_lm, lora_config, make_optimizer, save_policy

RewardFn = Callable[[list[str], list[str]], list[float]]  # (prompts, responses) -> one score per response
Reward = RewardFn | JudgeReward  # what an RL trainer optimises: a reward model's scores, or the run's judge's
NO_REWARD_MODEL = "no reward model (no pairs to train one on); policy carried over"


def gated_fraction(reward_fn: RewardFn) -> float | None:
    """With a safety reward model (train.reward_model.safety_path): the fraction of rollouts it rewarded."""
    return getattr(reward_fn, "gated_fraction", None)


# ---------------------------------------------------------------------------------------------------------------
# Pure tensor functions (tested against hand-computed numbers in tests/test_ppo.py)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x, mask, shift_mean: bool = True, total: Callable = lambda t: t):
    """(x - mean) / std over the masked entries (population variance); padding comes back as 0. `total` sums a
    tensor over the processes of a data-parallel run (identity in one), so mean and std are the whole batch's."""
    import torch

    count = total(mask.sum()).clamp(min=1)
    mean = total((x * mask).sum()) / count
    var = total((((x - mean) ** 2) * mask).sum()) / count
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def kl_penalized_rewards(score, logprobs, ref_logprobs, mask, kl_coef: float):
    """Per-token rewards (B, T): -kl_coef * (logp - ref_logp) at every response token (an estimate of the KL
    to the reference whose sum over a response is unbiased), plus the response's score (B,) at its last token
    (Ziegler et al. 2019, eq. 2; InstructGPT eq. 2). Assumes right padding: response tokens come first."""
    import torch

    rewards = -kl_coef * (logprobs - ref_logprobs) * mask
    last = mask.sum(dim=1).long().clamp(min=1) - 1
    rewards[torch.arange(rewards.shape[0], device=rewards.device), last] += score.to(rewards.dtype)
    return rewards


def gae(rewards, values, mask, gamma: float, lam: float):
    """Generalised advantage estimation (Schulman et al. 2016), backwards over the response tokens:
        delta_t = r_t + gamma * V_{t+1} - V_t        (V after the last token = 0: the episode ends)
        A_t     = delta_t + gamma * lam * A_{t+1}
    returns = A + V, the value head's regression target. Both are 0 on padding."""
    import torch

    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        has_next = mask[:, t + 1] if t + 1 < T else torch.zeros_like(next_advantage)
        next_value = values[:, t + 1] * has_next if t + 1 < T else torch.zeros_like(next_advantage)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_advantage * has_next
        advantages[:, t] = next_advantage
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def policy_loss(new_logprobs, old_logprobs, advantages, mask, clip: float):
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7) as a loss: mean over tokens of
    max(-A * ratio, -A * clip(ratio, 1 - clip, 1 + clip)), ratio = exp(new - old)."""
    import torch

    ratio = torch.exp(new_logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    return masked_mean(torch.maximum(unclipped, clipped), mask)


def a2c_policy_loss(new_logprobs, advantages, mask):
    """A2C's policy-gradient loss: mean over tokens of -A * log pi(y_t). Its gradient, -A * grad log pi, is that of
    PPO's surrogate -A * ratio at ratio 1 (grad ratio = ratio * grad log pi), which is all one on-policy step sees."""
    return masked_mean(-advantages * new_logprobs, mask)


def value_loss(values, old_values, returns, mask, clip: float | None):
    """Clipped value loss (as in OpenAI baselines' PPO2): 0.5 * mean over tokens of
    max((V - R)^2, (V_old + clip(V - V_old, -clip, clip) - R)^2), so one batch cannot move a value far.
    clip None (a2c): 0.5 * mean (V - R)^2."""
    import torch

    if clip is None:
        return 0.5 * masked_mean((values - returns) ** 2, mask)
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


@dataclass
class AdaptiveKLController:
    """Ziegler et al. 2019, eq. 3: kl_coef *= 1 + clip(KL / target - 1, -0.2, 0.2) * n_steps / horizon.
    KL above target raises the penalty, below lowers it, at most 20% per `horizon` responses.
    target None = a fixed coefficient."""

    value: float
    target: float | None
    horizon: int

    def update(self, kl: float, n_steps: int) -> float:
        if self.target is not None:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


# ---------------------------------------------------------------------------------------------------------------
# Records


class PPOStepStats(BaseModel):
    """One line of ppo_stats.jsonl: one rollout batch and its PPO epochs."""

    step: int  # 1-based rollout batch
    responses: int
    skipped: str | None = None  # why the batch did not update the policy (e.g. a NaN reward)
    reward_mean: float | None  # mean score per response (reward model or program), before the KL penalty
    reward_std: float | None
    kl: float | None  # mean over responses of sum_t (logp - ref_logp), nats per response (what the KL controller targets)
    kl_per_token: float | None = None  # the same sum over every response token, nats per token (as TRL's RLOO/GRPO log it)
    kl_coef: float  # the coefficient this batch's rewards used
    policy_loss: float | None  # mean over the batch's minibatch steps
    value_loss: float | None
    clip_frac: float | None  # 0..1, fraction of response tokens whose ratio left [1 - clip, 1 + clip]; None for a2c
    approx_kl: float | None  # mean (old - new) logp after the update: how far PPO moved the policy, nats per token
    response_tokens: float  # mean response length, tokens (including the end token)
    ended: float  # 0..1, fraction of responses that produced the end token before rl.max_new_tokens
    seconds: float


# ---------------------------------------------------------------------------------------------------------------
# Data parallel: the processes of an `accelerate launch` share every rollout batch


@dataclass
class DataParallel:
    """Process `rank` of `world` (1 of 1 when not launched). Each process rolls out a contiguous shard of every
    rollout batch; sums of statistics and of gradients are all-reduced, so every process takes exactly the step
    one process would take on the whole batch. By hand rather than DDP: the policy also generates and runs with
    its adapter disabled (the reference), which a DDP wrapper would have to be unwrapped for every time."""

    rank: int
    world: int

    @classmethod
    def current(cls) -> DataParallel:

        if not under_launch():
            return cls(0, 1)
        from accelerate import PartialState

        state = PartialState()  # the process group torchrun set up (gloo on CPU), shared with the TRL trainers
        return cls(state.process_index, state.num_processes)

    def shard(self, count: int) -> range:

        bounds = shard_bounds(count, self.world)
        return range(*bounds[self.rank]) if self.rank < len(bounds) else range(0)

    def total(self, x):
        """The sum of tensor `x` over the processes."""
        if self.world == 1:
            return x
        import torch.distributed as dist

        x = x.clone()
        dist.all_reduce(x)
        return x

    def gather(self, values: list) -> list:
        """Every process's `values`, concatenated in rank order (the shards' order)."""
        if self.world == 1:
            return list(values)
        import torch.distributed as dist

        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, list(values))
        return [v for part in parts for v in part]

    def sum_gradients(self, params) -> None:
        """Each gradient becomes its sum over the processes (missing = zero: a shard without rows in a minibatch)."""
        if self.world == 1:
            return
        import torch

        flat = self.total(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]))
        offset = 0
        for p in params:
            p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()


# ---------------------------------------------------------------------------------------------------------------
# The trainer


@dataclass
class Rollout:
    """One rollout batch: prompts left-padded to width P, responses right-padded to width T."""

    # torch tensors (typed Any: torch is imported inside the trainer only)
    query: Any  # (B, P) prompt ids
    query_mask: Any  # (B, P)
    response: Any  # (B, T) response ids, pad after the end token
    mask: Any  # (B, T) 1 on response tokens
    ended: Any  # (B,) bool: the response produced the end token
    texts: list[str]  # decoded responses


@dataclass
class PPOTrainer:
    cfg: TrainConfig
    seed: int
    reward: Callable[[], Reward | None]  # the reward model, or the run's judge, to optimise; None = no reward model

    def train(self, inputs: TrainInputs, policy_dir: Path, out_dir: Path) -> TrainResult:
        prompts = inputs.prompts
        if not prompts:
            raise ValueError("PPO needs at least one prompt to sample rollouts from")
        reward_fn = self.reward()
        if reward_fn is None:
            return TrainResult.skip("ppo", policy_dir, NO_REWARD_MODEL, rl=RLStats(prompts=0))
        import torch
        from transformers import AutoTokenizer

        cfg, started, out_dir = self.cfg, time.monotonic(), Path(out_dir)
        rl, ppo = used(cfg.rl, "train.rl"), used(cfg.ppo, "train.ppo")
        torch.manual_seed(derive_seed(self.seed, "ppo-init"))
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and bf16_is_fast())
        tokenizer = AutoTokenizer.from_pretrained(policy_dir)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = load_causal_lm(policy_dir, cfg)  # fp32, or train.lora.quantize's k-bit base already on its GPU
        if not is_quantized(model):
            model = model.to(device)
        if cfg.lora.enabled:
            from peft import get_peft_model

            # No dropout: the ratio new/old must be exactly 1 on the first minibatch (Ziegler et al. 2019 also
            # turned dropout off). The reference is this model with the adapter disabled.
            model = get_peft_model(model, lora_config(cfg.lora, model, dropout=0.0))
            reference = None
        else:
            reference = copy.deepcopy(model).requires_grad_(False)
        model.eval()  # dropout off everywhere, for the same reason; gradients still flow
        # The value head: a linear map of the last hidden state to the expected return. It shares the policy's
        # trunk (as TRL's old value-head model did); InstructGPT used a separate model initialised from the RM.
        hidden = model.config.get_text_config().hidden_size
        value_head = torch.nn.Linear(hidden, 1).to(device)
        torch.nn.init.zeros_(value_head.weight)
        torch.nn.init.zeros_(value_head.bias)
        params = [p for p in model.parameters() if p.requires_grad] + list(value_head.parameters())
        optimizer = make_optimizer(params, cfg)  # train.optim: AdamW, or bitsandbytes' 8-bit AdamW
        kl_ctl = AdaptiveKLController(rl.kl_coef, ppo.target_kl, ppo.kl_horizon)

        def forward(roll: Rollout, rows, use_reference: bool = False):
            """Log-probabilities (at the sampling temperature) of the response tokens, and values, for `rows`."""
            ids = torch.cat([roll.query[rows], roll.response[rows]], dim=1)
            attn = torch.cat([roll.query_mask[rows], roll.mask[rows]], dim=1)
            positions = (attn.cumsum(dim=1) - 1).clamp(min=0)  # left padding: positions start at the prompt
            T = roll.response.shape[1]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                if use_reference and reference is not None:
                    out = reference(input_ids=ids, attention_mask=attn, position_ids=positions, logits_to_keep=T + 1)
                elif use_reference:
                    with model.disable_adapter():
                        out = model(input_ids=ids, attention_mask=attn, position_ids=positions, logits_to_keep=T + 1)
                else:
                    out = model(
                        input_ids=ids,
                        attention_mask=attn,
                        position_ids=positions,
                        logits_to_keep=T + 1,
                        output_hidden_states=True,
                    )
            # Logits at position P-1+t predict response token t; drop the prediction after the last token.
            logits = out.logits[:, :-1].float() / rl.temperature
            logprobs = torch.log_softmax(logits, dim=-1).gather(-1, roll.response[rows].unsqueeze(-1)).squeeze(-1)
            if use_reference:
                return logprobs, None
            states = out.hidden_states[-1][:, -(T + 1) : -1].float()
            return logprobs, value_head(states).squeeze(-1)

        prompts = list(prompts)
        order = list(range(len(prompts)))
        random.Random(derive_seed(self.seed, "ppo-order")).shuffle(order)
        R = rl.rollout_prompts
        n_steps = rl.steps or max(1, math.ceil(len(prompts) / R))
        history: list[PPOStepStats] = []
        nan_steps = 0  # minibatch steps skipped for a non-finite gradient
        dp = DataParallel.current()
        for step in progress(range(1, n_steps + 1), "train", unit="step"):
            step_started = time.monotonic()
            batch = [prompts[order[((step - 1) * R + i) % len(order)]] for i in range(min(R, len(prompts)))]
            mine = dp.shard(len(batch))  # this process's rows of the batch (all of them in one process)
            roll = self._rollout(
                model, tokenizer, [batch[i] for i in mine], [derive_seed(self.seed, "ppo-rollout", step, i) for i in mine], device
            )
            unscored: list[int] = []  # rows the judge gave no score (train.rl.reward=judge)
            if isinstance(reward_fn, JudgeReward):
                lengths, prompt_lengths = roll.mask.sum(dim=1).tolist(), roll.query_mask.sum(dim=1).tolist()
                judged = reward_fn.score([batch[i] for i in mine], roll.texts, lengths, prompt_lengths)
                unscored = [row for row, s in enumerate(judged) if s is None]
                scores = [0.0 if s is None else float(s) for s in judged]  # 0.0 reaches no loss: the row is masked below
            else:
                scores = [float(s) for s in reward_fn([batch[i].text for i in mine], roll.texts)]
            base = dict(
                step=step,
                responses=len(batch),
                kl_coef=kl_ctl.value,
                response_tokens=dp.total(roll.mask.sum().float()).item() / len(batch),
                ended=dp.total(roll.ended.float().sum()).item() / len(batch),
            )
            if unscored:  # an unscored rollout takes no part in the advantage, the whitening, the losses or the KL
                roll.mask[unscored] = 0
            bad = len(scores) != len(mine) or not all(math.isfinite(s) for s in scores)
            if dp.total(torch.tensor(float(bad))).item() > 0:
                # A NaN or infinite reward would poison every weight it touches: record the batch and skip it
                # (in every process, so they stay in step).
                why = (
                    f"reward_fn returned {len(scores)} scores for {len(mine)} responses"
                    if len(scores) != len(mine)
                    else f"non-finite reward ({sum(not math.isfinite(s) for s in scores)} of {len(scores)})"
                    if bad
                    else "non-finite reward in another process's shard"
                )
                history.append(
                    PPOStepStats(
                        **base,
                        skipped=why,
                        reward_mean=None,
                        reward_std=None,
                        kl=None,
                        policy_loss=None,
                        value_loss=None,
                        clip_frac=None,
                        approx_kl=None,
                        seconds=round(time.monotonic() - step_started, 2),
                    )
                )
                continue
            score = torch.tensor(scores, device=device)
            rows = torch.arange(len(mine), device=device)
            with torch.no_grad():
                old_logprobs, old_values = forward(roll, rows)
                ref_logprobs, _ = forward(roll, rows, use_reference=True)
                rewards = kl_penalized_rewards(score, old_logprobs, ref_logprobs, roll.mask, kl_ctl.value)
                advantages, returns = gae(rewards, old_values, roll.mask, ppo.gamma, ppo.lam)
                if ppo.whiten_advantages:
                    advantages = whiten(advantages, roll.mask, total=dp.total)
                kl_sum = dp.total(((old_logprobs - ref_logprobs) * roll.mask).sum()).item()
                counted = dp.total(torch.tensor(float(len(mine) - len(unscored)))).item()  # the rollouts with a score
                kl, kl_per_token = kl_sum / max(1.0, counted), kl_sum / max(1.0, dp.total(roll.mask.sum().float()).item())

            pg_losses, vf_losses, clip_fracs = [], [], []
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "ppo-minibatch", step))
            for _ in range(ppo.epochs):  # a2c: one epoch of one minibatch (minibatch None)
                for mb in torch.randperm(len(batch), generator=generator).to(device).split(ppo.minibatch or len(batch)):
                    # This process's rows of the minibatch; the loss is a mean over the whole minibatch's response
                    # tokens, so each process weighs its part by its share of them and the gradients are summed.
                    own = mb[(mb >= mine.start) & (mb < mine.stop)] - mine.start
                    mask = roll.mask[own]
                    share = mask.sum() / dp.total(mask.sum()).clamp(min=1)
                    optimizer.zero_grad()
                    pg = vf = clipped = torch.zeros((), device=device)
                    if len(own):
                        new_logprobs, values = forward(roll, own)
                        if ppo.clip is None:  # a2c
                            pg = a2c_policy_loss(new_logprobs, advantages[own], mask) * share
                        else:
                            pg = policy_loss(new_logprobs, old_logprobs[own], advantages[own], mask, ppo.clip) * share
                            with torch.no_grad():
                                ratio = torch.exp(new_logprobs - old_logprobs[own])
                                clipped = masked_mean(((ratio - 1.0).abs() > ppo.clip).float(), mask) * share
                        vf = value_loss(values, old_values[own], returns[own], mask, ppo.value_clip) * share
                        (pg + ppo.value_coef * vf).backward()
                    dp.sum_gradients(params)
                    grad_norm = torch.nn.utils.clip_grad_norm_(params, ppo.max_grad_norm)
                    if not torch.isfinite(grad_norm):  # a NaN/inf gradient: skip this step, count it, keep the weights
                        nan_steps += 1
                        continue
                    optimizer.step()
                    clip_fracs.append(dp.total(clipped.detach()).item())
                    pg_losses.append(dp.total(pg.detach()).item())
                    vf_losses.append(dp.total(vf.detach()).item())
            with torch.no_grad():
                new_logprobs, _ = forward(roll, rows)
                approx_kl = (
                    dp.total(((old_logprobs - new_logprobs) * roll.mask).sum()) / dp.total(roll.mask.sum()).clamp(min=1)
                ).item()
            every_score = torch.tensor(dp.gather([s for row, s in enumerate(scores) if row not in unscored]))
            history.append(
                PPOStepStats(
                    **base,
                    skipped=None if pg_losses else "every minibatch had a non-finite gradient",
                    reward_mean=every_score.mean().item(),
                    reward_std=every_score.std().item() if len(every_score) > 1 else 0.0,
                    kl=kl,
                    kl_per_token=kl_per_token,
                    policy_loss=_mean(pg_losses),
                    value_loss=_mean(vf_losses),
                    clip_frac=_mean(clip_fracs) if ppo.clip is not None else None,
                    approx_kl=approx_kl,
                    seconds=round(time.monotonic() - step_started, 2),
                )
            )
            kl_ctl.update(kl, len(batch))

        return self._save(model, tokenizer, history, kl_ctl, nan_steps, len(prompts), started, out_dir, reward_fn)

    def _rollout(self, model, tokenizer, batch: Sequence[Prompt], seeds: Sequence[int], device) -> Rollout:
        """Samples one response per prompt at rl.temperature (no top-k, no top-p: the distribution the losses use),
        each prompt from its own seeded generator, so that a response does not depend on which prompts share its
        batch and a data-parallel shard rolls out exactly what one process would. transformers' generate() draws
        every row from one random stream, hence this loop over the KV cache. Prompts are chat-formatted, left-padded."""
        import torch

        rl = used(self.cfg.rl, "train.rl")
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": p.text}], tokenize=False, add_generation_prompt=True)
            for p in batch
        ]
        tokenizer.padding_side = "left"
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        ids, attn, cache, steps = enc["input_ids"], enc["attention_mask"], None, []
        finished = torch.zeros(len(batch), dtype=torch.bool, device=device)
        with torch.no_grad():
            for _ in range(rl.max_new_tokens):
                positions = (attn.cumsum(dim=1) - 1).clamp(min=0)[:, -ids.shape[1] :]
                out = model(
                    input_ids=ids,
                    attention_mask=attn,
                    position_ids=positions,
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )  # the next token's logits only, not the whole prompt's (B, P, vocab)
                cache = out.past_key_values
                probs = torch.softmax(out.logits[:, -1].float() / rl.temperature, dim=-1)
                token = torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)])
                token = torch.where(finished, torch.full_like(token, pad), token)
                steps.append(token)
                finished |= token == eos
                if finished.all():
                    break
                ids, attn = token[:, None], torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
        response = torch.stack(steps, dim=1)
        # The response runs up to and including the first end token; padding follows it.
        is_end = response == eos
        has_end = is_end.any(dim=1)
        length = torch.where(
            has_end, is_end.int().argmax(dim=1) + 1, torch.full_like(has_end, response.shape[1], dtype=torch.long)
        )
        mask = (torch.arange(response.shape[1], device=device)[None, :] < length[:, None]).long()
        response = torch.where(mask.bool(), response, torch.full_like(response, pad))
        decoded = [tokenizer.decode(response[i, : length[i]], skip_special_tokens=True) for i in range(len(batch))]
        return Rollout(
            query=enc["input_ids"], query_mask=enc["attention_mask"], response=response, mask=mask, ended=has_end, texts=decoded
        )

    def _save(
        self,
        model,
        tokenizer,
        history: list[PPOStepStats],
        kl_ctl: AdaptiveKLController,
        nan_steps: int,
        n_prompts: int,
        started: float,
        out_dir: Path,
        reward_fn: Reward,
    ) -> TrainResult:

        cfg = self.cfg
        merged_dir, adapter_dir = save_policy(model, tokenizer, out_dir, adapter=cfg.lora.enabled)  # refuses non-finite weights
        stats_path = out_dir / "ppo_stats.jsonl"
        write_records(stats_path, history)

        done = [h for h in history if h.skipped is None]
        # A step that was not skipped has every statistic (the None checks only say so to the type checker).
        coef = used(cfg.ppo, "train.ppo").value_coef
        losses = [h.policy_loss + coef * h.value_loss for h in done if h.policy_loss is not None and h.value_loss is not None]
        rewards = [h.reward_mean for h in done if h.reward_mean is not None]
        kls = [h.kl_per_token for h in done if h.kl_per_token is not None]
        return TrainResult(
            algo="ppo",
            steps=len(done),
            seconds=round(time.monotonic() - started, 1),
            loss_first=_mean(losses[:3]),
            loss_last=_mean(losses[-3:]),
            nan_steps=nan_steps,
            policy=str(merged_dir),
            adapter=str(adapter_dir) if adapter_dir else None,
            skipped="every rollout batch was skipped (non-finite rewards or gradients); the saved policy is the starting one"
            if not done
            else None,
            rl=RLStats(
                prompts=n_prompts,
                reward_first=_mean(rewards[:3]),
                reward_last=_mean(rewards[-3:]),
                kl_last=_mean(kls[-3:]),
                kl_coef=kl_ctl.value,
                skipped_steps=len(history) - len(done),
                stats=str(stats_path),
                safety_gated=None if isinstance(reward_fn, JudgeReward) else gated_fraction(reward_fn),
                **(reward_fn.record() if isinstance(reward_fn, JudgeReward) else {}),
            ),
        )
