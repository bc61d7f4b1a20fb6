"""Trainers: one file per algorithm, each a `Trainer`; `make_trainer` picks one by `train.algo`.

    dpo             dpo.py    iterative DPO on the pairs, any of TRL's DPO losses (TRL DPOTrainer)
    kto             kto.py    KTO on single judged responses, desirable or undesirable by score (TRL KTOTrainer)
    orpo / simpo    orpo.py   ORPO / SimPO on the pairs, reference-free (TRL's experimental ORPOTrainer / CPOTrainer)
    ppo             ppo.py    our PPO against a reward model trained on the pairs (InstructGPT recipe)
    rloo / grpo     rloo.py   TRL's RLOOTrainer / GRPOTrainer against that reward model, or the run's judge
                              (judge_reward.py: train.rl.reward=judge, e.g. the instruction checkers: RLVR)
    rejection-sft   sft.py    fine-tuning on the best judged responses (Llama 2)
    rest            sft.py    ReST's Improve steps on the judged responses (Gulcehre et al. 2023)
    revision-sft    sft.py    fine-tuning on the chosen side of the pairs (Constitutional AI's supervised stage)
    hir             hir.py    fine-tuning on hindsight-relabelled and passing responses (HIR, Zhang et al. 2023)

Heavy imports (torch, transformers, TRL, peft) stay inside the trainers' methods.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from selfplay.config import TrainConfig
from selfplay.records import TrainInputs, TrainResult
from selfplay.train.dpo import DPOTrainer
from selfplay.train.hir import HIRTrainer
from selfplay.train.kto import KTOTrainer
from selfplay.train.orpo import ORPOTrainer, SimPOTrainer
from selfplay.train.ppo import PPOTrainer, Reward
from selfplay.train.rloo import GroupRLTrainer
from selfplay.train.sft import ChosenSFTTrainer, RejectionSFTTrainer, ReSTTrainer


class Trainer(Protocol):
    def train(self, inputs: TrainInputs, policy: Path, out_dir: Path) -> TrainResult:
        """Trains from `policy` (a checkpoint directory) and saves into `out_dir`; the result names the policy the
        next iteration generates with (the starting one, carried over, when it did not train)."""
        ...


def make_trainer(cfg: TrainConfig, seed: int, reward: Callable[[], Reward | None]) -> Trainer:
    """The trainer of `cfg.algo`. `reward` gives what the RL algorithms optimise: a reward function, or the run's judge
    (train.rl.reward=judge); None = there is nothing to train a reward model on. It is called only by them, and only
    when they train."""
    match cfg.algo:
        case "dpo":
            return DPOTrainer(cfg, seed)
        case "kto":
            return KTOTrainer(cfg, seed)
        case "orpo":
            return ORPOTrainer(cfg, seed)
        case "simpo":
            return SimPOTrainer(cfg, seed)
        case "ppo":
            return PPOTrainer(cfg, seed, reward)
        case "rloo" | "grpo":
            return GroupRLTrainer(cfg, seed, reward)
        case "rejection-sft":
            return RejectionSFTTrainer(cfg, seed)
        case "rest":
            return ReSTTrainer(cfg, seed)
        case "revision-sft":
            return ChosenSFTTrainer(cfg, seed, algo="revision-sft")
        case "hir":
            return HIRTrainer(cfg, seed)
