"""KTO (Ethayarajh et al. 2024) through TRL's KTOTrainer: learning from single responses labelled desirable or
undesirable, where DPO needs two responses to one prompt with a preference between them.

Each judged response of the iteration (non-empty, with a score) becomes one example: desirable when it scores at
or above the threshold, undesirable below it. The threshold is train.kto.threshold in the scores' own units, or by
default the iteration's median cut (`even_cut`): of the scores present, the one that splits the responses most
evenly. We default to the median, not the midpoint of the judge's scale, because the scale is not the trainer's
to know for every judge (rubric 1..5, program judges 0..1, pairwise win rates) and a self-judging model's scores
bunch together (the default model's log-prob scores span about 2.0-3.4 of 1..5, docs/design.md): a fixed midpoint
would call nearly every response one kind. An iteration whose responses all
land on one side (e.g. every score equal) teaches nothing to tell apart and is a recorded skip.

The human seed set's pointwise lines ({prompt, response, score}, seed.ScoredResponse) train the same way in the
seed warm-up (human.seed_warmup=kto, `KTOTrainer.train_scored`), the threshold then in the labellers' units.

KTO's reference point is a KL estimate from mismatched pairs: TRL pairs each example's prompt with the response of
its neighbour in the batch (the data is read in order). So examples are interleaved across prompts (`interleave`),
and a neighbour's response is, wherever the counts allow, an answer to another prompt. The reference policy is the
starting one (the adapter disabled, as in dpo.py). examples.jsonl in the policy directory holds what was trained on.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from selfplay.config import KTOSection, TrainConfig, used
from selfplay.filtering import response_scores
from selfplay.records import Generation, Judgement, KTOStats, Prompt, Record, TrainInputs, TrainResult, write_records
from selfplay.seed import ScoredResponse
from selfplay.train.dpo import fit, trl_args
from selfplay.train.setup import history_mean, load_policy


class KTOExample(Record):
    """One response KTO trains on, with its label."""

    id: str  # the generation's id (or the seed line's)
    prompt_id: str
    prompt: str
    completion: str
    score: float  # in the scores' units: the judge's, or the labellers' for seed lines
    desirable: bool  # score >= the threshold

    def to_trl(self) -> dict:
        """TRL's conversational unpaired-preference format; the trainer applies the chat template."""
        return {
            "prompt": [{"role": "user", "content": self.prompt}],
            "completion": [{"role": "assistant", "content": self.completion}],
            "label": self.desirable,
        }


def even_cut(scores: Sequence[float]) -> float | None:
    """The median cut: of the scores present, the one that splits `scores` most evenly into >= it and below it
    (the lower one of two equally even cuts, so an odd count's median is desirable). None for no scores.

    [1, 2, 3, 4] -> 3 (2 and 2); [1, 2, 3] -> 2 (2 and 1); [0, 0, 0, 1, 1] -> 1 (2 and 3); [5, 5] -> 5 (2 and 0)."""
    if not scores:
        return None
    total = len(scores)
    return min(sorted(set(scores)), key=lambda cut: abs(2 * sum(s >= cut for s in scores) - total))


Row = tuple[str, str, str, str, float]  # id, prompt id, prompt, response, score


def labelled(
    rows: Sequence[Row], threshold: float | None, unscored: int = 0, empty: int = 0
) -> tuple[list[KTOExample], KTOStats]:
    """Each scored response labelled against `threshold` (None = the median cut of their scores), interleaved
    across prompts. Pure."""
    cut = threshold if threshold is not None else even_cut([row[4] for row in rows])
    examples = (
        []
        if cut is None
        else [
            KTOExample(id=rid, prompt_id=pid, prompt=prompt, completion=text, score=score, desirable=score >= cut)
            for rid, pid, prompt, text, score in rows
        ]
    )
    desirable = sum(e.desirable for e in examples)
    stats = KTOStats(
        examples=len(examples),
        desirable=desirable,
        undesirable=len(examples) - desirable,
        threshold=cut,
        unscored=unscored,
        empty=empty,
    )
    return interleave(examples), stats


def kto_examples(
    prompts: Sequence[Prompt], generations: Sequence[Generation], judgements: Sequence[Judgement], threshold: float | None
) -> tuple[list[KTOExample], KTOStats]:
    """The iteration's non-empty, scored responses to `prompts`, labelled (see `labelled`). Pure."""
    texts = {p.id: p.text for p in prompts}
    scores = response_scores(judgements)
    rows: list[Row] = []
    unscored = empty = 0
    for g in generations:
        if g.prompt_id not in texts:
            continue
        if not g.text.strip():  # never judged, never trained on
            empty += 1
        elif g.id not in scores:
            unscored += 1
        else:
            rows.append((g.id, g.prompt_id, texts[g.prompt_id], g.text, scores[g.id][0]))
    return labelled(rows, threshold, unscored=unscored, empty=empty)


def seed_examples(scored: Sequence[ScoredResponse], threshold: float | None) -> tuple[list[KTOExample], KTOStats]:
    """The human seed set's pointwise lines, labelled by their scores (see `labelled`). Pure."""
    return labelled([(s.id, s.prompt_id, s.prompt, s.response, s.score) for s in scored], threshold)


def interleave(examples: Sequence[KTOExample]) -> list[KTOExample]:
    """Round robin over the prompts, in order of first appearance: every prompt's first response, then every
    prompt's second, ... so neighbours answer different prompts while more than one prompt has responses left."""
    by_prompt: dict[str, list[KTOExample]] = defaultdict(list)
    for e in examples:
        by_prompt[e.prompt_id].append(e)
    rounds = max((len(group) for group in by_prompt.values()), default=0)
    return [group[i] for i in range(rounds) for group in by_prompt.values() if i < len(group)]


def kto_weights(kto: KTOSection, desirable: int, undesirable: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight): as configured, or with both None balanced by the counts, the rarer
    kind weighted up so weight x count is equal (the low end of the range TRL derives from KTO's Eq. 8).

    (desirable=2, undesirable=8) -> (4.0, 1.0); (6, 3) -> (1.0, 2.0); (5, 5) -> (1.0, 1.0)."""
    if kto.desirable_weight is not None or kto.undesirable_weight is not None:
        return kto.desirable_weight or 1.0, kto.undesirable_weight or 1.0
    if not desirable or not undesirable:
        return 1.0, 1.0
    return max(1.0, undesirable / desirable), max(1.0, desirable / undesirable)


def too_few(stats: KTOStats, min_examples: int) -> str | None:
    """Why KTO does not train on these examples (None = it does)."""
    counts = (
        f"{stats.examples} labelled responses ({stats.desirable} desirable, {stats.undesirable} undesirable"
        + (f" at score >= {stats.threshold:g}" if stats.threshold is not None else "")
        + f"; {stats.unscored} without a score, {stats.empty} empty)"
    )
    if stats.examples < min_examples:
        return f"{counts} < train.min_examples={min_examples}: KTO skipped, policy carried over"
    if not stats.desirable or not stats.undesirable:
        return f"{counts}: KTO needs both desirable and undesirable responses; policy carried over"
    return None


@dataclass
class KTOTrainer:
    cfg: TrainConfig
    seed: int

    def trl_config(self, out_dir: Path, use_bf16: bool, weights: tuple[float, float]):
        """TRL's KTOConfig: train.kto's beta and loss, the (desirable, undesirable) loss weights."""
        from trl import KTOConfig

        kto = used(self.cfg.kto, "train.kto")
        return KTOConfig(
            **trl_args(self.cfg, self.seed, out_dir, use_bf16),
            beta=kto.beta,
            loss_type=kto.loss,
            desirable_weight=weights[0],
            undesirable_weight=weights[1],
        )

    def train(self, inputs: TrainInputs, policy: Path, out_dir: Path) -> TrainResult:
        """KTO on the iteration's judged responses."""
        threshold = used(self.cfg.kto, "train.kto").threshold
        return self.fit(*kto_examples(inputs.prompts, inputs.generations, inputs.judgements, threshold), policy, out_dir)

    def train_scored(self, scored: Sequence[ScoredResponse], policy: Path, out_dir: Path) -> TrainResult:
        """KTO on the human seed set's pointwise lines (the seed warm-up, human.seed_warmup=kto)."""
        return self.fit(*seed_examples(scored, used(self.cfg.kto, "train.kto").threshold), policy, out_dir)

    def fit(self, examples: Sequence[KTOExample], stats: KTOStats, policy: Path, out_dir: Path) -> TrainResult:
        """KTO on `examples` from `policy`; too few of them, or only one kind, is a recorded skip."""
        started, out_dir = time.monotonic(), Path(out_dir)
        write_records(out_dir / "examples.jsonl", examples)
        if why := too_few(stats, self.cfg.min_examples):
            return TrainResult.skip("kto", policy, why, kto=stats)
        from datasets import Dataset
        from trl import KTOTrainer as TRLKTOTrainer

        weights = kto_weights(used(self.cfg.kto, "train.kto"), stats.desirable, stats.undesirable)
        tokenizer, model, peft_config, use_bf16 = load_policy(policy, self.cfg)
        trainer = TRLKTOTrainer(
            model=model,
            args=self.trl_config(out_dir, use_bf16, weights),
            train_dataset=Dataset.from_list([e.to_trl() for e in examples]),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        result, history = fit(trainer, self.cfg, "kto", out_dir, started)
        trained = stats.model_copy(
            update={
                "desirable_weight": weights[0],
                "undesirable_weight": weights[1],
                "kl_last": history_mean(history, "kl", last=True),
                "reward_margin": history_mean(history, "rewards/margins", last=True),
            }
        )
        return result.model_copy(update={"kto": trained})
