"""What every judge shares: the Judge protocol, its error, the template check, the empty-response rule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from selfplay.config import ConfigError
from selfplay.records import Generation, Judgement, Prompt
from selfplay.templates import Template, TemplateError


class JudgeError(ConfigError):
    """A judge that cannot run as configured (bad program, bad labels file); one line saying why."""


class Judge(Protocol):
    def judge(self, prompts: Sequence[Prompt], generations: Sequence[Generation]) -> list[Judgement]: ...


# The values each kind of template is filled with; a template must declare exactly these.
TEMPLATE_VARIABLES = {
    "pointwise": {"prompt", "response"},
    "pairwise": {"prompt", "response_a", "response_b"},
    "constitution-pairwise": {"prompt", "question", "response_a", "response_b"},
    "constitution-critique": {"prompt", "response", "critique_request"},
    "constitution-revision": {"prompt", "response", "critique", "revision_request"},
    "self-instruct": {"examples"},  # not a judge: the policy writing new prompts (selfplay.selfinstruct)
    "evol": {"prompt", "operation"},  # not a judge: a model rewriting a pool prompt by one operation (selfplay.evol)
}


def check_template(template: Template, kind: str, method: str | None = None) -> Template:
    """A template fit for a judge of `kind`: same kind, exactly the variables that judge fills, and for
    the logprob method the forced prefix (and, pointwise, the scale) that method reads."""
    if template.kind != kind:
        raise TemplateError(f"template {template.ref} is for kind {template.kind}, not {kind}")
    want = TEMPLATE_VARIABLES[kind]
    if set(template.variables) != want:
        raise TemplateError(
            f"template {template.ref}: variables {sorted(template.variables)}, but a {kind} judge fills {sorted(want)}"
        )
    if kind == "evol" and not template.operations:
        raise TemplateError(f"template {template.ref}: operations: none defined; name each with the text {{operation}} takes")
    if kind == "evol" and (empty := [name for name, text in template.operations.items() if not text.strip()]):
        raise TemplateError(f"template {template.ref}: operations.{empty[0]} is empty")
    if method == "logprob" and (not template.score_prefix or (kind == "pointwise" and not template.scale)):
        needs = "score_prefix and scale" if kind == "pointwise" else "score_prefix (e.g. 'Verdict: ')"
        raise TemplateError(f"template {template.ref}: judge.method=logprob needs {needs}; set them or use judge.method=text")
    return template


def is_empty(g: Generation) -> bool:
    return not g.text.strip()


EMPTY = "empty response: not judged"
