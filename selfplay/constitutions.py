"""Constitutions: named, versioned lists of principles, each a critique request, a revision request and a
comparison question (Constitutional AI, Bai et al. 2022, §3 and §4; RLAIF, Lee et al. 2023).

A constitution is validated on load (no principles, an unknown key, an empty field or a repeated
principle id is a one-line `ConstitutionError`) and its file hash is recorded in every judgement it
shaped. A principle is drawn per record with a seed derived from the run, so a rerun draws the same one.
`revision_pairs` turns critique -> revision judgements into preference pairs.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from selfplay.config import PROJECT_ROOT, ConfigError, resolve_data_path
from selfplay.filtering import SFTExample
from selfplay.records import Generation, Judgement, Pair, PairingStats, Prompt


class ConstitutionError(ConfigError):
    """A constitution that cannot be used; one line naming the file and the problem."""


class Principle(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][\w.-]*$")  # recorded in judgements; a slug
    critique: str = Field(min_length=1)  # asks the model to point out where a response falls short
    revision: str = Field(min_length=1)  # asks the model to rewrite the response to fix that
    comparison: str = Field(min_length=1)  # a question that picks the better of two responses


class Constitution(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    version: int = Field(ge=1)
    description: str = ""
    principles: list[Principle]
    hash: str = ""  # sha256 of the file, first 12 hex; filled on load

    @field_validator("principles")
    @classmethod
    def _some_unique_principles(cls, value: list[Principle]) -> list[Principle]:
        if not value:
            raise ValueError("no principles; a constitution needs at least one")
        seen: set[str] = set()
        for p in value:
            if p.id in seen:
                raise ValueError(f"principle id {p.id!r} appears twice")
            seen.add(p.id)
        return value

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def sample(self, seed: int) -> Principle:
        """One principle, drawn uniformly with `seed` (derive it from the record's id for reruns)."""
        return self.principles[random.Random(seed).randrange(len(self.principles))]


def constitution_path(name: str) -> Path:
    """A constitution name ('concise') in ./constitutions or the shipped ones, or a path to a YAML file."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return resolve_data_path(name)
    return resolve_data_path(f"constitutions/{name}.yaml")


def parse_constitution(text: str, path: Path | str) -> Constitution:
    """Validates a constitution's text; `path` names it in errors; the hash is of the UTF-8 text."""
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConstitutionError(f"{path}: not valid YAML ({err.__class__.__name__})") from None
    if not isinstance(tree, dict):
        raise ConstitutionError(f"{path}: expected a mapping with name, version, description, principles")
    if not tree.get("principles"):  # the common mistake gets its own plain message
        raise ConstitutionError(f"{path}: no principles; a constitution needs at least one (id, critique, revision, comparison)")
    try:
        return Constitution.model_validate({**tree, "hash": hashlib.sha256(text.encode()).hexdigest()[:12]})
    except ValidationError as err:
        errors = err.errors()
        # A typo shows as an unknown key and a missing one; the unknown key names the cause.
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        where = ".".join(str(x) for x in first["loc"]) or "constitution"
        if first["type"] == "extra_forbidden":
            allowed = Principle.model_fields if len(first["loc"]) > 1 else Constitution.model_fields
            msg = f"unknown key (expected {', '.join(k for k in allowed if k != 'hash')})"
        else:
            msg = str(first["msg"]).removeprefix("Value error, ")
        raise ConstitutionError(f"{path}: {where}: {msg}") from None


def load_constitution(name: str) -> Constitution:
    path = constitution_path(name)
    try:
        text = path.read_bytes().decode("utf-8")  # bytes, not read_text: the hash must match the file's bytes
    except FileNotFoundError:
        raise ConstitutionError(f"{path}: no such constitution (selfplay constitution list shows them)") from None
    except UnicodeDecodeError as err:
        raise ConstitutionError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:  # a directory, no permission
        raise ConstitutionError(f"{path}: cannot read the constitution ({err.strerror})") from None
    return parse_constitution(text, path)


def shipped_dir() -> Path:
    return PROJECT_ROOT / "constitutions"


def revision_pairs(
    prompts: Sequence[Prompt], generations: Sequence[Generation], judgements: Sequence[Judgement]
) -> tuple[list[Pair], PairingStats]:
    """Constitutional AI's preference data from critique -> revision judgements: per revised response a
    pair, revision (chosen) vs original (rejected). Pure, like `pairing.make_pairs`, and a drop-in for it
    when judge.kind is constitution-revision.

    The revision is raw[2] of an "ok" judgement (see judges.ConstitutionRevisionJudge). Scores are 1 and 0
    by construction (the revision is preferred), so margin = 1. Failed revisions are counted in
    `skipped_few_scored`; a revision identical to its original carries no preference and is counted in
    `skipped_tie`. One pair per response, so pair ids are "<generation_id>/p".
    """
    prompt_by_id = {p.id: p for p in prompts}
    gen_by_id = {g.id: g for g in generations}
    pairs, failed, same = [], 0, 0
    for j in sorted((j for j in judgements if j.judge == "constitution-revision"), key=lambda j: j.id):
        original = gen_by_id[j.generation_ids[0]]
        if j.status != "ok" or len(j.raw) < 3:
            failed += 1
            continue
        revision = j.raw[2]
        if revision.strip() == original.text.strip():
            same += 1
            continue
        pairs.append(
            Pair(
                id=f"{original.id}/p",
                prompt_id=original.prompt_id,
                prompt=prompt_by_id[original.prompt_id].text,
                chosen=revision,
                rejected=original.text,
                chosen_id=f"{original.id}/revision",
                rejected_id=original.id,
                chosen_score=1.0,
                rejected_score=0.0,
                margin=1.0,
                judge="constitution-revision",
                template_hash=j.template_hash,
                constitution_hash=j.constitution_hash,
                principle=j.principle,
            )
        )
    stats = PairingStats(
        prompts=len(prompts), pairs=len(pairs), skipped_few_scored=failed, skipped_tie=same, mean_margin=1.0 if pairs else None
    )
    return pairs, stats


def chosen_sft_examples(pairs: Sequence[Pair]) -> list[SFTExample]:
    """Supervised examples from the chosen side of pairs: each chosen text becomes the completion for its prompt.
    Constitutional AI's supervised stage (Bai et al. 2022, §3) fine-tunes on the revisions this way; the seed
    warm-up (human.seed_warmup=sft) on the texts people chose."""
    return [
        SFTExample(
            id=f"{p.chosen_id}/sft",
            prompt_id=p.prompt_id,
            prompt=p.prompt,
            completion=p.chosen,
            generation_id=p.rejected_id,
            score=p.chosen_score,
            judge=p.judge,
        )
        for p in pairs
    ]
