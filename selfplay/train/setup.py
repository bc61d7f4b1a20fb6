"""What every causal-LM trainer here starts from: the policy's tokenizer (with a pad token), its weights in
fp32 (autocast decides the compute precision), the LoRA config if any, and whether to use bf16."""

from __future__ import annotations

import math
from pathlib import Path

from selfplay.config import TrainConfig
from selfplay.models import bf16_is_fast


def load_policy(policy: Path, cfg: TrainConfig):
    """(tokenizer, model, peft LoraConfig or None, use_bf16) for a trainer starting at `policy`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32)
    peft_config = None
    if cfg.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and bf16_is_fast())
    return tokenizer, model, peft_config, use_bf16


def report_to(cfg: TrainConfig, log_dir: Path) -> str:
    """The trainers' `report_to`; TensorBoard logs go under `log_dir` (transformers 5.19 reads the folder
    from TENSORBOARD_LOGGING_DIR, not from TrainingArguments)."""
    import os

    if cfg.report_to == "tensorboard":
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(log_dir)
    return cfg.report_to


def check_reporting(cfg: TrainConfig) -> None:
    """Preflight: the chosen metrics backend must be importable, so a run does not fail after generating."""
    import importlib.util

    from selfplay.config import ConfigError

    package = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(cfg.report_to)
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(f"train.report_to={cfg.report_to} needs the {package} package: pip install {package}")


def history_mean(history: list[dict], key: str, last: bool) -> float | None:
    """Mean of a logged metric over the first (or last) few steps of a trainer's log history."""
    values = [h[key] for h in history if isinstance(h.get(key), (int, float)) and math.isfinite(h[key])]
    if not values:
        return None
    size = max(1, min(3, len(values) // 2))  # up to 3 steps, and first and last never overlap
    window = values[-size:] if last else values[:size]
    return sum(window) / len(window)
