"""Guards every trainer uses: a step with non-finite gradients is skipped and counted, and weights
that are not finite are never saved."""

from __future__ import annotations

from transformers import TrainerCallback

from selfplay.errors import SelfplayError


class NonFiniteWeightsError(SelfplayError, RuntimeError):
    """Training produced NaN or inf weights; nothing was saved."""


class NonFiniteGradGuard(TrainerCallback):
    """Before each optimizer step: if any gradient is NaN/inf, drop all gradients. torch optimizers skip
    parameters whose grad is None, so the step leaves every weight as it was."""

    def __init__(self) -> None:
        self.skipped_steps = 0

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        import torch

        params = [p for p in model.parameters() if p.grad is not None]
        if params and not all(torch.isfinite(p.grad).all() for p in params):
            for p in params:
                p.grad = None
            self.skipped_steps += 1


def check_finite(model) -> None:
    import torch

    for name, param in model.named_parameters():
        if not torch.isfinite(param).all():
            raise NonFiniteWeightsError(f"parameter {name} is not finite after training; nothing was saved")
