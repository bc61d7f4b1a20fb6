"""Evolved prompts: a model rewrites pool prompts into harder or more specific ones (Evol-Instruct's in-depth
evolving; Xu et al. 2023, WizardLM), by operations an editable template names (prompts/evol.yaml, kind evol: one template over
{prompt} and {operation}, and the text of each operation: add a constraint, deepen, concretise, increase the
reasoning steps).

Each attempt takes a parent from the iteration's pool slice and an operation, both drawn with a derived seed, and
asks the writer (the policy, or the judge's model) for one rewrite. Rewrites are filtered, each drop counted and kept
with its reason: empty (nothing parsed), too long (words), a refusal ("As an AI ..."), template words (it talks
about "the given request" instead of being one), a copy of its parent (its word n-grams nearly all its parent's:
nothing added), a near-duplicate (filtering.ngram_overlap) of another pool prompt, of a held-out evaluation prompt,
or of an earlier kept rewrite (two rewrites of one parent compare only what each added), and over the quota. Held-out
evaluation prompts are never parents, and a rewrite that nearly copies one is dropped, so evolution cannot leak the
evaluation set into training (as in selfplay/selfinstruct.py).

A kept prompt is `Prompt(id="evol-<iteration>-<attempt>", source="evol", meta={"parent": pool id, "operation": name,
"policy": writer's model dir, "iteration": k, "template": name@version, "template_hash": ...})`. It carries none of
its parent's meta: an IFEval parent's instruction ids need not hold for the rewrite.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel

from selfplay.config import PromptsConfig
from selfplay.filtering import ngram_overlap, word_ngrams
from selfplay.generation import Generator, chat_ids
from selfplay.judges import check_template
from selfplay.pool import pool_prompts, sample_prompts
from selfplay.records import Prompt, derive_seed
from selfplay.selfinstruct import REFUSAL, parse_task
from selfplay.templates import Template, TemplateError, load_template

# A rewrite that talks about the rewriting instead of being a request (Evol-Instruct drops those too, §3.2).
TEMPLATE_WORDS = re.compile(r"\b(?:rewritten|given|original|new) (?:request|prompt|instruction)\b", re.IGNORECASE)

Reason = Literal[
    "empty",
    "too_long",
    "refusal",
    "template_words",
    "copy_of_parent",
    "duplicate_pool",
    "duplicate_heldout",
    "duplicate_new",
    "over_quota",
]


def load_evol_template(name: str) -> Template:
    """prompts.evol_template, checked: a template of kind evol over {prompt} and {operation}, with its operations.
    Any problem is one TemplateError line."""
    try:
        return check_template(load_template(name), "evol")
    except TemplateError as err:
        raise TemplateError(f"prompts.evol_template: {err}") from None


def evol_operations(template: Template, cfg: PromptsConfig) -> list[str]:
    """The operations to draw from: prompts.evol_operations, each one the template defines, or all of them."""
    if cfg.evol_operations is None:
        return list(template.operations)
    unknown = [op for op in cfg.evol_operations if op not in template.operations]
    if unknown:
        raise TemplateError(
            f"prompts.evol_operations: {unknown[0]!r} is not an operation of {template.ref} ({', '.join(template.operations)})"
        )
    return list(cfg.evol_operations)


def preflight_evol(cfg: PromptsConfig) -> None:
    """Before an engine starts: the template and the operations chosen from it."""
    if cfg.source == "evol":
        evol_operations(load_evol_template(cfg.evol_template), cfg)


class DroppedEvol(BaseModel):
    id: str  # the id it would have had
    parent: str
    operation: str
    text: str  # the parsed rewrite ("" when nothing parsed), else the raw reply
    reason: Reason
    overlap: float | None = None  # copies and duplicates: the n-gram overlap, 0..1
    of: str | None = None  # duplicates: the id of the prompt it copies


class OperationCounts(BaseModel):
    attempts: int = 0
    kept: int = 0


class EvolStats(BaseModel):
    """For the manifest: where every rewrite went. attempts = kept + the drops."""

    attempts: int
    kept: int
    empty: int = 0
    too_long: int = 0
    refusal: int = 0
    template_words: int = 0
    copy_of_parent: int = 0
    duplicate_pool: int = 0
    duplicate_heldout: int = 0
    duplicate_new: int = 0
    over_quota: int = 0  # passed every filter after evol_new were already kept
    parents_available: int  # the iteration's pool prompts eligible as parents (less held-out ones)
    operations: dict[str, OperationCounts]  # per operation: attempted and kept
    template: str  # name@version#hash
    dropped: list[DroppedEvol] = []


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def evolve_prompts(
    gen: Generator,
    parents: Sequence[Prompt],
    pool: Sequence[Prompt],
    cfg: PromptsConfig,
    seed: int,
    iteration: int,
    exclude: Sequence[Prompt] = (),
) -> tuple[list[Prompt], EvolStats]:
    """Up to `cfg.evol_new` rewrites of `parents` (less any held-out prompt of `exclude`) by `gen`'s model, filtered
    and deduplicated against `pool`, `exclude` and each other."""
    template = load_evol_template(cfg.evol_template)
    operations = evol_operations(template, cfg)
    held_ids, held_texts = {p.id for p in exclude}, {_norm(p.text) for p in exclude}
    eligible = [p for p in parents if p.id not in held_ids and _norm(p.text) not in held_texts]
    if not eligible:
        raise ValueError("evol: every parent prompt is a held-out evaluation prompt; nothing to evolve")
    attempts = math.ceil(cfg.evol_new * cfg.evol_oversample)
    # Parents in turn (the pool slice is already a seeded shuffle), each attempt's operation from its own seed.
    drawn = [
        (eligible[i % len(eligible)], random.Random(derive_seed(seed, iteration, "evol", i)).choice(operations))
        for i in range(attempts)
    ]
    ids = [
        chat_ids(
            gen.tokenizer,
            template.render(prompt=parent.text, operation=template.operations[op]),
            assistant_prefix=template.score_prefix or "",
        )
        for parent, op in drawn
    ]
    replies = [
        outs[0] if outs else ""
        for outs in gen.complete(ids, n=1, temperature=cfg.evol_temperature, max_tokens=cfg.evol_max_tokens)
    ]
    texts = [parse_task(template, reply) for reply in replies]
    stats = EvolStats(
        attempts=attempts,
        kept=0,
        parents_available=len(eligible),
        operations={op: OperationCounts() for op in operations},
        template=f"{template.ref}#{template.hash}",
    )
    cand_ids = [f"evol-{iteration:03d}-{i:03d}" for i in range(attempts)]

    def drop(i: int, reason: Reason, **extra) -> None:
        setattr(stats, reason, getattr(stats, reason) + 1)
        parent, op = drawn[i]
        stats.dropped.append(
            DroppedEvol(id=cand_ids[i], parent=parent.id, operation=op, text=texts[i] or replies[i], reason=reason, **extra)
        )

    n = cfg.evol_ngram
    against = [(p, word_ngrams(p.text, n)) for p in list(pool) + list(exclude)]
    pool_ids = {p.id for p in pool}
    kept: list[Prompt] = []
    kept_grams: list[tuple[str, frozenset, frozenset, str]] = []  # (parent id, grams, grams added to the parent, id)
    for i, text in enumerate(texts):
        parent, op = drawn[i]
        stats.operations[op].attempts += 1
        if not text:
            drop(i, "empty")
            continue
        if len(re.findall(r"\w+", text)) > cfg.evol_max_words:
            drop(i, "too_long")
            continue
        if REFUSAL.search(text):
            drop(i, "refusal")
            continue
        if TEMPLATE_WORDS.search(text):
            drop(i, "template_words")
            continue
        grams, parent_grams = word_ngrams(text, n), word_ngrams(parent.text, n)
        added = grams - parent_grams
        inherited = 1 - len(added) / len(grams) if grams else 1.0
        if inherited >= cfg.evol_max_parent_overlap:
            drop(i, "copy_of_parent", overlap=round(inherited, 4), of=parent.id)
            continue
        copied = _first_copy(grams, parent.id, against, cfg.evol_max_overlap)
        if copied:
            other, overlap = copied
            drop(i, "duplicate_pool" if other.id in pool_ids else "duplicate_heldout", overlap=overlap, of=other.id)
            continue
        earlier = _earlier_copy(parent.id, grams, added, kept_grams, cfg.evol_max_overlap)
        if earlier:
            drop(i, "duplicate_new", overlap=earlier[1], of=earlier[0])
            continue
        if len(kept) >= cfg.evol_new:
            drop(i, "over_quota")
            continue
        kept_grams.append((parent.id, grams, added, cand_ids[i]))
        stats.operations[op].kept += 1
        kept.append(
            Prompt(
                id=cand_ids[i],
                text=text,
                source="evol",
                meta={
                    "parent": parent.id,
                    "operation": op,
                    "policy": str(gen.model_dir),
                    "iteration": iteration,
                    "template": template.ref,
                    "template_hash": template.hash,
                },
            )
        )
    stats.kept = len(kept)
    return kept, stats


def _first_copy(
    grams: frozenset, parent_id: str, against: Sequence[tuple[Prompt, frozenset]], max_overlap: float
) -> tuple[Prompt, float] | None:
    """The first pool or held-out prompt, other than the parent itself, the rewrite nearly copies."""
    for prompt, other in against:
        if prompt.id != parent_id and (overlap := ngram_overlap(grams, other)) >= max_overlap:
            return prompt, round(overlap, 4)
    return None


def _earlier_copy(
    parent_id: str, grams: frozenset, added: frozenset, kept: Sequence[tuple[str, frozenset, frozenset, str]], max_overlap: float
) -> tuple[str, float] | None:
    """The first kept rewrite this one nearly copies: of the same parent, in what each added to it (both share the
    parent's words by design); of another parent, in the whole text."""
    for other_parent, other_grams, other_added, other_id in kept:
        overlap = ngram_overlap(added, other_added) if other_parent == parent_id else ngram_overlap(grams, other_grams)
        if overlap >= max_overlap:
            return other_id, round(overlap, 4)
    return None


def evol_iteration_prompts(
    cfg: PromptsConfig, seed: int, iteration: int, writer: Callable[[], Generator], exclude: Sequence[Prompt] = ()
) -> tuple[list[Prompt], EvolStats]:
    """prompts.source=evol: iteration k's pool slice (kept with evol_keep_parents) and the rewrites of it that
    passed the filters; `writer()` opens the rewriting model's generator."""
    parents = sample_prompts(cfg, seed, iteration)
    new, stats = evolve_prompts(writer(), parents, pool_prompts(cfg), cfg, seed, iteration, exclude)
    return (list(parents) if cfg.evol_keep_parents else []) + new, stats
