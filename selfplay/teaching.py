"""Teaching the judge: evaluation fine-tuning (EFT) of the model that judges.

Self-Rewarding LMs train the model on judging as well as on answering (Yuan et al. 2024, §2: "EFT" data), and the
Self-Taught Evaluator trains a judge on synthetic preferences (Wang et al. 2024). Here a judge is fine-tuned, with
supervised targets in its own template's output format, on labelled judgements from `train.judge_data`:

    checkers  sampled responses of the model being taught to checkable prompts of the train pool, labelled by the
              instruction checkers: the share of the prompt's instructions followed, f, becomes the rubric score
              lo + round(f * (hi - lo)) (pointwise) or the verdict for the response that follows more (pairwise,
              both orders), then a one-line reason naming what was followed and missed. Only train-pool prompts
              are labelled; the checkers are never called on what the run judges.
    seed      the human seed set: scored lines (prompt, response, score) as pointwise targets, rescaled to the
              template's scale; pairs as pairwise verdicts in both orders.

The target starts with the template's forced prefix and the verdict ("Score: 4", "Verdict: B"), so the logprob
method reads the taught verdict at the position it looks at, and the text method parses the same line.

What is taught: with `judge.model` set, that judge model (the policy is untouched); without it (self-rewarding),
the run's model, which then both answers and judges from iteration 1 on, as M1 of the paper. The taught model is
written once per run, before iteration 1, under <run>/judge_teaching/ (teaching.json last, so a killed stage is
redone). Its quality is measured before and after, on responses to other prompts (`train.judge.measure`, by
default the held-out file eval.ifeval: measured, never trained or tuned on): rank correlation with the checker
score, agreement with the checkers on pairs they rank apart and with the human seed set (accuracy, Cohen's
kappa), and length bias.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from selfplay.config import JudgeConfig, RunConfig, used
from selfplay.errors import SelfplayError
from selfplay.filtering import SFTExample
from selfplay.generation import Generator, open_generator
from selfplay.ifeval.checkers import check
from selfplay.judges import PairwiseJudge, PointwiseJudge, given_response, make_judge
from selfplay.pool import load_pool, pool_prompts
from selfplay.records import (
    TEACHING_FILE,
    Generation,
    Judgement,
    JudgeQuality,
    JudgeTeaching,
    Pair,
    Prompt,
    derive_seed,
    read_record,
    write_json,
    write_records,
)
from selfplay.seed import SeedSet, judge_human_agreement, judge_seed_agreement, load_seed
from selfplay.stats import spearman
from selfplay.templates import Template
from selfplay.train.sft import SFTTrainerRunner


class TeachingError(SelfplayError, ValueError):
    """Judge teaching that cannot start: no checkable prompts, no seed set, a judge kind that cannot be taught."""


# ---------------------------------------------------------------------------------------------------------------
# Labels


def checker_verdicts(prompt: Prompt, text: str) -> list[tuple[str, bool]] | None:
    """(instruction id, followed) for each checkable instruction of an IFEval-format prompt; None if it has none."""
    ids = prompt.meta.get("instruction_id_list") or []
    kwargs = prompt.meta.get("kwargs") or [{}] * len(ids)
    verdicts = [(iid, check(iid, kw or {}, text)) for iid, kw in zip(ids, kwargs, strict=True)]
    known = [(iid, ok) for iid, ok in verdicts if ok is not None]
    return known or None


def _instruction_name(instruction_id: str) -> str:
    return instruction_id.split(":", 1)[-1].replace("_", " ")


def reason(verdicts: Sequence[tuple[str, bool]]) -> str:
    """One line naming what a response followed and missed, e.g. 'Follows 1 of 2 instructions; misses: no comma.'"""
    followed = sum(ok for _, ok in verdicts)
    line = f"Follows {followed} of {len(verdicts)} instruction{'s' if len(verdicts) != 1 else ''}"
    missed = [_instruction_name(iid) for iid, ok in verdicts if not ok]
    return line + (f"; misses: {', '.join(missed)}." if missed else ".")


def rubric_score(fraction: float, scale: tuple[float, float]) -> int:
    lo, hi = int(scale[0]), int(scale[1])
    return lo + round(fraction * (hi - lo))


def target(template: Template, verdict: str, why: str) -> str:
    """The taught completion: the template's forced prefix and the verdict first, then the reason."""
    return f"{template.score_prefix or ''}{verdict}\n{why}"


def pointwise_examples(template: Template, prompt: Prompt, generations: Sequence[Generation], source: str) -> list[SFTExample]:
    """One example per response the checkers can label."""
    assert template.scale is not None  # check_template requires a scale of pointwise templates
    out = []
    for g in generations:
        verdicts = checker_verdicts(prompt, g.text) if g.text.strip() else None
        if verdicts is None:
            continue
        score = rubric_score(sum(ok for _, ok in verdicts) / len(verdicts), template.scale)
        out.append(
            SFTExample(
                id=f"{g.id}/eft",
                prompt_id=prompt.id,
                prompt=template.render(prompt=prompt.text, response=g.text),
                completion=target(template, str(score), reason(verdicts)),
                generation_id=g.id,
                score=score,
                judge=source,
            )
        )
    return out


def pairwise_example(
    template: Template, prompt: Prompt, first: Generation, second: Generation, first_wins: bool, why: str, source: str
) -> SFTExample:
    return SFTExample(
        id=f"{first.id}|{second.id}/eft",
        prompt_id=prompt.id,
        prompt=template.render(prompt=prompt.text, response_a=first.text, response_b=second.text),
        completion=target(template, "A" if first_wins else "B", why),
        generation_id=f"{first.id}|{second.id}",
        score=1.0 if first_wins else 0.0,
        judge=source,
    )


def pairwise_checker_examples(
    template: Template, prompt: Prompt, generations: Sequence[Generation], source: str
) -> list[SFTExample]:
    """The best and the worst response by the checkers (when they differ), in both orders."""
    scored = []
    for g in generations:
        verdicts = checker_verdicts(prompt, g.text) if g.text.strip() else None
        if verdicts is not None:
            scored.append((sum(ok for _, ok in verdicts) / len(verdicts), g, verdicts))
    if len(scored) < 2:
        return []
    scored.sort(key=lambda s: s[0])
    (low, worse, _), (high, better, verdicts) = scored[0], scored[-1]
    if high == low:
        return []
    why = f"The other reply misses more. This one: {reason(verdicts)}"
    return [
        pairwise_example(template, prompt, better, worse, True, why.replace("This one", "Reply A"), source),
        pairwise_example(template, prompt, worse, better, False, why.replace("This one", "Reply B"), source),
    ]


def checker_examples(
    kind: str, template: Template, prompts: Sequence[Prompt], generations: Sequence[Generation], contrast: bool = False
) -> list[SFTExample]:
    """The checkers' judgements as targets. contrast (pointwise): only prompts whose responses get different scores;
    pairwise examples always need two responses the checkers rank apart."""
    by_prompt: dict[str, list[Generation]] = {}
    for g in generations:
        by_prompt.setdefault(g.prompt_id, []).append(g)
    out = []
    for p in prompts:
        if kind == "pointwise":
            examples = pointwise_examples(template, p, by_prompt.get(p.id, []), "checkers")
            if not contrast or len({e.score for e in examples}) > 1:
                out += examples
        else:
            out += pairwise_checker_examples(template, p, by_prompt.get(p.id, []), "checkers")
    return out


def seed_examples(kind: str, template: Template, seed: SeedSet) -> list[SFTExample]:
    """Pointwise judges learn the scored lines (rescaled from the labeller's range to the template's); pairwise
    judges learn the pairs, in both orders."""
    out: list[SFTExample] = []
    if kind == "pointwise" and seed.scored:
        assert template.scale is not None
        lo, hi = min(s.score for s in seed.scored), max(s.score for s in seed.scored)
        for s in seed.scored:
            fraction = (s.score - lo) / (hi - lo) if hi > lo else 1.0
            score = rubric_score(fraction, template.scale)
            out.append(
                SFTExample(
                    id=f"{s.id}/eft",
                    prompt_id=s.prompt_id,
                    prompt=template.render(prompt=s.prompt, response=s.response),
                    completion=target(template, str(score), "As rated by a person."),
                    generation_id=s.id,
                    score=score,
                    judge="human",
                )
            )
    if kind == "pairwise":
        for i, pair in enumerate(seed.pairs):
            pid = f"seed-{i:04d}"
            chosen, rejected = (
                given_response(pid, 0, pair.chosen, "human-seed"),
                given_response(pid, 1, pair.rejected, "human-seed"),
            )
            prompt = Prompt(id=pid, text=pair.prompt, source="seed")
            why = "A person preferred this reply."
            out += [
                pairwise_example(template, prompt, chosen, rejected, True, why, "human"),
                pairwise_example(template, prompt, rejected, chosen, False, why, "human"),
            ]
    return out


def verdict_of(example: SFTExample) -> str:
    """The taught verdict line, the target's first: 'Score: 4', 'Verdict: B'."""
    return example.completion.split("\n", 1)[0]


def balanced(examples: Sequence[SFTExample], limit: int, seed: int) -> list[SFTExample]:
    """At most `limit` examples, taken round-robin over the verdicts (each verdict's examples in a seeded order),
    so a rare verdict keeps all its examples and the common one fills what is left; the original order is kept."""
    by_verdict: dict[str, list[SFTExample]] = {}
    for e in examples:
        by_verdict.setdefault(verdict_of(e), []).append(e)
    rng = random.Random(seed)
    queues = [rng.sample(group, len(group)) for _, group in sorted(by_verdict.items())]
    kept: set[str] = set()
    while len(kept) < min(limit, len(examples)):
        for queue in queues:
            if queue and len(kept) < limit:
                kept.add(queue.pop().id)
    return [e for e in examples if e.id in kept]


# ---------------------------------------------------------------------------------------------------------------
# Measuring a judge


def judge_scores(judged: Sequence[Judgement]) -> dict[str, float]:
    """generation id -> the judge's per-response score (pairwise: its win rate), scored responses only."""
    return {j.generation_ids[0]: j.score for j in judged if len(j.generation_ids) == 1 and j.score is not None}


def measure_judge(
    judge: PointwiseJudge | PairwiseJudge,
    model: str,
    prompts: Sequence[Prompt],
    generations: Sequence[Generation],
    seed_pairs: Sequence[Pair],
    seed: int,
    keep: Path | None = None,
) -> JudgeQuality:
    """keep: a JSONL file for the judgements the figures come from."""
    judged = judge.judge(prompts, generations)
    if keep is not None:
        write_records(keep, judged)
    scores = judge_scores(judged)
    by_id = {p.id: p for p in prompts}
    checker: dict[str, float] = {}
    for g in generations:
        verdicts = checker_verdicts(by_id[g.prompt_id], g.text)
        if verdicts is not None:
            checker[g.id] = sum(ok for _, ok in verdicts) / len(verdicts)
    both = [g for g in generations if g.id in scores and g.id in checker]
    # Checker-ranked pairs: per prompt, its best and worst response by the checkers, where they differ.
    pairs, chosen, rejected = [], [], []
    by_prompt: dict[str, list[Generation]] = {}
    for g in generations:
        if g.id in checker:
            by_prompt.setdefault(g.prompt_id, []).append(g)
    for pid, group in by_prompt.items():
        best, worst = max(group, key=lambda g: checker[g.id]), min(group, key=lambda g: checker[g.id])
        if checker[best.id] > checker[worst.id]:
            pairs.append(
                Pair(
                    id=f"{pid}/checkers",
                    prompt_id=pid,
                    prompt=by_id[pid].text,
                    chosen=best.text,
                    rejected=worst.text,
                    chosen_id=best.id,
                    rejected_id=worst.id,
                    chosen_score=checker[best.id],
                    rejected_score=checker[worst.id],
                    margin=checker[best.id] - checker[worst.id],
                    judge="checkers",
                )
            )
            chosen.append(scores.get(best.id))
            rejected.append(scores.get(worst.id))
    score_len = spearman([scores[g.id] for g in both], [float(g.n_tokens) for g in both]) if len(both) > 2 else None
    check_len = spearman([checker[g.id] for g in both], [float(g.n_tokens) for g in both]) if len(both) > 2 else None
    return JudgeQuality(
        judge=model,
        responses=len(generations),
        scored=len(scores),
        spearman_checkers=spearman([scores[g.id] for g in both], [checker[g.id] for g in both]) if len(both) > 2 else None,
        checker_agreement=judge_human_agreement(pairs, chosen, rejected, seed) if pairs else None,
        seed_agreement=judge_seed_agreement(judge, list(seed_pairs), seed) if seed_pairs else None,
        score_length_r=score_len,
        checker_length_r=check_len,
        length_bias=None if score_len is None or check_len is None else score_len - check_len,
    )


# ---------------------------------------------------------------------------------------------------------------
# The stage


def checkable(prompts: Sequence[Prompt], where: str) -> list[Prompt]:
    out = [p for p in prompts if p.meta.get("instruction_id_list")]
    if not out:
        raise TeachingError(f"{where}: no checkable prompts (IFEval format, with instruction_id_list) to label with the checkers")
    return out


def sample(prompts: Sequence[Prompt], n: int, seed: int) -> list[Prompt]:
    chosen = list(prompts)
    random.Random(seed).shuffle(chosen)
    return chosen[:n]


def teaching_pool(cfg: RunConfig) -> list[Prompt]:
    """The prompts whose responses the checkers label: train.judge.prompts, else the run's own pool (its column mapping)."""
    section = used(cfg.train.judge, "train.judge")
    return load_pool(section.prompts) if section.prompts else pool_prompts(cfg.prompts)


def check_teaching(cfg: RunConfig) -> None:
    """Preflight: everything judge teaching will read, before any engine starts."""
    if not cfg.train.judge_data:
        return
    section = used(cfg.train.judge, "train.judge")
    if cfg.judge.kind not in ("pointwise", "pairwise"):
        raise TeachingError(f"train.judge_data: judge.kind={cfg.judge.kind} cannot be taught; use pointwise or pairwise")
    if cfg.judge.endpoint:
        raise TeachingError("train.judge_data: an external judge (judge.endpoint) cannot be fine-tuned here")
    if "checkers" in cfg.train.judge_data:
        checkable(teaching_pool(cfg), section.prompts or cfg.prompts.pool)
    if "seed" in cfg.train.judge_data and not cfg.human.seed_set:
        raise TeachingError("train.judge_data=seed needs human.seed_set, the human-labelled seed file")
    if section.measure:
        checkable(load_pool(section.measure), section.measure)


def teach_judge(cfg: RunConfig, base: Path, responder: Path, out: Path, log: Callable[[str], None] = print) -> JudgeTeaching:
    """Teach `base` to judge as cfg.judge asks, from cfg.train.judge_data, on responses sampled from `responder` (the
    model whose answers the judge will judge; `base` itself when the policy judges itself). The record is written
    to out/teaching.json last, and reused when it exists."""
    if (out / TEACHING_FILE).exists():
        return read_record(out / TEACHING_FILE, JudgeTeaching)
    check_teaching(cfg)
    started, section = time.monotonic(), used(cfg.train.judge, "train.judge")
    pool = section.prompts or cfg.prompts.pool
    teach_prompts = sample(checkable(teaching_pool(cfg), pool), section.max_prompts, derive_seed(cfg.seed, "teach-prompts"))
    measure = (
        sample(checkable(load_pool(section.measure), section.measure), section.measure_prompts, 0) if section.measure else []
    )
    seed_set = load_seed(Path(cfg.human.seed_set)) if cfg.human.seed_set else None
    out.mkdir(parents=True, exist_ok=True)
    responses: list[Generation] = []
    sampling = cfg.generation.model_copy(update={"temperature": section.temperature})
    with open_generator(sampling, responder, derive_seed(cfg.seed, "teach-sample")) as gen:
        if "checkers" in cfg.train.judge_data:
            log(f"judge teaching: {section.samples} responses to each of {len(teach_prompts)} prompts of {pool}")
            responses = gen.generate(teach_prompts, n=section.samples)
            write_records(out / "responses.jsonl", responses)
        if measure:
            log(f"judge teaching: {section.measure_samples} responses to each of {len(measure)} prompts of {section.measure}")
        meter = Meter(
            cfg.judge, measure, gen.generate(measure, n=section.measure_samples) if measure else [], seed_set, cfg.seed, out
        )
        if responder == base:
            template, before = meter.quality(gen, base, "before")
    if responder != base:
        with open_generator(cfg.generation, base, derive_seed(cfg.seed, "teach-judge")) as gen:
            template, before = meter.quality(gen, base, "before")
    if before:
        log(f"judge before teaching: {quality_line(before)}")
    examples = teaching_examples(cfg, template, teach_prompts, responses, seed_set)
    write_records(out / "examples.jsonl", examples)
    train_cfg = cfg.train.model_copy(
        update={k: getattr(section, k) for k in ("learning_rate", "epochs", "batch_size", "max_length")}
    )
    from_checkers = sum(e.judge == "checkers" for e in examples)
    log(f"judge teaching: fine-tuning {base} on {len(examples)} judgements ({from_checkers} from the checkers)")
    result = SFTTrainerRunner(train_cfg, derive_seed(cfg.seed, "teach-train")).train(examples, base, out / "policy", "judge-sft")
    after = None
    if measure:
        with open_generator(cfg.generation, Path(result.policy), derive_seed(cfg.seed, "teach-measure")) as gen:
            _, after = meter.quality(gen, Path(result.policy), "after")
        if after:
            log(f"judge after teaching: {quality_line(after)}")
    counts: dict[str, int] = {}
    for e in examples:
        label = verdict_of(e).removeprefix(template.score_prefix or "")
        counts[label] = counts.get(label, 0) + 1
    record = JudgeTeaching(
        target="judge" if cfg.judge.model else "policy",
        base=str(base),
        taught=result.policy,
        template=template.ref,
        sources=list(cfg.train.judge_data),
        checker_prompts=len(teach_prompts) if responses else 0,
        from_checkers=from_checkers,
        from_seed=len(examples) - from_checkers,
        label_counts=dict(sorted(counts.items())),
        train=result,
        measured_on=section.measure,
        before=before,
        after=after,
        seconds=round(time.monotonic() - started, 1),
    )
    write_json(out / TEACHING_FILE, record.model_dump(mode="json"))
    return record


def teaching_examples(
    cfg: RunConfig, template: Template, prompts: Sequence[Prompt], responses: Sequence[Generation], seed_set: SeedSet | None
) -> list[SFTExample]:
    """The labelled judgements to teach from: the checkers' on `responses`, then the seed set's; balanced if capped."""
    section = used(cfg.train.judge, "train.judge")
    examples = checker_examples(cfg.judge.kind, template, prompts, responses, section.contrast) if responses else []
    if "seed" in cfg.train.judge_data and seed_set is not None:
        examples += seed_examples(cfg.judge.kind, template, seed_set)
    if not examples:
        raise TeachingError(f"train.judge_data={','.join(cfg.train.judge_data)}: no labelled judgement to teach from")
    if section.max_examples:
        examples = balanced(examples, section.max_examples, derive_seed(cfg.seed, "teach-balance"))
    return examples


@dataclass
class Meter:
    """Measures a judge on fixed responses (the same before and after teaching); keeps each measure's judgements
    in out/measure_judgements_<when>.jsonl beside the responses (measure_responses.jsonl)."""

    judge_cfg: JudgeConfig
    prompts: Sequence[Prompt]
    responses: Sequence[Generation]
    seed_set: SeedSet | None
    seed: int
    out: Path

    def __post_init__(self) -> None:
        if self.responses:
            write_records(self.out / "measure_responses.jsonl", list(self.responses))

    def quality(self, gen: Generator, model: Path, when: str) -> tuple[Template, JudgeQuality | None]:
        judge = make_teachable(self.judge_cfg, gen)
        if not self.prompts:
            return judge.template, None
        pairs = self.seed_set.pairs if self.seed_set else []
        keep = self.out / f"measure_judgements_{when}.jsonl"
        return judge.template, measure_judge(judge, str(model), self.prompts, self.responses, pairs, self.seed, keep)


def make_teachable(judge_cfg: JudgeConfig, gen: Generator) -> PointwiseJudge | PairwiseJudge:
    judge = make_judge(judge_cfg, gen)
    if not isinstance(judge, PointwiseJudge | PairwiseJudge):
        raise TeachingError(f"judge.kind={judge_cfg.kind} cannot be taught; use pointwise or pairwise")
    return judge


def quality_line(q: JudgeQuality) -> str:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:+.2f}"

    agree = q.checker_agreement
    seed = q.seed_agreement
    parts = [
        f"rank r with checkers {f(q.spearman_checkers)}",
        f"checker pairs {'-' if agree is None or agree.accuracy is None else f'{agree.accuracy:.2f}'} "
        f"(kappa {f(agree.kappa) if agree else '-'}, n {agree.n if agree else 0})",
        f"length bias {f(q.length_bias)}",
    ]
    if seed is not None:
        parts.append(f"seed set {'-' if seed.accuracy is None else f'{seed.accuracy:.2f}'} (kappa {f(seed.kappa)})")
    return ", ".join(parts) + f"; {q.scored}/{q.responses} scored"
