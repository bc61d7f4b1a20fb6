"""Trainers: DPO (TRL), reward model, PPO (ours), RLOO/GRPO (TRL). Heavy imports stay inside them."""

from selfplay.errors import SelfplayError


class NonFiniteWeightsError(SelfplayError, RuntimeError):
    """Training produced NaN or inf weights; nothing was saved."""
