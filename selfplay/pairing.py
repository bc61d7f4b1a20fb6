"""Judgements -> preference pairs. Pure: the same inputs always give the same pairs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from pydantic import BaseModel

from selfplay.config import PairingConfig
from selfplay.records import Generation, Judgement, Pair, Prompt


class PairingStats(BaseModel):
    prompts: int  # prompts considered
    pairs: int
    skipped_few_scored: int  # fewer than two responses with a score
    skipped_tie: int  # best - worst below the minimum margin
    mean_margin: float | None  # over the pairs made, judge score units


def make_pairs(cfg: PairingConfig, prompts: Sequence[Prompt], generations: Sequence[Generation],
               judgements: Sequence[Judgement]) -> tuple[list[Pair], PairingStats]:
    """Best vs worst scored response per prompt (Self-Rewarding LMs §2.3), if the gap reaches the margin."""
    gen_by_id = {g.id: g for g in generations}
    scored: dict[str, list[tuple[float, Generation, Judgement]]] = defaultdict(list)
    for j in judgements:
        if j.score is not None and len(j.generation_ids) == 1:
            scored[j.prompt_id].append((j.score, gen_by_id[j.generation_ids[0]], j))
    pairs, few, ties = [], 0, 0
    for prompt in prompts:
        # Sort by score, then id: ties between equal scores break the same way on every rerun.
        ranked = sorted(scored.get(prompt.id, []), key=lambda t: (-t[0], t[1].id))
        if len(ranked) < 2:
            few += 1
            continue
        (best, chosen, jc), (worst, rejected, _) = ranked[0], ranked[-1]
        if best - worst < cfg.min_margin or best == worst:
            ties += 1
            continue
        pairs.append(Pair(
            id=f"{prompt.id}/p", prompt_id=prompt.id, prompt=prompt.text, chosen=chosen.text, rejected=rejected.text,
            chosen_id=chosen.id, rejected_id=rejected.id, chosen_score=best, rejected_score=worst,
            margin=best - worst, judge=jc.judge, template_hash=jc.template_hash,
            constitution_hash=jc.constitution_hash, principle=jc.principle,
        ))
    margins = [p.margin for p in pairs]
    stats = PairingStats(prompts=len(prompts), pairs=len(pairs), skipped_few_scored=few, skipped_tie=ties,
                         mean_margin=sum(margins) / len(margins) if margins else None)
    return pairs, stats
