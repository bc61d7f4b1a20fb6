"""Self-written prompts: the policy writes new instructions from a few pool examples (Self-Rewarding LMs,
Yuan et al. 2024, §2.3; Self-Instruct, Wang et al. 2023).

Each candidate is written from its own seeded draw of `prompts.self_instruct_shots` pool examples, then
filtered: empty (nothing parsed), too short or too long (words), a refusal, or a near-duplicate (word n-gram
overlap, filtering.dedupe) of a pool prompt, a held-out evaluation prompt or an earlier new prompt. Every
drop is counted and kept with its reason. Held-out evaluation prompts are never shown as examples, and a new
prompt that nearly copies one is dropped, so self-instruction cannot leak the evaluation set into training.

A kept prompt is `Prompt(id="si-<iteration>-<attempt>", source="self-instruct", meta={"examples": [pool ids],
"policy": model dir, "iteration": k, "template": name@version, "template_hash": ...})`.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel

from selfplay.config import PromptsConfig, RunConfig, resolve_data_path
from selfplay.filtering import dedupe
from selfplay.generation import Generator, chat_ids
from selfplay.judges import check_template
from selfplay.pool import load_pool, pool_prompts, sample_prompts
from selfplay.records import Prompt, derive_seed
from selfplay.templates import Template, TemplateError, load_template

# Openings of a reply that declines instead of writing a task (checked on the parsed task, case-insensitive).
REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry\b|i apologi[sz]e|i can'?t\b|i cannot|i can not|i'?m (?:not able|unable)"
    r"|i am (?:not able|unable)|i won'?t\b|as an ai\b)|\bas an ai (?:language )?model\b",
    re.IGNORECASE,
)

Reason = Literal[
    "empty", "too_short", "too_long", "refusal", "duplicate_pool", "duplicate_heldout", "duplicate_new", "over_quota"
]


class DroppedPrompt(BaseModel):
    id: str  # the id it would have had
    text: str  # the parsed task ("" when nothing parsed), else the raw reply
    reason: Reason
    overlap: float | None = None  # duplicates: n-gram overlap with the text it copies, 0..1
    of: str | None = None  # duplicates: id of the prompt it copies


class SelfInstructStats(BaseModel):
    """For the manifest: where every written candidate went. attempts = kept + the drops."""

    attempts: int
    kept: int
    empty: int = 0
    too_short: int = 0
    too_long: int = 0
    refusal: int = 0
    duplicate_pool: int = 0
    duplicate_heldout: int = 0
    duplicate_new: int = 0
    over_quota: int = 0  # passed every filter after self_instruct_new were already kept
    examples_available: int  # pool prompts eligible as examples (the pool less held-out prompts)
    template: str  # name@version#hash
    dropped: list[DroppedPrompt] = []


def check_self_instruct_template(template: Template) -> Template:

    try:
        return check_template(template, "self-instruct")
    except TemplateError as err:
        raise TemplateError(f"prompts.self_instruct_template: {err}") from None


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def parse_task(template: Template, reply: str) -> str:
    """The task in a reply that began with the template's forced prefix; "" when none parses."""
    match = re.search(template.parse, (template.score_prefix or "") + reply)
    task = match.group(1).strip() if match else ""
    return task.strip("\"'“”").strip()


def self_instruct_prompts(
    gen: Generator, pool: Sequence[Prompt], cfg: PromptsConfig, seed: int, iteration: int, exclude: Sequence[Prompt] = ()
) -> tuple[list[Prompt], SelfInstructStats]:
    """Up to `cfg.self_instruct_new` new prompts written by `gen`'s model from few-shot pool examples;
    `exclude` (held-out evaluation prompts) are never examples, and new prompts may not nearly copy them."""
    template = check_self_instruct_template(load_template(cfg.self_instruct_template))
    held_ids, held_texts = {p.id for p in exclude}, {_norm(p.text) for p in exclude}
    examples = [p for p in pool if p.id not in held_ids and _norm(p.text) not in held_texts]
    if not examples:
        raise ValueError("self-instruct: every pool prompt is a held-out evaluation prompt; no examples to show")
    attempts = math.ceil(cfg.self_instruct_new * cfg.self_instruct_oversample)
    shots, rendered = [], []
    for i in range(attempts):
        drawn = random.Random(derive_seed(seed, iteration, "self-instruct", i)).sample(
            examples, min(cfg.self_instruct_shots, len(examples))
        )
        shots.append(drawn)
        rendered.append(template.render(examples="\n\n".join(f"Task: {p.text.strip()}" for p in drawn)))
    ids = [chat_ids(gen.tokenizer, text, assistant_prefix=template.score_prefix or "") for text in rendered]
    replies = [
        outs[0] if outs else ""
        for outs in gen.complete(ids, n=1, temperature=cfg.self_instruct_temperature, max_tokens=cfg.self_instruct_max_tokens)
    ]
    tasks = [parse_task(template, r) for r in replies]

    stats = SelfInstructStats(
        attempts=attempts, kept=0, examples_available=len(examples), template=f"{template.ref}#{template.hash}"
    )
    cand_ids = [f"si-{iteration:03d}-{i:03d}" for i in range(attempts)]

    def drop(i: int, reason: Reason, **extra) -> None:
        setattr(stats, reason, getattr(stats, reason) + 1)
        stats.dropped.append(DroppedPrompt(id=cand_ids[i], text=tasks[i] or replies[i], reason=reason, **extra))

    passing: list[int] = []
    for i, task in enumerate(tasks):
        words = len(re.findall(r"\w+", task))
        if not task:
            drop(i, "empty")
        elif words < cfg.self_instruct_min_words:
            drop(i, "too_short")
        elif words > cfg.self_instruct_max_words:
            drop(i, "too_long")
        elif REFUSAL.search(task):
            drop(i, "refusal")
        else:
            passing.append(i)
    against = list(pool) + list(exclude)
    verdicts = dedupe(
        [tasks[i] for i in passing],
        [p.text for p in against],
        n=cfg.self_instruct_ngram,
        max_overlap=cfg.self_instruct_max_overlap,
    )
    kept: list[Prompt] = []
    for i, dup in zip(passing, verdicts, strict=True):
        if dup is not None:
            if dup.of == "earlier":
                drop(i, "duplicate_new", overlap=dup.overlap, of=cand_ids[passing[dup.index]])
            else:
                copied = against[dup.index]
                drop(i, "duplicate_pool" if dup.index < len(pool) else "duplicate_heldout", overlap=dup.overlap, of=copied.id)
        elif len(kept) >= cfg.self_instruct_new:
            drop(i, "over_quota")
        else:
            kept.append(
                Prompt(
                    id=cand_ids[i],
                    text=tasks[i],
                    source="self-instruct",
                    meta={
                        "examples": [p.id for p in shots[i]],
                        "policy": str(gen.model_dir),
                        "iteration": iteration,
                        "template": template.ref,
                        "template_hash": template.hash,
                    },
                )
            )
    stats.kept = len(kept)
    return kept, stats


HELDOUT_SPLIT = "data/ifeval/heldout.jsonl"  # the project's committed held-out split (selfplay.split)
INDEPENDENT_SET = "data/ifeval/independent.jsonl"  # its second held-out set, phrased apart from the pools (data/ifeval/README.md)


def preflight_prompts(cfg: PromptsConfig) -> None:
    """Checks, before an engine starts, what writing prompts will read: the pool and the template."""
    pool_prompts(cfg)
    if cfg.source in ("self-instruct", "mixed"):
        check_self_instruct_template(load_template(cfg.self_instruct_template))


def heldout_prompts(cfg: RunConfig) -> list[Prompt]:
    """The run's held-out evaluation prompts: eval.prompts, eval.ifeval, eval.ifeval_independent and the shipped
    held-out split and independent set (those files that exist), less the prompts of the run's own pool (a prompt
    the run trains on is not held out, so an IFEval file that also holds the training split leaves the pool usable)."""
    pool = pool_prompts(cfg.prompts)
    pool_ids, pool_texts = {p.id for p in pool}, {_norm(p.text) for p in pool}
    paths = ([cfg.eval.prompts] if cfg.eval.prompts else []) + [
        path
        for path in (cfg.eval.ifeval, cfg.eval.ifeval_independent, HELDOUT_SPLIT, INDEPENDENT_SET)
        if path and resolve_data_path(path).exists()
    ]
    out: dict[str, Prompt] = {}
    for path in paths:
        for p in load_pool(path):
            if p.id not in pool_ids and _norm(p.text) not in pool_texts:
                out.setdefault(p.id, p)
    return list(out.values())


def iteration_prompts(
    cfg: PromptsConfig, seed: int, iteration: int, policy: Callable[[], Generator], exclude: Sequence[Prompt] = ()
) -> tuple[list[Prompt], SelfInstructStats | None]:
    """The prompts of iteration k by `cfg.source`; `policy()` opens the policy's generator, and is called
    only when the policy writes prompts (pool runs start no engine here)."""
    match cfg.source:
        case "pool":
            return sample_prompts(cfg, seed, iteration), None
        case "self-instruct":
            return self_instruct_prompts(policy(), pool_prompts(cfg), cfg, seed, iteration, exclude)
        case "mixed":
            base = sample_prompts(cfg, seed, iteration)
            new, stats = self_instruct_prompts(policy(), pool_prompts(cfg), cfg, seed, iteration, exclude)
            taken = {p.id for p in base}
            return base + [p for p in new if p.id not in taken], stats
    raise ValueError(f"prompts.source {cfg.source!r} is not written here; pool, self-instruct or mixed (evol: selfplay.evol)")
