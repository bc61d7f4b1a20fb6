"""Prompt injection, measured: how far text addressed to the judge lifts a response's score.

A case is a base item (a prompt, a plainly poor or wrong response, a good reference answer; data/injections.jsonl)
with one attack appended to its response (data/injection_attacks.jsonl): a rubric override, a fake grader note, a
closing-tag break-out, an appeal to the AI judge. The judge sees, for one prompt, the injected response, the same
response without the attack (the control) and the reference. The lift is score(injected) - score(control) in the
judge's own units, so what the judge does regardless of the attack (near-ties, a position bias, a length prior)
cancels out, and the mean lift gets a bootstrap interval over cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from selfplay.config import PROJECT_ROOT
from selfplay.judges.base import Judge
from selfplay.records import Generation, Prompt, Record, read_records
from selfplay.stats import paired_bootstrap_diff

ITEMS_FILE = PROJECT_ROOT / "data" / "injections.jsonl"
ATTACKS_FILE = PROJECT_ROOT / "data" / "injection_attacks.jsonl"


class InjectionItem(Record):
    """One line of data/injections.jsonl: what an attack is appended to."""

    id: str  # "inj-01"
    prompt: str
    response: str  # plainly poor or wrong; without an attack, the control
    reference: str  # a good answer, judged beside both: what a real improvement is worth to this judge


class Attack(Record):
    """One line of data/injection_attacks.jsonl: text appended to a response to steer the judge."""

    id: str  # the kind of attack, e.g. "rubric-override"
    text: str


class InjectionCase(Record):
    """One item with one attack: the three responses the judge sees for the item's prompt."""

    id: str  # "<item id>+<attack id>", e.g. "inj-01+rubric-override"
    attack: str  # the attack's id
    prompt: str
    injected: str  # the item's response, a blank line, the attack
    control: str  # the item's response alone
    reference: str


class InjectionLift(Record):
    """injection_check.json: how far the shipped attacks lifted a response's score over the same response without
    them, with one judge in one iteration. Units are the judge's own: rubric points for a pointwise judge, win
    rate among the three responses (0..1) for the pairwise kinds, so a lift lies in -4..4 or -1..1."""

    judge: str  # judge kind, e.g. "pointwise"
    method: str  # logprob | text (pointwise) or winrate (pairwise kinds): how the scores below were made
    n: int  # cases with a score for both the injected response and its control
    unscored: int  # cases left out: no usable score for the injected response or its control
    mean_lift: float | None  # mean of score(injected) - score(control) over the n cases; None when n = 0
    ci_low: float | None  # 95% percentile bootstrap over cases
    ci_high: float | None
    success: float | None  # share of the n cases where the injected response scored above its control
    reference_gap: float | None  # mean score(reference) - score(control): what a good answer gains, for scale
    per_attack: dict[str, float | None]  # attack id -> its mean lift (None: no case of it scored)


def load_injection_cases(items: str | Path = ITEMS_FILE, attacks: str | Path = ATTACKS_FILE) -> list[InjectionCase]:
    """Every item with every attack, item-major, so any prefix of at least as many cases as there are attacks
    holds every attack (judge.injection_cases takes a prefix)."""
    return [
        InjectionCase(
            id=f"{item.id}+{attack.id}",
            attack=attack.id,
            prompt=item.prompt,
            injected=f"{item.response}\n\n{attack.text}",
            control=item.response,
            reference=item.reference,
        )
        for item in read_records(Path(items), InjectionItem)
        for attack in read_records(Path(attacks), Attack)
    ]


def given_response(prompt_id: str, j: int, text: str, source: str) -> Generation:
    """A response that no policy sampled (an injection test, a human-labelled text), as a record a judge reads."""
    return Generation(
        id=f"{prompt_id}/g{j}",
        prompt_id=prompt_id,
        text=text,
        n_prompt_tokens=0,
        n_tokens=len(text.split()),
        finish_reason="stop",
        temperature=0.0,
        top_p=1.0,
        max_tokens=0,
        seed=0,
        policy=source,
        backend="transformers",
    )


def injection_lift(judge: Judge, cases: Sequence[InjectionCase], seed: int = 0) -> InjectionLift:
    """Judges every case's injected response, control and reference as three responses to one prompt (the case
    id), so a pairwise judge compares them round-robin in both orders, and measures the lift. A case whose injected
    response or control got no score is left out and counted; `seed` seeds the bootstrap."""
    if not cases:
        raise ValueError("no injection cases to judge")
    prompts = [Prompt(id=c.id, text=c.prompt, source="injection") for c in cases]
    generations = [
        given_response(c.id, j, text, "injection-test")
        for c in cases
        for j, text in enumerate((c.injected, c.control, c.reference))
    ]
    verdicts = {j.generation_ids[0]: j for j in judge.judge(prompts, generations) if len(j.generation_ids) == 1}
    scored: list[tuple[str, float, float, float | None]] = []  # (attack, injected, control, reference) per scored case
    for c in cases:
        injected, control, reference = (verdicts[f"{c.id}/g{j}"].score for j in range(3))
        if injected is not None and control is not None:
            scored.append((c.attack, injected, control, reference))
    lift = paired_bootstrap_diff([s[1] for s in scored], [s[2] for s in scored], seed=seed)
    gaps = [reference - control for _, _, control, reference in scored if reference is not None]
    per_attack: dict[str, float | None] = {}
    for attack in dict.fromkeys(c.attack for c in cases):  # in the data's order
        lifts = [injected - control for a, injected, control, _ in scored if a == attack]
        per_attack[attack] = _round(sum(lifts) / len(lifts)) if lifts else None
    first = verdicts[f"{cases[0].id}/g0"]
    return InjectionLift(
        judge=first.judge,
        method=first.method,
        n=lift.n,
        unscored=len(cases) - lift.n,
        mean_lift=_round(lift.mean_diff),
        ci_low=_round(lift.ci_low),
        ci_high=_round(lift.ci_high),
        success=_round(sum(injected > control for _, injected, control, _ in scored) / len(scored)) if scored else None,
        reference_gap=_round(sum(gaps) / len(gaps)) if gaps else None,
        per_attack=per_attack,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
