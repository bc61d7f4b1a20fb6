"""Hindsight instruction relabelling (HIR; Zhang et al. 2023, "The Wisdom of Hindsight Makes Language Models Better
Instruction Followers"): a response that failed its instruction is a correct answer to the instruction it did follow.

The checkers know what they measure, so a failed counted instruction can be rewritten to the measured value: a reply
with 5 bullets to "Use exactly 3 markdown bullet points" followed "Use exactly 5 markdown bullet points"; one of
140 words to "Keep it under 100 words" followed "Keep it under 150 words"; one in all capitals to "Write in
lowercase" followed "Write in uppercase"; one that did not end with "Thanks in advance." followed "End with '<its
own last words>'". The relabel changes both the prompt text (only the number, case word or quoted end phrase of the
instruction's own phrase) and the IFEval kwargs, and is then checked: every instruction of the new
prompt, with its new kwargs, must pass on the response, or there is no relabel. Pure functions.

Where the new value sits:
    "less than" n, measured c >= n    the next round number above c (steps of 1 below 10, 5 below 50, then 10)
    "at least" n, measured c < n      the round number at or below c; at least 1 (at least 0 asks for nothing)
    exactly n (bullets, *** paragraphs), or at least n (highlights, sections, placeholders): c itself, when
                                      it is a count worth asking for (>= 1 bullet, >= 2 paragraphs, >= 1 of the rest)
The phrase is found as a number (digits, a number word up to twenty, a round ten, "once" / "twice") followed within
four words by the instruction's unit ("3 markdown bullet points", "at least twice", "under 60 words"); "no more
than 3 sentences" is IFEval's "less than 4". A phrase not found exactly once is no relabel: the text must say what
the kwargs check.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from selfplay.ifeval.checkers import (
    capital_words,
    check,
    count_bullets,
    count_highlights,
    count_keyword,
    count_letter,
    count_placeholders,
    count_sections,
    count_sentences,
    count_star_paragraphs,
    count_words,
)

Outcome = Literal["passed", "relabelled", "uncheckable", "excluded", "no_rule", "not_measurable", "text_not_found", "not_true"]
# Why a response that failed is not relabelled, in the order they are tried:
#   uncheckable      an instruction cannot be checked (a language check without langdetect)
#   excluded         a failed instruction is not in train.hir.instructions
#   no_rule          a failed instruction has no relabel rule (keywords, quotation, JSON, ...: nothing is measured)
#   (an end phrase is relabelled to the reply's own last words; see end_words)
#   not_measurable   the measured value asks for nothing (0 bullets, at least 0 words, one *** paragraph)
#   text_not_found   the prompt's phrase for the instruction is not found exactly once, or two instructions share it
#   not_true         the relabelled prompt fails its own checkers (a case swap langdetect does not read as English)


class Change(BaseModel):
    """One instruction rewritten to what the response did."""

    instruction_id: str
    old_kwargs: dict[str, Any]
    new_kwargs: dict[str, Any]
    measured: int | None = None  # the count the checker measured on the response; None for a case swap


class Hindsight(BaseModel):
    """What one response says about its prompt: it passed, it was relabelled (the new prompt below), or why not."""

    outcome: Outcome
    failed: list[str] = []  # the instruction ids the response failed, in the prompt's order
    blocking: str | None = None  # the failed instruction that stopped a relabel (None when passed or relabelled)
    prompt: str | None = None  # relabelled: the new prompt text
    instruction_id_list: list[str] = []  # relabelled: the new prompt's ids (the same ids; case swaps change one)
    kwargs: list[dict[str, Any]] = []  # relabelled: the new prompt's kwargs, one dict per id
    changes: list[Change] = []  # relabelled: what changed


@dataclass(frozen=True)
class CountRule:
    """A counted instruction: the kwarg holding the count, its relation kwarg (None: exactly, or at least), the
    unit that follows the number in a prompt, the smallest count worth asking for, and the checker's measure."""

    count: str
    relation: str | None
    unit: str  # regex of the unit word
    minimum: int
    measure: Callable[[str, dict[str, Any]], int | None]
    exact: bool = False  # no relation kwarg: exactly n (else at least n)


COUNT_RULES: dict[str, CountRule] = {
    "length_constraints:number_words": CountRule("num_words", "relation", r"words?", 1, lambda r, k: count_words(r)),
    "length_constraints:number_sentences": CountRule(
        "num_sentences", "relation", r"sentences?", 1, lambda r, k: count_sentences(r)
    ),
    "change_case:capital_word_frequency": CountRule(
        "capital_frequency", "capital_relation", r"(?:words?|capitals?|caps)", 1, lambda r, k: len(capital_words(r))
    ),
    "keywords:frequency": CountRule("frequency", "relation", r"times?", 1, lambda r, k: count_keyword(r, k["keyword"])),
    "keywords:letter_frequency": CountRule(
        "let_frequency", "let_relation", r"times?", 1, lambda r, k: count_letter(r, k["letter"])
    ),
    "detectable_format:number_bullet_lists": CountRule(
        "num_bullets", None, r"(?:bullets?|points?|items?)", 1, lambda r, k: count_bullets(r), exact=True
    ),
    "length_constraints:number_paragraphs": CountRule(
        "num_paragraphs", None, r"paragraphs?", 2, lambda r, k: count_star_paragraphs(r), exact=True
    ),
    "detectable_format:number_highlighted_sections": CountRule(
        "num_highlights",
        None,
        r"(?:phrases?|terms?|words?|sections?|parts?|ideas?|points?)",
        1,
        lambda r, k: count_highlights(r),
    ),
    "detectable_format:multiple_sections": CountRule(
        "num_sections", None, r"(?:sections?|parts?)", 1, lambda r, k: count_sections(r, k["section_spliter"])
    ),
    "detectable_content:number_placeholders": CountRule(
        "num_placeholders", None, r"placeholders?", 1, lambda r, k: count_placeholders(r)
    ),
}
# Case swaps: a reply wholly in the other case followed the other case instruction. The prompt's one case phrase
# (none other may appear) becomes the other's.
CASE_SWAPS = {
    "change_case:english_lowercase": ("change_case:english_capital", "uppercase"),
    "change_case:english_capital": ("change_case:english_lowercase", "lowercase"),
}
CASE_PHRASE = re.compile(
    r"\b(?:lower[- ]?case(?: letters)?|upper[- ]?case(?: letters)?|capital letters|capitals|all caps|caps lock)\b",
    re.IGNORECASE,
)
# An end phrase: a reply that ends otherwise ended with its own last words (at most END_WORDS of them, from its last
# sentence); the prompt's one quoted copy of the old phrase becomes them.
END_WORDS = 6
RULE_IDS = frozenset(COUNT_RULES) | frozenset(CASE_SWAPS) | {"startend:end_checker"}  # what train.hir.instructions may name

_WORD_NUMBERS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100}
_TIMES = {"once": 1, "twice": 2}
_NUMBER = re.compile(r"\b(\d+|" + "|".join(list(_WORD_NUMBERS) + list(_TIMES)) + r")\b", re.IGNORECASE)
_AT_MOST = re.compile(r"\b(?:no more than|not more than|at most|up to|maximum of|max(?:imum)?)\s*$", re.IGNORECASE)


def _value(token: str) -> int:
    low = token.lower()
    return int(token) if token.isdigit() else _WORD_NUMBERS.get(low, _TIMES.get(low, -1))


def _step(c: int) -> int:
    return 1 if c < 10 else 5 if c < 50 else 10


def round_above(c: int) -> int:
    """The round number above c: a "less than" bound the measured count c meets."""
    return (c // _step(c) + 1) * _step(c)


def round_below(c: int) -> int:
    """The round number at or below c: an "at least" bound the measured count c meets."""
    return (c // _step(c)) * _step(c)


@dataclass(frozen=True)
class Phrase:
    start: int
    end: int  # the number token's span in the prompt
    offset: int  # the number the text says minus the kwarg (-1 for "no more than 3" = less than 4)
    times: bool  # the token is "once" / "twice"


def find_count_phrase(text: str, rule: CountRule, n: int, relation: str | None) -> Phrase | None:
    """The one number in `text` that states the kwarg n of this instruction, followed by its unit; None when there
    is none or more than one."""
    unit = re.compile(r"(?:[\s\w'*-]{0,40}?)\b" + rule.unit + r"\b", re.IGNORECASE)
    found = []
    for m in _NUMBER.finditer(text):
        v, times = _value(m.group(1)), m.group(1).lower() in _TIMES
        if times and rule.unit != r"times?":
            continue
        if not times and not _within_words(unit, text, m.end()):
            continue
        if v == n:
            found.append(Phrase(m.start(), m.end(), 0, times))
        elif relation == "less than" and v == n - 1 and _AT_MOST.search(text[max(0, m.start() - 24) : m.start()]):
            found.append(Phrase(m.start(), m.end(), -1, times))
    return found[0] if len(found) == 1 else None


def _within_words(unit: re.Pattern, text: str, end: int) -> bool:
    """The unit follows the number within four words, with no other number between (which the unit would belong to)."""
    m = unit.match(text, end)
    return m is not None and len(re.findall(r"[\w'*-]+", text[end : m.end()])) <= 5 and not _NUMBER.search(text[end : m.end()])


def end_words(response: str) -> str | None:
    """The response's own ending, as the end checker reads it: the last words of its last line (at most END_WORDS,
    within its last sentence); None when that ending holds no word or a quote mark (it could not be quoted)."""
    line = response.strip().strip('"').splitlines()[-1].strip() if response.strip().strip('"') else ""
    sentences = re.split(r"(?<=[.!?])\s+", line)
    words = list(re.finditer(r"\S+", sentences[-1] if sentences else ""))
    if not words:
        return None
    offset = len(line) - len(sentences[-1])
    ending = line[offset + words[-min(END_WORDS, len(words))].start() :]
    return ending if re.search(r"\w", ending) and not re.search("['\"\u2018\u2019\u201c\u201d]", ending) else None


def _number_text(value: int, phrase: Phrase) -> str:
    if phrase.times:
        return {1: "once", 2: "twice"}.get(value, f"{value} times")
    return str(value)


def _relabel_count(
    instruction_id: str, kwargs: dict[str, Any], response: str, text: str
) -> tuple[Outcome, dict[str, Any], Phrase | None, int | None]:
    """The new kwargs of a failed counted instruction and where its number sits, or why there are none."""
    rule = COUNT_RULES[instruction_id]
    measured = rule.measure(response, kwargs)
    n, relation = kwargs[rule.count], kwargs.get(rule.relation) if rule.relation else None
    if measured is None:
        return "not_measurable", {}, None, None
    if relation == "less than":
        new = round_above(measured)
    elif relation == "at least":
        new = round_below(measured)
    else:
        new = measured
    if new < rule.minimum:
        return "not_measurable", {}, None, measured
    phrase = find_count_phrase(text, rule, n, relation)
    if phrase is None:
        return "text_not_found", {}, None, measured
    labels = instruction_id == "detectable_format:multiple_sections" and re.escape(kwargs["section_spliter"]) + r"\s*\d"
    if labels and re.search(labels, text):
        return "text_not_found", {}, None, measured  # "labelled Day 1 to Day 3" states the old count a second time
    return "relabelled", {**kwargs, rule.count: new}, phrase, measured


def hindsight(
    text: str,
    instruction_ids: Sequence[str],
    kwargs: Sequence[dict[str, Any]],
    response: str,
    allowed: Collection[str] | None = None,
) -> Hindsight:
    """What `response` followed of the prompt `text` with these IFEval instructions: passed, relabelled (every
    failed instruction rewritten to the measured value, the new prompt checked to pass on the response), or why
    not. `allowed`: the instruction ids that may be relabelled (None = every id with a rule)."""
    kwargs = [{k: v for k, v in kw.items() if v is not None} for kw in kwargs]
    try:
        verdicts = [check(i, kw, response) for i, kw in zip(instruction_ids, kwargs, strict=True)]
    except ValueError:  # an unknown id or ill-typed kwargs: nothing about this prompt can be checked
        return Hindsight(outcome="uncheckable")
    failed = [i for i, v in zip(instruction_ids, verdicts, strict=True) if v is False]
    if None in verdicts:
        return Hindsight(outcome="uncheckable", failed=failed, blocking=instruction_ids[verdicts.index(None)])
    if not failed:
        return Hindsight(outcome="passed")
    new_ids, new_kwargs = list(instruction_ids), [dict(kw) for kw in kwargs]
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement) in the original text
    changes: list[Change] = []
    for index, (instruction_id, verdict) in enumerate(zip(instruction_ids, verdicts, strict=True)):
        if verdict:
            continue
        if allowed is not None and instruction_id not in allowed:
            return Hindsight(outcome="excluded", failed=failed, blocking=instruction_id)
        if instruction_id in COUNT_RULES:
            outcome, changed, phrase, measured = _relabel_count(instruction_id, kwargs[index], response, text)
            if outcome != "relabelled" or phrase is None:
                return Hindsight(outcome=outcome, failed=failed, blocking=instruction_id)
            rule = COUNT_RULES[instruction_id]
            said = changed[rule.count] + phrase.offset
            edits.append((phrase.start, phrase.end, _number_text(said, phrase)))
            new_kwargs[index] = changed
            changes.append(Change(instruction_id=instruction_id, old_kwargs=kwargs[index], new_kwargs=changed, measured=measured))
        elif instruction_id == "startend:end_checker":
            old, new = kwargs[index]["end_phrase"], end_words(response)
            if new is None:
                return Hindsight(outcome="not_measurable", failed=failed, blocking=instruction_id)
            if text.count(old) != 1:
                return Hindsight(outcome="text_not_found", failed=failed, blocking=instruction_id)
            start = text.index(old)
            edits.append((start, start + len(old), new))
            new_kwargs[index] = {"end_phrase": new}
            changes.append(Change(instruction_id=instruction_id, old_kwargs=kwargs[index], new_kwargs=new_kwargs[index]))
        elif instruction_id in CASE_SWAPS:
            other, word = CASE_SWAPS[instruction_id]
            phrases = list(CASE_PHRASE.finditer(text))
            if not check(other, {}, response):
                return Hindsight(outcome="not_measurable", failed=failed, blocking=instruction_id)
            if len(phrases) != 1 or "change_case:capital_word_frequency" in instruction_ids:
                return Hindsight(outcome="text_not_found", failed=failed, blocking=instruction_id)
            edits.append((phrases[0].start(), phrases[0].end(), word))
            new_ids[index] = other
            changes.append(Change(instruction_id=instruction_id, old_kwargs={}, new_kwargs={}))
        else:
            return Hindsight(outcome="no_rule", failed=failed, blocking=instruction_id)
    edits += _other_phrases(text, instruction_ids, kwargs, verdicts)
    new_text = _apply(text, edits)
    if new_text is None or not _states(new_text, changes):  # two phrases overlap, or the new number reads two ways
        return Hindsight(outcome="text_not_found", failed=failed, blocking=changes[-1].instruction_id)
    # The hindsight label must be true: every instruction of the new prompt passes with its new kwargs. The rules
    # above make it so; a relabel that still fails is counted (not_true), never trained on.
    if not all(check(i, kw, response) for i, kw in zip(new_ids, new_kwargs, strict=True)):
        return Hindsight(outcome="not_true", failed=failed, blocking=changes[-1].instruction_id)
    return Hindsight(
        outcome="relabelled",
        failed=failed,
        prompt=new_text,
        instruction_id_list=new_ids,
        kwargs=new_kwargs,
        changes=changes,
    )


def _other_phrases(
    text: str, instruction_ids: Sequence[str], kwargs: Sequence[dict[str, Any]], verdicts: Sequence[bool | None]
) -> list[tuple[int, int, str]]:
    """The phrases of the counted instructions that passed, kept as they are: a relabel that would rewrite one of
    them (two instructions read as the same number) overlaps it, and is refused."""
    kept = []
    for instruction_id, kw, verdict in zip(instruction_ids, kwargs, verdicts, strict=True):
        if verdict and instruction_id in COUNT_RULES:
            rule = COUNT_RULES[instruction_id]
            phrase = find_count_phrase(text, rule, kw[rule.count], kw.get(rule.relation) if rule.relation else None)
            if phrase:
                kept.append((phrase.start, phrase.end, text[phrase.start : phrase.end]))
    return kept


def _states(text: str, changes: Sequence[Change]) -> bool:
    """Every rewritten count is found, once, in the new text, as the old one was in the old text."""
    for change in changes:
        rule = COUNT_RULES.get(change.instruction_id)
        if rule:
            relation = change.new_kwargs.get(rule.relation) if rule.relation else None
            if find_count_phrase(text, rule, change.new_kwargs[rule.count], relation) is None:
                return False
    return True


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str | None:
    """The text with each span replaced; None when spans overlap."""
    out, last = [], 0
    for start, end, replacement in sorted(edits):
        if start < last:
            return None
        out += [text[last:start], replacement]
        last = end
    return "".join(out) + text[last:]
