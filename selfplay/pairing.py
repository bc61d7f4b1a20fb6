"""Judgements -> preference pairs. Pure: the same inputs always give the same pairs.

The policy's pairs are best against worst per prompt (make_pairs). A reward model may instead learn from every
ordered pair of each prompt's ranking (train.reward_model.pairs=all: ranking_pairs, reward_model_pairs), K scored
responses giving C(K,2) comparisons, each weighted 1/C(K,2) so that every prompt counts alike (InstructGPT,
Ouyang et al. 2022, §3.5: "we train on all C(K,2) comparisons from each prompt as a single batch element").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from selfplay.config import PairingConfig, RewardModelSection
from selfplay.records import Generation, Judgement, Pair, PairingStats, Prompt, TrainInputs
from selfplay.seed import SeedSet

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


# ---------------------------------------------------------------------------------------------------------------
# Rankings: every pair of K ranked responses, for the reward model (train.reward_model.pairs=all)


@dataclass(frozen=True)
class Ranked:
    """One response in a prompt's ranking; a higher score is preferred."""

    id: str
    text: str
    score: float  # judge units, a person's score, or a rank turned into a score (higher = better)
    tokens: int | None = None  # response length, for pairing.max_length_gap; None = not known (seed lines)


def comparisons(k: int) -> int:
    """C(K,2): the pairs among K ranked responses."""
    return k * (k - 1) // 2


def ranking_pairs(
    prompt_id: str, prompt: str, ranked: Sequence[Ranked], min_margin: float, judge: str, max_length_gap: int | None = None
) -> list[Pair]:
    """Every ordered pair of one prompt's ranking, chosen = the higher score: C(K,2) from K responses, less the ties (a
    gap below min_margin, and always an equal score) and, with max_length_gap, the pairs whose lengths differ by more.
    In rank order (score, then id, as make_pairs sorts): the best against each lower one, then the second, ..."""
    order = sorted(ranked, key=lambda r: (-r.score, r.id))
    pairs = []
    for i, better in enumerate(order):
        for j in range(i + 1, len(order)):
            worse = order[j]
            gap = better.score - worse.score
            if gap <= 0 or gap < min_margin or better.text == worse.text:
                continue
            if max_length_gap is not None and (
                better.tokens is None or worse.tokens is None or abs(better.tokens - worse.tokens) > max_length_gap
            ):
                continue
            pairs.append(
                Pair(
                    id=f"{prompt_id}/p{i}-{j}",
                    prompt_id=prompt_id,
                    prompt=prompt,
                    chosen=better.text,
                    rejected=worse.text,
                    chosen_id=better.id,
                    rejected_id=worse.id,
                    chosen_score=better.score,
                    rejected_score=worse.score,
                    margin=gap,
                    judge=judge,
                )
            )
    return pairs


def judged_rankings(
    prompts: Sequence[Prompt], generations: Sequence[Generation], judgements: Sequence[Judgement]
) -> list[tuple[Prompt, list[Ranked], str]]:
    """Per prompt with a scored response: its scored responses (the judgements make_pairs reads) and the judge."""
    gen_by_id = {g.id: g for g in generations}
    scored: dict[str, list[Ranked]] = defaultdict(list)
    judges: dict[str, str] = {}
    for j in judgements:
        if j.score is not None and len(j.generation_ids) == 1:
            g = gen_by_id[j.generation_ids[0]]
            scored[j.prompt_id].append(Ranked(g.id, g.text, j.score, g.n_tokens))
            judges.setdefault(j.prompt_id, j.judge)
    return [(p, scored[p.id], judges[p.id]) for p in prompts if p.id in scored]


def seed_rankings(seed: SeedSet) -> list[tuple[str, str, list[Ranked]]]:
    """(prompt_id, prompt, ranking) for each prompt of the seed set's scored lines and for each ranking line (its
    tiers, best first, scored K-1 .. 0 so that a pair's margin is how many tiers apart the two are)."""
    out: list[tuple[str, str, list[Ranked]]] = []
    by_prompt: dict[str, list] = defaultdict(list)
    for s in seed.scored:
        by_prompt[s.prompt_id].append(s)
    for prompt_id, group in by_prompt.items():
        out.append((prompt_id, group[0].prompt, [Ranked(s.id, s.response, s.score) for s in group]))
    for line in seed.rankings:
        top = len(line.tiers) - 1
        ranked = [
            Ranked(f"{line.id}/r{t}.{i}", text, float(top - t))
            for t, tier in enumerate(line.tiers)
            for i, text in enumerate(tier)
        ]
        out.append((line.prompt_id, line.prompt, ranked))
    return out


def reward_model_pairs(
    rm: RewardModelSection, pairing: PairingConfig, iterations: Sequence[TrainInputs], seed: SeedSet | None
) -> tuple[list[Pair], list[float] | None]:
    """The reward model's training pairs and their loss weights (None = every pair weighs 1).

    best-worst: each iteration's pairs, then the seed set's. all: every pair of each prompt's ranking of judged
    responses (ties below pairing.min_margin skipped, pairing.max_length_gap kept), then the seed set's pairwise lines
    as they are and every pair of its scored prompts and ranking lines (equal scores or tiers are ties). With
    pair_weight=prompt a ranking of K responses weighs 1/C(K,2) per comparison, a given pair 1."""
    if rm.pairs == "best-worst":
        return [p for it in iterations for p in it.pairs] + (seed.pairs if seed else []), None
    pairs: list[Pair] = []
    weights: list[float] = []
    for it in iterations:
        for prompt, ranked, judge in judged_rankings(it.prompts, it.generations, it.judgements):
            made = ranking_pairs(prompt.id, prompt.text, ranked, pairing.min_margin, judge, pairing.max_length_gap)
            pairs += made
            weights += [1.0 / comparisons(len(ranked))] * len(made) if made else []
    if seed is not None:
        given = seed.given_pairs()
        pairs += given
        weights += [1.0] * len(given)
        for prompt_id, text, ranked in seed_rankings(seed):
            made = ranking_pairs(prompt_id, text, ranked, 0.0, "human")
            pairs += made
            weights += [1.0 / comparisons(len(ranked))] * len(made) if made else []
    return pairs, weights if rm.pair_weight == "prompt" else None
