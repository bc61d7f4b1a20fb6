"""Judges turn generations into judgements. A judge never hides failure: every raw output is kept, and
an output that does not parse is `None` with status "unparseable", counted, never a label.

    pointwise              an LLM rates each response on a rubric (Self-Rewarding LMs, Yuan et al. 2024)
    pairwise               an LLM compares two responses, in both orders; score = win rate
    constitution-revision  critique, then revise, under a sampled principle (Constitutional AI, Bai et al. 2022)
    constitution-pairwise  pairwise under a sampled principle's comparison question (CAI §4; RLAIF, Lee et al. 2023)
    program                a Python function scores each response (verifiable rewards)
    human                  scores or pairs from a labels file

Every judge emits one per-response judgement (`generation_ids == [id]`, score or None), which is what
pairing reads. Pairwise judges also emit one judgement per ordered comparison (`generation_ids ==
[first, second]` as presented, score = P(first wins) in 0..1), from which position bias and order
agreement are computed. LLM verdicts come either from sampled text parsed by the template's rule, or
from the next-token probabilities after the template's forced prefix ("Score: ", "Verdict: "); the
latter always exists, which matters for small models that rarely keep the format (about 1 answer in
40 for the 135M default).

Where each part lives:

    base          JudgeError, the Judge protocol, TEMPLATE_VARIABLES, check_template, EMPTY
    pointwise     PointwiseJudge, parse_score, score_token_ids, expected_score
    pairwise      PairwiseJudge, Verdict, comparison_order, win_rates, order_agreement, pairwise_stats,
                  verdict_win, verdict_token_ids (position_bias: selfplay.monitors, re-exported here)
    constitution  ConstitutionRevisionJudge
    program       ProgramJudge, Program, load_program, run_program
    human         HumanJudge, HumanLabel, load_labels
    injection     InjectionItem, Attack, InjectionCase, InjectionLift, load_injection_cases, injection_lift,
                  given_response
    (here)        choosing a judge: needs_generator, make_judge, judge_seed, judge_inputs, preflight_judge

Everything public is importable from `selfplay.judges` itself.
"""

from __future__ import annotations

from typing import cast

from selfplay.config import JudgeConfig
from selfplay.constitutions import load_constitution
from selfplay.generation import Generator
from selfplay.judges.base import EMPTY, TEMPLATE_VARIABLES, Judge, JudgeError, check_template
from selfplay.judges.constitution import ConstitutionRevisionJudge
from selfplay.judges.human import HumanJudge, HumanLabel, load_labels
from selfplay.judges.injection import (
    Attack,
    InjectionCase,
    InjectionItem,
    InjectionLift,
    given_response,
    injection_lift,
    load_injection_cases,
)
from selfplay.judges.pairwise import (
    PairwiseJudge,
    Verdict,
    comparison_order,
    order_agreement,
    pairwise_stats,
    verdict_token_ids,
    verdict_win,
    win_rates,
)
from selfplay.judges.pointwise import PointwiseJudge, expected_score, parse_score, score_token_ids
from selfplay.judges.program import Program, ProgramJudge, load_program, run_program
from selfplay.monitors import position_bias
from selfplay.records import Generation, Judgement, Prompt, derive_seed, read_records
from selfplay.templates import load_template

__all__ = [
    "EMPTY",
    "TEMPLATE_VARIABLES",
    "Attack",
    "ConstitutionRevisionJudge",
    "HumanJudge",
    "HumanLabel",
    "InjectionCase",
    "InjectionItem",
    "InjectionLift",
    "Judge",
    "JudgeError",
    "PairwiseJudge",
    "PointwiseJudge",
    "Program",
    "ProgramJudge",
    "Verdict",
    "check_template",
    "comparison_order",
    "expected_score",
    "given_response",
    "injection_lift",
    "judge_inputs",
    "judge_seed",
    "load_injection_cases",
    "load_labels",
    "load_program",
    "make_judge",
    "needs_generator",
    "order_agreement",
    "pairwise_stats",
    "parse_score",
    "position_bias",
    "preflight_judge",
    "run_program",
    "score_token_ids",
    "verdict_token_ids",
    "verdict_win",
    "win_rates",
]


# --- choosing a judge -----------------------------------------------------------------------------------


def needs_generator(cfg: JudgeConfig) -> bool:
    """Program and human judges need no model: the loop should not start an engine for them."""
    return cfg.kind not in ("program", "human")


def make_judge(cfg: JudgeConfig, gen: Generator | None, seed: int = 0) -> Judge:
    """The judge `cfg` asks for, reading through `gen` (None for program and human judges). `seed` draws
    constitution principles; derive it from (run seed, iteration) so reruns draw the same ones."""
    # The LLM judges get None only from preflight_judge, which builds a judge to check its templates and never judges.
    llm = cast(Generator, gen)
    match cfg.kind:
        case "pointwise":
            return PointwiseJudge(llm, check_template(load_template(cfg.template), "pointwise", cfg.method), cfg)
        case "pairwise":
            return PairwiseJudge(llm, check_template(load_template(cfg.template), "pairwise", cfg.method), cfg, seed)
        case "constitution-pairwise":
            return PairwiseJudge(
                llm,
                check_template(load_template(cfg.template), "constitution-pairwise", cfg.method),
                cfg,
                seed,
                load_constitution(cfg.constitution),
            )
        case "constitution-revision":
            return ConstitutionRevisionJudge(
                llm,
                check_template(load_template(cfg.critique_template), "constitution-critique"),
                check_template(load_template(cfg.revision_template), "constitution-revision"),
                load_constitution(cfg.constitution),
                cfg,
                seed,
            )
        case "program":
            assert cfg.program is not None  # JudgeConfig requires it for this kind
            return ProgramJudge(load_program(cfg.program, cfg.program_args), cfg)
        case "human":
            assert cfg.labels is not None  # JudgeConfig requires it for this kind
            return HumanJudge(cfg.labels, load_labels(cfg.labels))
    raise ValueError(f"unknown judge kind {cfg.kind!r}")


def judge_seed(run_seed: int, iteration: int) -> int:
    """The seed a run's judge draws principles with in one iteration (fresh draws every iteration)."""
    return derive_seed(run_seed, iteration, "judge")


def judge_inputs(run, k: int, ident: str) -> tuple[dict[str, str], list[str]]:
    """The user messages a run's judge reads in iteration k for one generation or comparison id, rendered
    with the current template and constitution files (`selfplay prompts render`), and notes on any file
    that changed since the iteration was judged. `run` is a loop.Run."""
    cfg, p = run.cfg.judge, run.paths(k)
    prompts, gens = read_records(p.prompts, Prompt), read_records(p.generations, Generation)
    judgements = read_records(p.judgements, Judgement) if p.judgements.exists() else []
    judge = make_judge(cfg, None, judge_seed(run.cfg.seed, k))
    match judge:
        case PointwiseJudge() | PairwiseJudge():
            texts, now = judge.inputs(prompts, gens), judge.template.hash
        case ConstitutionRevisionJudge():
            critiques = {
                j.generation_ids[0]: c
                for j in judgements
                if j.judge == "constitution-revision" and j.raw and (c := judge.critique.parse_verdict(j.raw[0]))
            }
            texts, now = judge.inputs(prompts, gens, critiques), f"{judge.critique.hash}+{judge.revision.hash}"
        case _:
            raise JudgeError(f"judge.kind {cfg.kind} reads no prompt: there is nothing to render")
    chosen = {key: text for key, text in texts.items() if ident in (key, key.rsplit("/", 1)[0]) or ident in key.split("|")}
    if not chosen:
        example = next(iter(texts), "p/g0")
        raise JudgeError(f"iteration {k}: no judge input for {ident!r} (ids look like {example.removesuffix('/j')})")
    notes = []
    recorded = {j.template_hash for j in judgements if j.template_hash}
    if recorded and now not in recorded:
        notes.append(f"the template changed since iteration {k} was judged (recorded {', '.join(sorted(recorded))}, now {now})")
    constitution = getattr(judge, "constitution", None)
    recorded = {j.constitution_hash for j in judgements if j.constitution_hash}
    if constitution is not None and recorded and constitution.hash not in recorded:
        notes.append(
            f"the constitution changed since iteration {k} was judged "
            f"(recorded {', '.join(sorted(recorded))}, now {constitution.hash})"
        )
    return chosen, notes


def preflight_judge(cfg: JudgeConfig) -> None:
    """Everything the judge will read (templates, constitution, program, labels), checked before a run
    starts an engine: bad input fails in a second."""
    make_judge(cfg, gen=None)
