"""Reference-free preference optimisation on the pairs: ORPO and SimPO, from TRL 1.16's experimental trainers.

    orpo   ORPO (Hong et al. 2024): the chosen responses' NLL plus beta times an odds-ratio term that favours the
           chosen over the rejected response (trl.experimental.orpo.ORPOTrainer)
    simpo  SimPO (Meng et al. 2024): a Bradley-Terry loss on the responses' mean log-probability per token, with a
           target margin gamma (trl.experimental.cpo.CPOTrainer, loss_type="simpo"; cpo_alpha = train.simpo.sft_weight,
           0 for SimPO as published)

Neither has a reference model or a KL term: nothing holds the policy near the previous iteration's but the
learning rate and the number of steps. TRL 1.16 keeps both trainers in trl.experimental (APIs that may change
without deprecation); we silence its import notice here, and docs/design.md records the versions relied on.
The rest (LoRA, the merged copy, resuming, the result) is DPO's (dpo.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from selfplay.config import TrainConfig, used
from selfplay.records import TrainInputs, TrainResult
from selfplay.train.dpo import too_few_pairs, train_on_pairs, trl_args


@contextmanager
def quiet_experimental() -> Iterator[None]:
    """Imports from trl.experimental without TRL's notice that its APIs may change (the module says so once)."""
    from trl.import_utils import TRLExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TRLExperimentalWarning)
        yield


@dataclass
class ORPOTrainer:
    cfg: TrainConfig
    seed: int

    def trl_config(self, out_dir: Path, use_bf16: bool):
        """TRL's ORPOConfig, beta = train.orpo.beta (the paper's lambda)."""
        with quiet_experimental():
            from trl.experimental.orpo import ORPOConfig
        return ORPOConfig(**trl_args(self.cfg, self.seed, out_dir, use_bf16), beta=used(self.cfg.orpo, "train.orpo").beta)

    def train(self, inputs: TrainInputs, policy: Path, out_dir: Path) -> TrainResult:
        """ORPO on `inputs.pairs`; fewer than train.min_pairs and the policy is carried over."""
        if skipped := too_few_pairs("orpo", self.cfg, inputs.pairs, policy):
            return skipped
        with quiet_experimental():
            from trl.experimental.orpo import ORPOTrainer as TRLORPOTrainer
        return train_on_pairs("orpo", self.cfg, inputs.pairs, policy, out_dir, self.trl_config, TRLORPOTrainer)


@dataclass
class SimPOTrainer:
    cfg: TrainConfig
    seed: int

    def trl_config(self, out_dir: Path, use_bf16: bool):
        """TRL's CPOConfig for SimPO: loss_type=simpo, beta, simpo_gamma = train.simpo.gamma, cpo_alpha = sft_weight."""
        with quiet_experimental():
            from trl.experimental.cpo import CPOConfig
        simpo = used(self.cfg.simpo, "train.simpo")
        return CPOConfig(
            **trl_args(self.cfg, self.seed, out_dir, use_bf16),
            loss_type="simpo",
            beta=simpo.beta,
            simpo_gamma=simpo.gamma,
            cpo_alpha=simpo.sft_weight,
        )

    def train(self, inputs: TrainInputs, policy: Path, out_dir: Path) -> TrainResult:
        """SimPO on `inputs.pairs`; fewer than train.min_pairs and the policy is carried over."""
        if skipped := too_few_pairs("simpo", self.cfg, inputs.pairs, policy):
            return skipped
        with quiet_experimental():
            from trl.experimental.cpo import CPOTrainer
        return train_on_pairs("simpo", self.cfg, inputs.pairs, policy, out_dir, self.trl_config, CPOTrainer)
