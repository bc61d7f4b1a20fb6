"""Judgements -> preference pairs. Pure: the same inputs always give the same pairs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

from pydantic import BaseModel

from selfplay.config import PairingConfig
from selfplay.records import Generation, Judgement, Pair, Prompt


class PairingStats(BaseModel):
    prompts: int  # prompts considered
    pairs: int
    skipped_few_scored: int  # fewer than two responses with a score
    skipped_tie: int  # best - worst below the minimum margin (with max_length_gap: no pair within it reached the margin)
    mean_margin: float | None  # over the pairs made, judge score units
    revised: int = 0  # pairs whose chosen side is a revision (pairing.revise)


# (prompt, response record) -> (revised response, its judge score), or None when there is no revision to make.
Reviser = Callable[[Prompt, Generation], "tuple[str, float] | None"]


def make_pairs(
    cfg: PairingConfig,
    prompts: Sequence[Prompt],
    generations: Sequence[Generation],
    judgements: Sequence[Judgement],
    revise: Reviser | None = None,
) -> tuple[list[Pair], PairingStats]:
    """Best vs worst scored response per prompt (Self-Rewarding LMs §2.3), if the gap reaches the margin;
    with `max_length_gap`, the widest-margin pair whose lengths are that close (see widest_pair).

    With `revise` (pairing.revise), the best response is offered for revision first: when it comes back
    revised, scoring at least min_margin above it, the pair is revision (chosen) vs that response, so a
    prompt whose samples all fail still teaches the fix. A best response that needs no revision (it follows
    everything) or cannot be revised falls back to best vs worst. Pure as long as `revise` is."""
    gen_by_id = {g.id: g for g in generations}
    scored: dict[str, list[tuple[float, Generation, Judgement]]] = defaultdict(list)
    for j in judgements:
        if j.score is not None and len(j.generation_ids) == 1:
            scored[j.prompt_id].append((j.score, gen_by_id[j.generation_ids[0]], j))
    pairs, few, ties, revised = [], 0, 0, 0
    for prompt in prompts:
        # Sort by score, then id: ties between equal scores break the same way on every rerun.
        ranked = sorted(scored.get(prompt.id, []), key=lambda t: (-t[0], t[1].id))
        if revise is not None and ranked:
            best, original, judged = ranked[0]
            revision = revise(prompt, original)
            if revision is not None and revision[1] - best >= max(cfg.min_margin, 1e-9):
                text, score = revision
                pairs.append(
                    Pair(
                        id=f"{prompt.id}/p",
                        prompt_id=prompt.id,
                        prompt=prompt.text,
                        chosen=text,
                        rejected=original.text,
                        chosen_id=f"{original.id}/revision",
                        rejected_id=original.id,
                        chosen_score=score,
                        rejected_score=best,
                        margin=score - best,
                        judge=f"{judged.judge}+revision",
                        template_hash=judged.template_hash,
                    )
                )
                revised += 1
                continue
        if len(ranked) < 2:
            few += 1
            continue
        picked = widest_pair(ranked, cfg)
        if picked is None:
            ties += 1
            continue
        (best, chosen, jc), (worst, rejected, _) = picked
        pairs.append(
            Pair(
                id=f"{prompt.id}/p",
                prompt_id=prompt.id,
                prompt=prompt.text,
                chosen=chosen.text,
                rejected=rejected.text,
                chosen_id=chosen.id,
                rejected_id=rejected.id,
                chosen_score=best,
                rejected_score=worst,
                margin=best - worst,
                judge=jc.judge,
                template_hash=jc.template_hash,
                constitution_hash=jc.constitution_hash,
                principle=jc.principle,
            )
        )
    margins = [p.margin for p in pairs]
    stats = PairingStats(
        prompts=len(prompts),
        pairs=len(pairs),
        skipped_few_scored=few,
        skipped_tie=ties,
        mean_margin=sum(margins) / len(margins) if margins else None,
        revised=revised,
    )
    return pairs, stats


def widest_pair(ranked: list[tuple[float, Generation, Judgement]], cfg: PairingConfig):
    """Best vs worst of `ranked` (sorted best first), or with `max_length_gap` the widest-margin pair of
    responses whose token lengths are that close, first in rank order on equal margins; None if the
    margin is not reached."""
    if cfg.max_length_gap is None:
        candidates = [(ranked[0], ranked[-1])]
    else:
        candidates = [
            (a, b)
            for i, a in enumerate(ranked)
            for b in ranked[i + 1 :]
            if abs(a[1].n_tokens - b[1].n_tokens) <= cfg.max_length_gap
        ]
    best = max(candidates, key=lambda ab: ab[0][0] - ab[1][0], default=None)  # max keeps the first of equals
    if best is None or best[0][0] - best[1][0] < cfg.min_margin or best[0][0] == best[1][0]:
        return None
    return best
