"""Program judges shipped with selfplay: name one in config as `judge.program`, its options in
`judge.program_args`.

    judge:
      kind: program
      program: selfplay.program_judges:length_bounds
      program_args: {min_words: 20, max_words: 150}

A program judge is `score(prompt, response, **options) -> float | None`: a number is the score, None
means "cannot judge this one" (counted, never a label); raising or returning a non-number is a recorded
error. Annotate the first parameter as `Prompt` to receive the prompt record (text + meta) instead of
its text: `ifeval` below does, to read the instruction ids an IFEval-format pool puts in `Prompt.meta`.
Write your own the same way, in your project: `judge.program: my_judges:score`.
"""

from __future__ import annotations

import json
import re

from selfplay.ifeval import IFEvalPrompt, ifeval_score
from selfplay.ifeval.revise import revise
from selfplay.records import Prompt


def _words(text: str) -> int:
    return len(re.findall(r"\w+", text))  # IFEval's word count, so bounds mean the same in both


def length_bounds(prompt: str, response: str, *, min_words: int = 10, max_words: int = 200) -> float:
    """1.0 inside [min_words, max_words]; outside, the fraction of the way there (words/min below,
    max/words above), so a near miss beats a far one and pairs still form when no response fits."""
    if min_words > max_words:
        raise ValueError(f"min_words {min_words} > max_words {max_words}")
    n = _words(response)
    if n < min_words:
        return n / min_words
    if n > max_words:
        return max_words / n
    return 1.0


def regex(prompt: str, response: str, *, pattern: str, must_match: bool = True, ignore_case: bool = False) -> float:
    """1.0 if `pattern` is found in the response (or, with must_match false, is absent), else 0.0.

    Example: program_args {pattern: '^\\s*[-*] ', must_match: true} asks for a markdown bullet list."""
    found = re.search(pattern, response, re.MULTILINE | (re.IGNORECASE if ignore_case else 0)) is not None
    return 1.0 if found == must_match else 0.0


_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


def json_format(prompt: str, response: str, *, require_object: bool = False) -> float:
    """1.0 if the whole response (optionally inside one ```json fence) parses as JSON, else 0.0;
    with require_object, it must be a JSON object."""
    text = response.strip()
    fenced = _FENCE.match(text)
    try:
        value = json.loads(fenced.group(1) if fenced else text)
    except ValueError:
        return 0.0
    return 0.0 if require_object and not isinstance(value, dict) else 1.0


def _normalise(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def is_echo(prompt: str, response: str) -> bool:
    """The response is the prompt again, give or take a few words (docs/design.md: an echo passes more
    IFEval-style checks than the default model's real answers, so a reward must not pay for it)."""
    p, r = _normalise(prompt), _normalise(response)
    return bool(p) and p in r and len(r) <= 1.2 * len(p) + 20


def ifeval(prompt: Prompt, response: str, *, echo_penalty: bool = True) -> float | None:
    """Fraction 0..1 of the prompt's checkable instructions followed strictly (selfplay.ifeval), read
    from the prompt's meta {instruction_id_list, kwargs} as an IFEval-format pool provides it.

    echo_penalty: a response that merely repeats the prompt scores 0.0. None when no instruction can be
    checked (a language check without langdetect). Raises for a prompt without instructions."""

    ids = prompt.meta.get("instruction_id_list")
    if not ids:
        raise ValueError(
            f"prompt {prompt.id} has no instruction_id_list in its meta; the ifeval judge needs an IFEval-format pool"
        )
    if echo_penalty and is_echo(prompt.text, response):
        return 0.0
    checkable = IFEvalPrompt(key=prompt.id, prompt=prompt.text, instruction_id_list=ids, kwargs=prompt.meta.get("kwargs", []))
    return ifeval_score(checkable, response)


def ifeval_revise(prompt: Prompt, response: str) -> str | None:
    """pairing.revise for the ifeval judge: the response rewritten by selfplay.ifeval.revise's rules so that it
    follows every instruction of the prompt, or None (it follows them all already, or a failed one has no rule)."""

    ids = prompt.meta.get("instruction_id_list")
    if not ids:
        raise ValueError(f"prompt {prompt.id} has no instruction_id_list in its meta; ifeval_revise needs an IFEval-format pool")
    return revise(ids, prompt.meta.get("kwargs", []), response)
