"""Trainers: DPO (TRL), reward model, PPO (ours), RLOO/GRPO (TRL). Heavy imports stay inside them."""


class NonFiniteWeightsError(RuntimeError):
    """Training produced NaN or inf weights; nothing was saved."""
