"""Best-of-N: sample N responses per prompt, score each, answer with the highest-scoring one.

The cheapest use of a judge or reward model at inference (Stiennon et al. 2020; Nakano et al. 2021), and the
baseline a trained policy should beat: best-of-N from the base model against the policy after training.
Every candidate is written with its score, and the pick beside them, so a pick can always be explained.

A scorer is `score(prompts, generations) -> list[float | None]`, one entry per generation (higher = better;
None = it could not score that one: excluded from the pick and counted). `make_scorer` builds one from a spec:

    program:MODULE:FUNCTION   a program judge, e.g. program:selfplay.program_judges:length_bounds
    pointwise[:TEMPLATE]      the sampling model rates its own responses (prompts/self-rewarding.yaml)
    pairwise[:TEMPLATE]       the sampling model compares its responses in both orders; score = win rate
    human:LABELS.jsonl        human labels
    rm:PATH                   a reward model trained by selfplay (selfplay.train.reward)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel

from selfplay.config import ConfigError, GenerationConfig, JudgeConfig
from selfplay.filtering import response_scores
from selfplay.generation import open_generator
from selfplay.judges import make_judge
from selfplay.models import resolve_model
from selfplay.pool import load_pool
from selfplay.records import Generation, Prompt, Record, RecordError, write_records
from selfplay.train.reward import RewardModel, RewardModelError

Scorer = Callable[[list[Prompt], list[Generation]], list[float | None]]


class Candidate(BaseModel):
    id: str  # generation id "<prompt_id>/g<j>"
    text: str
    n_tokens: int
    finish_reason: str
    score: float | None  # the scorer's, higher = better; None = not scored (excluded from the pick)


class BestOfN(Record):
    id: str  # "<prompt_id>/best"
    prompt_id: str
    prompt: str
    scorer: str  # the scorer spec
    candidates: list[Candidate]  # every sample, in sampling order
    pick: str | None  # id of the highest-scoring candidate (equal scores: the lower id); None = none was scored
    pick_score: float | None
    pick_text: str | None


class BestOfNStats(BaseModel):
    prompts: int
    candidates: int
    unscored: int  # candidates the scorer could not score
    no_pick: int  # prompts without a single scored candidate
    mean_pick_score: float | None  # over prompts with a pick
    mean_first_score: float | None  # the first sample's score, where scored: what one sample gets
    mean_score: float | None  # over every scored candidate


def pick_best(
    prompts: Sequence[Prompt], generations: Sequence[Generation], scores: Sequence[float | None], scorer: str
) -> tuple[list[BestOfN], BestOfNStats]:
    """Per prompt, every candidate with its score and the best one. Pure. Non-finite scores count as None."""
    if len(scores) != len(generations):
        raise ValueError(f"the scorer returned {len(scores)} scores for {len(generations)} responses")
    clean: list[float | None] = []
    for s in scores:
        value = None if s is None else float(s)
        clean.append(value if value is not None and math.isfinite(value) else None)
    by_prompt: dict[str, list[Candidate]] = {p.id: [] for p in prompts}
    for g, s in zip(generations, clean, strict=True):
        by_prompt.setdefault(g.prompt_id, []).append(
            Candidate(id=g.id, text=g.text, n_tokens=g.n_tokens, finish_reason=g.finish_reason, score=s)
        )
    records = []
    for p in prompts:
        cands = by_prompt[p.id]
        scored = sorted((c for c in cands if c.score is not None), key=lambda c: (-(c.score or 0.0), c.id))  # all scored
        best = scored[0] if scored else None
        records.append(
            BestOfN(
                id=f"{p.id}/best",
                prompt_id=p.id,
                prompt=p.text,
                scorer=scorer,
                candidates=cands,
                pick=best.id if best else None,
                pick_score=best.score if best else None,
                pick_text=best.text if best else None,
            )
        )

    def mean(xs):
        xs = [x for x in xs if x is not None]
        return sum(xs) / len(xs) if xs else None

    stats = BestOfNStats(
        prompts=len(records),
        candidates=len(generations),
        unscored=sum(s is None for s in clean),
        no_pick=sum(r.pick is None for r in records),
        mean_pick_score=mean(r.pick_score for r in records),
        mean_first_score=mean(r.candidates[0].score for r in records if r.candidates),
        mean_score=mean(clean),
    )
    return records, stats


def best_of_n(gen, prompts: Sequence[Prompt], n: int, score: Scorer, scorer: str) -> tuple[list[BestOfN], BestOfNStats]:
    """Samples n responses per prompt with `gen` (a Generator), scores them, keeps the best."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    generations = gen.generate(list(prompts), n=n)
    return pick_best(prompts, generations, score(list(prompts), generations), scorer)


def picks(records: Sequence[BestOfN], generations: Sequence[Generation]) -> list[Generation]:
    """The picked Generation records (one per prompt with a pick): the best-of-N "policy's" responses, for
    evaluating it like any other policy."""
    by_id = {g.id: g for g in generations}
    return [by_id[r.pick] for r in records if r.pick is not None]


# --- scorers from a spec -----------------------------------------------------------------------------------


def _judge_scorer(judge) -> Scorer:
    def score(prompts: list[Prompt], generations: list[Generation]) -> list[float | None]:
        scores = response_scores(judge.judge(prompts, generations))
        return [scores[g.id][0] if g.id in scores else None for g in generations]

    return score


def _reward_model_scorer(path: str) -> Scorer:
    """Loads the reward model on first use, so it never holds memory while a generator samples."""
    if not (Path(path) / "config.json").exists():
        raise RewardModelError(
            f"{path}: not a reward model directory (no config.json); train one with selfplay's reward-model stage"
        )
    loaded: list[RewardModel] = []

    def score(prompts: list[Prompt], generations: list[Generation]) -> list[float | None]:
        if not loaded:
            loaded.append(RewardModel.load(Path(path)))
        by_id = {p.id: p.text for p in prompts}
        return list(loaded[0].score([by_id[g.prompt_id] for g in generations], [g.text for g in generations]))

    return score


def make_scorer(spec: str, gen=None, program_args: dict | None = None) -> Scorer:
    """A scorer from a spec (see the module docstring); `gen` is the Generator the LLM judges read through;
    `program_args` are the keyword arguments of a program scorer."""
    kind, _, rest = spec.partition(":")
    match kind:
        case "program":
            if not rest:
                raise ConfigError(
                    f"--scorer {spec!r}: expected program:MODULE:FUNCTION, e.g. program:selfplay.program_judges:length_bounds"
                )
            return _judge_scorer(make_judge(JudgeConfig(kind="program", program=rest, program_args=program_args or {}), None))
        case "pointwise" | "pairwise":
            cfg = JudgeConfig(kind=kind, **({"template": rest} if rest else {}))
            return _judge_scorer(make_judge(cfg, gen))
        case "human":
            if not rest:
                raise ConfigError(f"--scorer {spec!r}: expected human:LABELS.jsonl")
            return _judge_scorer(make_judge(JudgeConfig(kind="human", labels=rest), None))
        case "rm":
            if not rest:
                raise ConfigError(f"--scorer {spec!r}: expected rm:PATH to a reward model directory")
            return _reward_model_scorer(rest)
    raise ConfigError(
        f"--scorer {spec!r}: unknown scorer; one of program:MODULE:FUNCTION, pointwise[:TEMPLATE], "
        "pairwise[:TEMPLATE], human:LABELS, rm:PATH"
    )


def scorer_needs_generator(spec: str) -> bool:
    return spec.partition(":")[0] in ("pointwise", "pairwise")


class BestOfNRun(BaseModel):
    """What `selfplay best-of-n` did: where the records went, and their statistics."""

    out: str
    n: int
    stats: BestOfNStats


def best_of_n_file(
    prompts_file: Path,
    scorer: str,
    *,
    model: str = "default",
    n: int = 4,
    out: Path | None = None,
    backend: str = "vllm",
    temperature: float = 0.8,
    max_tokens: int = 192,
    seed: int = 0,
    limit: int = 0,
    scorer_args: str | None = None,
) -> BestOfNRun:
    """`selfplay best-of-n`: n samples per prompt of a pool file (the first `limit`; 0 = all) from `model`, scored,
    every candidate and the pick written to `out` (default: <PROMPTS>.best-of-<n>.jsonl here). Everything that can
    be checked without a model (backend, scorer arguments, the pool, a program scorer, the output path) is checked
    before the engine starts."""
    if backend not in ("vllm", "transformers"):
        raise ConfigError(f"--backend {backend!r}: vllm or transformers")
    try:
        args = json.loads(scorer_args) if scorer_args else {}
    except json.JSONDecodeError as err:
        raise ConfigError(f"--scorer-args: not JSON ({err.msg})") from None
    if not isinstance(args, dict):
        raise ConfigError("--scorer-args: expected a JSON object of keyword arguments")
    out = Path(out or f"{Path(prompts_file).stem}.best-of-{n}.jsonl")
    if out.is_dir():
        raise RecordError(f"{out}: is a directory; give a file name to write")
    prompts = load_pool(prompts_file)[: limit or None]
    own_judge = scorer_needs_generator(scorer)  # the model judges its own samples through the same engine
    score = None if own_judge else make_scorer(scorer, program_args=args)  # a bad scorer fails before an engine starts
    cfg = GenerationConfig(backend=backend, n=max(n, 2), temperature=temperature, max_tokens=max_tokens)
    with open_generator(cfg, resolve_model(model), seed) as gen:
        generations = gen.generate(prompts, n=n)
        if own_judge:
            scores = make_scorer(scorer, gen)(prompts, generations)
    if score is not None:  # after the engine is closed: a reward model gets its memory
        scores = score(prompts, generations)
    records, stats = pick_best(prompts, generations, scores, scorer)
    write_records(out, records)
    return BestOfNRun(out=str(out), n=n, stats=stats)
