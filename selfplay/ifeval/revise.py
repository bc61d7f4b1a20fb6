"""Program revision: rewrite a response so that it follows the checkable instructions it failed, by a fixed
rule per instruction, where a rule can do it without knowing what the answer should say.

Why: with the checkers as the judge, the verifiable config's limit is positives. In most training prompts no
sample of the 135M model passes: it never writes in lowercase, never wraps an answer in quotes, never ends with
the asked phrase (docs/method.md, attempt 3). Pairs exist only where it sometimes succeeds. A revision gives those
prompts a chosen response: Constitutional AI's revision pairs (Bai et al. 2022, revision vs original), with the
critic (the checkers) and the reviser (these rules) programs instead of the model.

A rule edits form only: case, commas, quotes, the end phrase, a title, a list or section layout, trimming to
a limit. Instructions about content (use a keyword N times, answer in French, write at least N words, add a
postscript or placeholders, give two answers, avoid a word) have no rule, and a response failing one of those gets no
revision. `revise` applies the rules for the failed instructions in a fixed order, then checks every
instruction again: it returns a revision only when all of them pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from selfplay.ifeval.checkers import SENTENCE_END, check, validate_kwargs

Rule = Callable[[str, dict[str, Any]], "str | None"]  # (response, kwargs) -> revised response; None = cannot


def complete_sentences(text: str) -> str:
    """The text up to its last sentence end: a response cut at max_tokens loses its unfinished sentence
    (an end phrase or a closing quote after half a sentence would still read as cut off). Unchanged when
    it ends a sentence already or has no sentence end at all."""
    text = text.strip()
    ends = [m.end() for m in SENTENCE_END.finditer(text)]
    return text[: ends[-1]].strip() if ends else text


def _sentences(text: str) -> list[str]:
    """Sentences with their punctuation, whitespace (newlines included) collapsed, markdown list marks dropped."""
    flat = re.sub(r"^\s*(?:[-*]|\d+[.)])\s+", "", text, flags=re.MULTILINE)
    flat = " ".join(flat.replace("**", "").split())
    out, start = [], 0
    for m in SENTENCE_END.finditer(flat):
        out.append(flat[start : m.end()].strip())
        start = m.end()
    tail = flat[start:].strip()
    return [s for s in out + ([tail] if re.search(r"\w", tail) else []) if s]


def _groups(sentences: list[str], n: int) -> list[list[str]] | None:
    """The sentences split into n consecutive, near-equal, non-empty groups; None with fewer than n."""
    if n < 1 or len(sentences) < n:
        return None
    size, extra = divmod(len(sentences), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (i < extra)
        out.append(sentences[start:end])
        start = end
    return out


def _lowercase(text: str, kw: dict) -> str:
    return text.lower()


def _uppercase(text: str, kw: dict) -> str:
    return text.upper()


def _capital_words(text: str, kw: dict) -> str | None:
    n, relation = kw["capital_frequency"], kw["capital_relation"]
    if relation == "less than":  # all-capital words beyond the allowance lose their capitals ("I" stays)
        if n < 1:
            return None
        return re.sub(r"\b[A-Z][A-Z'\u2019-]+\b", lambda m: m.group(0).capitalize(), text)
    # At least n: emphasise the first n longer words that are not capitals yet.
    count = 0

    def shout(m: re.Match) -> str:
        nonlocal count
        if count >= n or m.group(0).isupper():
            return m.group(0)
        count += 1
        return m.group(0).upper()

    return re.sub(r"\b[A-Za-z]{4,}\b", shout, text)


def _no_comma(text: str, kw: dict) -> str:
    return re.sub(r"\s*,\s*", " ", text).replace(" \n", "\n").strip()


def _fewer_words(text: str, kw: dict) -> str | None:
    if kw["relation"] != "less than":
        return None  # "at least N words" needs more content, which a rule cannot write
    kept: list[str] = []
    for sentence in _sentences(text):
        if len(re.findall(r"\w+", " ".join(kept + [sentence]))) >= kw["num_words"]:
            break
        kept.append(sentence)
    return " ".join(kept) or None


def _fewer_sentences(text: str, kw: dict) -> str | None:
    if kw["relation"] != "less than" or kw["num_sentences"] < 2:
        return None
    return " ".join(_sentences(text)[: kw["num_sentences"] - 1]) or None


def _paragraphs(text: str, kw: dict) -> str | None:
    groups = _groups(_sentences(text), kw["num_paragraphs"])
    return None if groups is None else "\n\n***\n\n".join(" ".join(g) for g in groups)


def _bullets(text: str, kw: dict) -> str | None:
    sentences = _sentences(text)
    n = kw["num_bullets"]
    return None if n < 1 or len(sentences) < n else "\n".join(f"* {s}" for s in sentences[:n])


def _sections(text: str, kw: dict) -> str | None:
    groups = _groups(_sentences(text), kw["num_sections"])
    marker = kw["section_spliter"].strip()
    return None if groups is None else "\n\n".join(f"{marker} {i}\n{' '.join(g)}" for i, g in enumerate(groups, 1))


def _highlights(text: str, kw: dict) -> str | None:
    sentences = _sentences(text)
    n = kw["num_highlights"]
    if len(sentences) < n:
        return None
    return " ".join(f"*{s}*" if i < n else s for i, s in enumerate(sentences))


_TITLE_TAIL = {"a", "an", "the", "of", "and", "or", "to", "in", "on", "for", "with", "is", "are", "was", "by", "as", "at"}


def _title(text: str, kw: dict) -> str | None:
    """The first words of the first sentence as the title, without a dangling "of the"."""
    sentences = _sentences(text)
    words = re.findall(r"[A-Za-z0-9']+", sentences[0] if sentences else text)[:5]
    while words and words[-1].lower() in _TITLE_TAIL:
        words.pop()
    return f"<<{' '.join(words).title()}>>\n\n{text}" if words else None


def _json(text: str, kw: dict) -> str | None:
    fenced = re.search(r"```(?:json|JSON|Json)?\s*\n(.*?)\n\s*```", text, re.DOTALL)
    if fenced:  # the model's own JSON, without the prose around the fence; None if it does not parse
        return fenced.group(1).strip()
    if "```" in text:  # an unclosed fence or code: wrapping it as a string would teach nothing useful
        return None
    return json.dumps({"answer": complete_sentences(text)}, ensure_ascii=False)


def _end_phrase(text: str, kw: dict) -> str:
    body = complete_sentences(text).rstrip('"').strip()
    return f"{body} {kw['end_phrase'].strip()}".strip()


def _quotation(text: str, kw: dict) -> str:
    return '"' + complete_sentences(text).strip().strip('"') + '"'


def _repeat_prompt(text: str, kw: dict) -> str:
    return f"{kw['prompt_to_repeat'].strip()}\n\n{text}"


# The rules in the order they are applied: layout and length first, then what is added at the start or end,
# then wrapping, then character-level edits (so a lowercase rule also lowercases an added end phrase).
RULES: dict[str, Rule] = {
    "length_constraints:number_sentences": _fewer_sentences,
    "length_constraints:number_words": _fewer_words,
    "length_constraints:number_paragraphs": _paragraphs,
    "detectable_format:number_bullet_lists": _bullets,
    "detectable_format:multiple_sections": _sections,
    "detectable_format:number_highlighted_sections": _highlights,
    "detectable_format:title": _title,
    "startend:end_checker": _end_phrase,
    "combination:repeat_prompt": _repeat_prompt,
    "detectable_format:json_format": _json,
    "startend:quotation": _quotation,
    "punctuation:no_comma": _no_comma,
    "change_case:capital_word_frequency": _capital_words,
    "change_case:english_lowercase": _lowercase,
    "change_case:english_capital": _uppercase,
}


def revise(instruction_ids: Sequence[str], kwargs: Sequence[dict[str, Any]], response: str) -> str | None:
    """A revision of `response` that follows every instruction, or None: when it follows them all already,
    when a failed instruction has no rule, or when the rules' edits still fail a check (two instructions
    that a rule cannot satisfy together, a response too short to split into the asked sections)."""
    given = [validate_kwargs(i, k) for i, k in zip(instruction_ids, kwargs, strict=True)]
    failed = {i: kw for i, kw in zip(instruction_ids, given, strict=True) if check(i, kw, response) is not True}
    if not failed or any(i not in RULES for i in failed):
        return None
    text = response
    for instruction_id, rule in RULES.items():
        if instruction_id in failed:
            revised = rule(text, failed[instruction_id])
            if not revised:
                return None
            text = revised
    if text == response or not all(check(i, kw, text) is True for i, kw in zip(instruction_ids, given, strict=True)):
        return None
    return text
