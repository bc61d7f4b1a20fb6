"""Callbacks every trainer uses: a step with non-finite gradients is skipped and counted, weights that are not finite
are never saved, and a progress bar counts the optimizer steps with the latest loss."""

from __future__ import annotations

from transformers import TrainerCallback

from selfplay.errors import SelfplayError
from selfplay.progress import Bar


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


class StepBar(TrainerCallback):
    """The train stage's progress bar: optimizer steps of the whole run (resumed steps included), rate, time left and
    the latest logged loss (transformers' own tqdm bar is off: TrainingArguments.disable_tqdm)."""

    def __init__(self, label: str = "train") -> None:
        self.label = label
        self.bar: Bar | None = None
        self.done = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = Bar(self.label, total=state.max_steps, unit="step").__enter__()
        self.done = state.global_step
        self.bar.advance(self.done)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar:
            self.bar.advance(state.global_step - self.done)
            self.done = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar and logs and "loss" in logs:
            self.bar.advance(0, loss=float(logs["loss"]))

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar:
            self.bar.__exit__(None, None, None)
            self.bar = None
