"""Choosing what to fine-tune on, and which new prompts to keep. Pure functions, tested with literal tables.

    rejection_sft_examples   per prompt, the top-k judged responses at or above a score threshold, as SFT
                             examples, with kept / dropped counts per prompt (rejection sampling, Llama 2,
                             Touvron et al. 2023 §3.2.3)
    rest_schedule            ReST's rising Improve-step thresholds (Gulcehre et al. 2023), as judge scores or
                             as quantiles of the grown dataset's scores
    dedupe                   near-duplicate texts by word n-gram overlap (Self-Instruct, Wang et al. 2023,
                             kept a new instruction only when its ROUGE-L to every other was below 0.7)

A response's score is its per-response `Judgement.score` (any judge kind: pointwise, pairwise win rate,
program, human). A response without one (unparseable, the scorer raised, no judgement) is excluded and
counted, never guessed.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel

from selfplay.records import FilterStats, Generation, Judgement, Prompt, PromptCounts, Record


class SFTExample(Record):
    """One supervised fine-tuning example: a prompt and a response judged good enough to imitate."""

    id: str  # "<generation_id>/sft"
    prompt_id: str
    prompt: str
    completion: str  # the response text, the only tokens the loss is taken on
    generation_id: str
    score: float  # its judge score, judge units
    judge: str  # judge kind that produced the score

    def to_trl(self) -> dict:
        """TRL's conversational prompt-completion format; SFTTrainer applies the chat template and, with
        completion_only_loss, takes the loss on the completion's tokens only."""
        return {
            "prompt": [{"role": "user", "content": self.prompt}],
            "completion": [{"role": "assistant", "content": self.completion}],
        }


def response_scores(judgements: Sequence[Judgement]) -> dict[str, tuple[float, str]]:
    """Generation id -> (score, judge kind), from per-response judgements with a score. Pairwise
    comparisons (two generation ids) are left out: their per-response win rates carry the score."""
    out: dict[str, tuple[float, str]] = {}
    for j in judgements:
        if len(j.generation_ids) == 1 and j.score is not None and j.generation_ids[0] not in out:
            out[j.generation_ids[0]] = (j.score, j.judge)
    return out


def rejection_sft_examples(
    prompts: Sequence[Prompt],
    generations: Sequence[Generation],
    judgements: Sequence[Judgement],
    top_k: int | None,
    threshold: float | None,
) -> tuple[list[SFTExample], FilterStats]:
    """Per prompt, its best `top_k` distinct non-empty responses scoring >= `threshold`, best first (equal
    scores: the lower id first, so reruns agree). Pure."""
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    scores = response_scores(judgements)
    by_prompt: dict[str, list[Generation]] = defaultdict(list)
    for g in generations:
        by_prompt[g.prompt_id].append(g)
    examples: list[SFTExample] = []
    per_prompt: dict[str, PromptCounts] = {}
    for prompt in prompts:
        gens = by_prompt.get(prompt.id, [])
        counts = PromptCounts(responses=len(gens))
        ranked: list[tuple[float, Generation, str]] = []
        for g in gens:
            if not g.text.strip():
                counts.empty += 1
            elif g.id not in scores:
                counts.unscored += 1
            elif threshold is not None and scores[g.id][0] < threshold:
                counts.below += 1
            else:
                ranked.append((scores[g.id][0], g, scores[g.id][1]))
        ranked.sort(key=lambda t: (-t[0], t[1].id))
        seen: set[str] = set()
        for score, g, judge in ranked:
            text = g.text.strip()
            if text in seen:
                counts.duplicate += 1
            elif top_k is not None and counts.kept >= top_k:
                counts.over_k += 1
            else:
                seen.add(text)
                counts.kept += 1
                examples.append(
                    SFTExample(
                        id=f"{g.id}/sft",
                        prompt_id=prompt.id,
                        prompt=prompt.text,
                        completion=g.text,
                        generation_id=g.id,
                        score=score,
                        judge=judge,
                    )
                )
        per_prompt[prompt.id] = counts
    total = {
        field: sum(getattr(c, field) for c in per_prompt.values())
        for field in ("responses", "unscored", "empty", "below", "duplicate", "over_k", "kept")
    }
    stats = FilterStats(
        threshold=threshold,
        top_k=top_k,
        prompts=len(prompts),
        prompts_kept=sum(c.kept > 0 for c in per_prompt.values()),
        **total,
        kept_fraction=total["kept"] / total["responses"] if total["responses"] else None,
        mean_kept_score=sum(e.score for e in examples) / len(examples) if examples else None,
        per_prompt=per_prompt,
    )
    return examples, stats


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("quantile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} outside 0..1")
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def rest_schedule(scores: Sequence[float], thresholds: Sequence[float], mode: Literal["score", "quantile"]) -> list[float]:
    """Each Improve step's threshold in judge units. score: as given. quantile: each entry (0..1) is a
    quantile of the grown dataset's scores, so the schedule adapts to the judge's scale (the default
    model's own 1..5 rubric scores span only about 2.0-3.4, docs/design.md). Thresholds must not fall: each
    Improve step trains on a subset of the last one's data (Gulcehre et al. 2023, §3)."""
    if not thresholds:
        raise ValueError("a ReST schedule needs at least one threshold")
    if any(b < a for a, b in zip(thresholds, thresholds[1:], strict=False)):
        raise ValueError(f"ReST thresholds must rise (or stay), got {list(thresholds)}")
    match mode:
        case "score":
            return [float(t) for t in thresholds]
        case "quantile":
            if not scores:
                raise ValueError("quantile thresholds need at least one scored response")
            return [quantile(scores, q) for q in thresholds]
    raise ValueError(f"unknown threshold mode {mode!r}; score or quantile")


# --- near-duplicate texts -------------------------------------------------------------------------------


class Duplicate(BaseModel):
    of: Literal["against", "earlier"]  # a reference text (e.g. the pool), or an earlier candidate
    index: int  # its index in `against` or in the candidates
    overlap: float  # 0..1, see ngram_overlap


def word_ngrams(text: str, n: int) -> frozenset[tuple[str, ...]]:
    """Lower-cased word n-grams; a text shorter than n words is one gram of all its words."""
    words = re.findall(r"\w+", text.lower())
    if not words:
        return frozenset()
    if len(words) < n:
        return frozenset([tuple(words)])
    return frozenset(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def ngram_overlap(a: frozenset, b: frozenset) -> float:
    """Shared n-grams over the shorter text's n-grams: 1.0 when one text's n-grams all occur in the other
    (a near-copy that adds or drops a few words), 0.0 when none do or either is empty."""
    if not a or not b:
        return 0.0
    return len(a & b) / min(len(a), len(b))


def dedupe(
    candidates: Sequence[str], against: Sequence[str] = (), *, n: int = 2, max_overlap: float = 0.7
) -> list[Duplicate | None]:
    """Per candidate: None if it is new, else the first text it near-duplicates (overlap >= max_overlap):
    first any of `against`, then any earlier candidate that was itself kept. Texts identical but for case
    and punctuation overlap fully. Pure."""
    if n < 1:
        raise ValueError(f"n-gram size must be >= 1, got {n}")
    ref = [word_ngrams(t, n) for t in against]
    kept: list[tuple[int, frozenset]] = []
    out: list[Duplicate | None] = []
    for i, text in enumerate(candidates):
        grams = word_ngrams(text, n)
        found = _first_overlap(grams, enumerate(ref), max_overlap)
        verdict = Duplicate(of="against", index=found[0], overlap=found[1]) if found else None
        if verdict is None:
            found = _first_overlap(grams, kept, max_overlap)
            verdict = Duplicate(of="earlier", index=found[0], overlap=found[1]) if found else None
        if verdict is None:
            kept.append((i, grams))
        out.append(verdict)
    return out


def _first_overlap(grams: frozenset, refs, max_overlap: float) -> tuple[int, float] | None:
    for index, other in refs:
        overlap = ngram_overlap(grams, other)
        if overlap >= max_overlap:
            return index, round(overlap, 4)
    return None
