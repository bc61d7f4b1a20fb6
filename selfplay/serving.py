"""Served = trained: the precision a checkpoint is served at, and a check that serving keeps its update.

Trained policies are saved in fp32 because a few optimizer steps move a weight by less than bf16's
rounding step: served in bf16, the verifiable proof config's first trained policy kept only part of its
update (the rounding error was 65% of the update's norm over its 210 changed tensors; docs/design.md).
So `dtype: auto` serves a checkpoint at the precision it was saved in (bf16 only where the checkpoint
is bf16 and the hardware is fast at it), and every iteration records how much of the update the served
copy keeps.
"""

from __future__ import annotations

import json
import math
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from selfplay.models import bf16_is_fast
from selfplay.policy import ADAPTER_WEIGHTS, base_checkpoint, is_adapter

# Above this share of the update's norm lost to rounding, the served policy is not the one trained.
ROUNDING_WARN = 0.05


def stored_dtype(model_dir: Path) -> str | None:
    """The dtype a checkpoint's weights were saved in, from its config.json (None when it does not say)."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    dtype = config.get("dtype") or config.get("torch_dtype")
    return dtype if isinstance(dtype, str) else None


def served_dtype(requested: str, model_dir: Path) -> str:
    """The dtype to serve `model_dir` at. `auto` never rounds a checkpoint below the precision it was saved
    in: a bf16 checkpoint is served in bf16 where bf16 is fast, everything else in fp32. An adapter policy is served
    at its base's precision (vLLM runs the adapter at the model's dtype)."""
    if requested != "auto":
        return requested
    return "bfloat16" if stored_dtype(base_checkpoint(model_dir)) == "bfloat16" and bf16_is_fast() else "float32"


class ServingCheck(BaseModel):
    """How much of the last training update the policy keeps at the precision it is served at."""

    policy: str  # the checkpoint served this iteration
    start: str | None  # the checkpoint its training started from; None = no update (the base model)
    stored_dtype: str | None
    served_dtype: str
    changed_tensors: int = 0  # tensors the update changed
    update_norm: float | None = None  # ||trained - start||, over every changed tensor (fp32)
    rounding_error: float | None = None  # ||served - trained|| / ||trained - start||; 0 = the update is kept exactly
    warning: str | None = None


def check_serving(policy: Path, start: Path | None, dtype: str) -> ServingCheck:
    """Rounds the trained weights to the served dtype and compares the error with the update itself, tensor by
    tensor (one tensor in memory at a time, so a large model costs reading its files, not holding them)."""
    check = ServingCheck(
        policy=str(policy), start=str(start) if start else None, stored_dtype=stored_dtype(policy), served_dtype=dtype
    )
    if start is None or Path(start).resolve() == Path(policy).resolve():
        return check  # nothing was trained into this checkpoint
    if is_adapter(policy):
        return _with_error(check, *_adapter_rounding(policy, start, dtype))
    import torch
    from safetensors import safe_open

    served = getattr(torch, dtype)
    update_sq = error_sq = 0.0
    changed = 0
    with ExitStack() as stack:
        start_files = [
            stack.enter_context(safe_open(str(path), framework="pt")) for path in sorted(Path(start).glob("*.safetensors"))
        ]
        before = {name: f for f in start_files for name in f.keys()}
        for path in sorted(Path(policy).glob("*.safetensors")):
            trained_file = stack.enter_context(safe_open(str(path), framework="pt"))
            for name in trained_file.keys():
                if name not in before:
                    continue
                trained = trained_file.get_tensor(name).float()
                update = trained - before[name].get_tensor(name).float()
                if not update.any():
                    continue
                changed += 1
                update_sq += update.square().sum().item()
                error_sq += (trained.to(served).float() - trained).square().sum().item()
    return _with_error(check, changed, update_sq, error_sq)


def _with_error(check: ServingCheck, changed: int, update_sq: float, error_sq: float) -> ServingCheck:
    if not changed or not update_sq:
        return check
    error = math.sqrt(error_sq / update_sq)
    warning = None
    if error > ROUNDING_WARN:
        warning = (
            f"serving {check.policy} in {check.served_dtype} loses {error:.0%} of its training update to rounding "
            f"(over {ROUNDING_WARN:.0%}); set generation.dtype=float32 (or auto) to serve the policy trained"
        )
    return check.model_copy(
        update={
            "changed_tensors": changed,
            "update_norm": round(math.sqrt(update_sq), 6),
            "rounding_error": round(error, 6),
            "warning": warning,
        }
    )


def _adapter_rounding(policy: Path, start: Path, dtype: str) -> tuple[int, float, float]:
    """An adapter policy: the update is the change of its weight deltas (scale * B @ A per adapted layer) from the
    start's (zero when training started from a full checkpoint), and serving rounds A and B to `dtype` (vLLM runs
    LoRA at the model's dtype; the base is never changed, so it adds no error)."""
    import torch
    from safetensors.torch import load_file

    def deltas(folder: Path) -> dict[str, tuple[float, Any, Any]]:
        if not is_adapter(folder):
            return {}
        config = json.loads((folder / "adapter_config.json").read_text())
        scale = config.get("lora_alpha", 1) / config.get("r", 1)
        weights = load_file(str(folder / ADAPTER_WEIGHTS))
        return {
            name: (scale, weights[name], weights[name.replace("lora_A", "lora_B")])
            for name in weights
            if "lora_A" in name and name.replace("lora_A", "lora_B") in weights
        }

    served = getattr(torch, dtype)
    before = deltas(Path(start))
    changed, update_sq, error_sq = 0, 0.0, 0.0
    for name, (scale, a, b) in deltas(policy).items():
        trained = scale * (b.float() @ a.float())
        old = before.get(name)
        update = trained - (old[0] * (old[2].float() @ old[1].float()) if old else 0.0)
        if not update.any():
            continue
        changed += 1
        update_sq += update.square().sum().item()
        error_sq += (scale * (b.to(served).float() @ a.to(served).float()) - trained).square().sum().item()
    return changed, update_sq, error_sq
