"""One checker per IFEval instruction id (Zhou et al., 2023, arXiv:2311.07911), in pure Python.

Ids and kwargs names are IFEval's own, so any file in IFEval's JSONL input format can be checked. The
semantics follow IFEval's `instructions.py`, measured against a port of it by bench/ifeval_reference.py; where we
differ on purpose it is said beside the checker and, with the reason, in docs/design.md ("IFEval compatibility").
We use no nltk: words are `\\w+` runs as in IFEval, capital words follow nltk's tokens by rule, and sentences come
from a small regex splitter instead of punkt.

A checker answers True (followed), False (not followed) or None (cannot check: `language:response_language`
without `langdetect`, or text langdetect finds no features in). None is counted apart, never a pass.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any

RELATIONS = ("less than", "at least")  # IFEval's two comparisons: actual < n, actual >= n
CONSTRAINED_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")  # IFEval's fixed options
TWO_RESPONSES_SEPARATOR = "******"  # six asterisks, as IFEval asks for


# --- text helpers -------------------------------------------------------------------------------------------


def count_words(text: str) -> int:
    """Words are runs of `\\w` characters, as IFEval's RegexpTokenizer(r"\\w+"): "don't" is two."""
    return len(re.findall(r"\w+", text))


# Periods that do not end a sentence are masked before splitting. IFEval counts sentences with nltk's punkt
# model (statistics learned from news text); we ship no model, so a few rules stand in for it, each checked against
# punkt (bench/ifeval_reference.py): decimals (3.14); everyday abbreviations (Mr., e.g., a.m.) and the news-text
# ones punkt knows (Jan., Inc., Sen.); initials (J. R. R. Tolkien, U.S.A.); and, as punkt, a number or an ellipsis
# followed by a lower-case word ("top 5. then", "wait... what"). As in punkt, an abbreviation or an initial before
# a common sentence opener ("at 5 p.m. The sun rose.") still ends its sentence; e.g. and i.e. never do (punkt
# splits after them, never having learned them). docs/design.md lists where we still count apart from punkt.
_MASK = "\x00"
_OPENERS = r"(?!\s+(?-i:The|This|These|There|They|It|He|She|We|I|But|However|If|When|In|So|Yet|Thus|While|Since)\b)"
_NON_TERMINAL_PERIODS = (
    re.compile(r"(?<=\d)\.(?=\d)"),
    re.compile(
        r"\b(?:Mr|Mrs|Ms|Dr|Prof|Sr|Jr|St|vs|approx|Mt|Fig|Jan|Feb|Aug|Sept?|Oct|Nov|Dec|Inc|Ltd|Co|Corp|Gen|Sen|Rep|Lt"
        r"|Col|Maj|Adm|Ave|Bros|ft)\.(?=\s)" + _OPENERS,
        re.IGNORECASE,
    ),
    re.compile(r"\b(?:e\.g|i\.e)\.", re.IGNORECASE),
    re.compile(r"\b(?:a\.m|p\.m)\." + _OPENERS, re.IGNORECASE),
    re.compile(r"\b(?:[A-Z]\.){2,}(?=\s+[a-z0-9])"),  # before initials, which would mask its first periods
    re.compile(r"\b[A-Z]\.(?=\s*[A-Z]\.|\s+[A-Z][a-z])" + _OPENERS),
    re.compile(r"(?<=\d)\.(?=\s+[a-z])"),
    re.compile(r"\.{2,}(?=\s+[a-z])"),
)
# A run of . ! ? ends a sentence before whitespace or the end, closing quotes, brackets and markdown emphasis
# after it included ("**Done.** Next" is two sentences, as in punkt).
SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]*]*(?=\s|$)")


def split_sentences(text: str) -> list[str]:
    """Sentences end at . ! ? (runs of them count once) before whitespace or the end; pieces without a
    word character (a stray "..." or "-") are not sentences."""
    for pattern in _NON_TERMINAL_PERIODS:
        text = pattern.sub(lambda m: m.group(0).replace(".", _MASK), text)
    pieces = SENTENCE_END.split(text)
    return [p.replace(_MASK, ".").strip() for p in pieces if re.search(r"\w", p)]


def count_sentences(text: str) -> int:
    return len(split_sentences(text))


@functools.cache
def _language_factory() -> Any:
    """langdetect's profiles, loaded once; None when langdetect is not installed.

    A private factory with seed 0, because langdetect samples n-grams at random and would otherwise give
    different answers for the same short text from one call to the next.
    """
    try:
        from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
    except ImportError:
        return None
    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(0)
    return factory


def detect_language(text: str) -> str | None:
    """ISO 639-1 code as langdetect names it ("en", "fr", "zh-cn"); None = langdetect missing or no
    features in the text (digits only, punctuation only)."""
    factory = _language_factory()
    if factory is None:
        return None
    from langdetect.lang_detect_exception import LangDetectException

    detector = factory.create()
    detector.append(text)
    try:
        return detector.detect()
    except LangDetectException:
        return None


def language_check_available() -> bool:
    return _language_factory() is not None


def _compare(actual: int, relation: str, n: int) -> bool:
    return actual < n if relation == "less than" else actual >= n


# --- checkers ---------------------------------------------------------------------------------------------
# Each takes the response and its validated kwargs; kwargs names are IFEval's.


def english_lowercase(response: str) -> bool:
    # IFEval also asks langdetect for "en"; we do so only when langdetect is installed and can tell,
    # so that the case rule (what a small model struggles with) is always checkable.
    if not response.islower():
        return False
    language = detect_language(response)
    return language is None or language == "en"


def english_capital(response: str) -> bool:
    if not response.isupper():
        return False
    language = detect_language(response)
    return language is None or language == "en"


# IFEval counts the words nltk.word_tokenize makes that are all upper case. Its treebank rules, as far as they
# decide which cased characters share a token: quotes, brackets, * ; @ # $ % & ? !, dashes, ".." and "," or ":"
# before a non-digit separate tokens; a clitic ('s 'm 'd 'll 're 've n't) and a trailing ' are tokens of their own,
# and so are the halves of cannot, gonna, gotta, gimme, lemme, wanna; "." - / _ + inside a token keep it whole. So
# DON'T is two capital words (DO, N'T), IT'S two, NASA's one, U.S.A. and WELL-KNOWN and AND/OR one each.
_TOKEN_BREAKS = re.compile(
    r"[\s\"\u00ab\u00bb\u201c\u201d\u2018\u2019\u201e`;@#$%&?!*\[\](){}<>\u2012-\u2015]|--|\.{2,}|[:,](?!\d)"
)
_TWO_WORDS = re.compile(r"(?i)\b(?:(can)(not)|(gim)(me)|(gon)(na)|(got)(ta)|(lem)(me)|(wan)(na))\b")
_CLITIC = re.compile(r"(?<=[^' ])('[sSmMdD]|'ll|'LL|'re|'RE|'ve|'VE|n't|N'T|')$")


def capital_words(text: str) -> list[str]:
    """The tokens of `text` that are all upper case, split as nltk.word_tokenize splits them (see above)."""
    out = []
    for chunk in _TOKEN_BREAKS.split(text):
        chunk = _TWO_WORDS.sub(lambda m: " ".join(g for g in m.groups() if g), chunk.rstrip("."))
        for piece in chunk.split():
            piece = re.sub(r"^'(?!(?i:re|ve|ll|m|t|s|d|n)\b)(?=\w)", "", piece)
            clitic = _CLITIC.search(piece)
            parts = [piece[: clitic.start()], clitic.group(1)] if clitic else [piece]
            out += [w for w in parts if w.isupper()]
    return out


def capital_word_frequency(response: str, capital_frequency: int, capital_relation: str) -> bool:
    return _compare(len(capital_words(response)), capital_relation, capital_frequency)


def no_comma(response: str) -> bool:
    return "," not in response


def number_words(response: str, num_words: int, relation: str) -> bool:
    return _compare(count_words(response), relation, num_words)


def number_sentences(response: str, num_sentences: int, relation: str) -> bool:
    return _compare(count_sentences(response), relation, num_sentences)


def _star_paragraphs(response: str) -> list[str] | None:
    """Paragraphs split by the *** markdown divider; None when an inner paragraph is empty (*** ***)."""
    pieces = re.split(r"\s?\*\*\*\s?", response)
    if pieces and not pieces[0].strip():
        pieces = pieces[1:]
    if pieces and not pieces[-1].strip():
        pieces = pieces[:-1]
    if any(not p.strip() for p in pieces):
        return None
    return pieces


def count_star_paragraphs(response: str) -> int | None:
    """Paragraphs as number_paragraphs counts them; None when an inner one is empty (never a count)."""
    paragraphs = _star_paragraphs(response)
    return None if paragraphs is None else len(paragraphs)


def number_paragraphs(response: str, num_paragraphs: int) -> bool:
    return count_star_paragraphs(response) == num_paragraphs


def nth_paragraph_first_word(response: str, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    # Here IFEval's paragraphs are separated by "\n\n" (the instruction says so), not ***; blank pieces are not
    # paragraphs. IFEval indexes the raw split all the same, so a leading "\n\n" or a "\n\n\n\n" shifts its paragraph
    # numbers and an empty piece can be "paragraph 2"; we index the paragraphs it counted.
    paragraphs = [p.strip() for p in response.split("\n\n") if p.strip()]
    if len(paragraphs) != num_paragraphs or nth_paragraph > len(paragraphs):
        return False
    # The first word as IFEval reads it: the first whitespace token, leading ' and " dropped, up to the first
    # . , ? ! ' or " (so "**However**" is not "however"; loose scoring drops the asterisks).
    first = paragraphs[nth_paragraph - 1].split()[0].lstrip("'").lstrip('"')
    return re.split(r"[.,?!'\"]", first)[0].lower() == first_word.strip().lower()


def keywords_existence(response: str, keywords: list[str]) -> bool:
    # Case-insensitive substring, as IFEval (so "garden" is found in "gardens"); literal text, where IFEval's
    # keyword is an unescaped regex (its "3.5" finds "3x5").
    text = response.lower()
    return all(k.lower() in text for k in keywords)


def forbidden_words(response: str, forbidden_words: list[str]) -> bool:
    # Whole words only, as IFEval: forbidding "cat" does not forbid "category".
    return not any(re.search(r"\b" + re.escape(w) + r"\b", response, re.IGNORECASE) for w in forbidden_words)


def count_keyword(response: str, keyword: str) -> int:
    # Non-overlapping, case-insensitive substring occurrences, as IFEval.
    return len(re.findall(re.escape(keyword.strip()), response, re.IGNORECASE))


def keyword_frequency(response: str, keyword: str, frequency: int, relation: str) -> bool:
    return _compare(count_keyword(response, keyword), relation, frequency)


def count_letter(response: str, letter: str) -> int:
    # Any one character, counted case-insensitively: IFEval's files ask for "#" too, which IFEval itself replaces
    # with a random letter (it only keeps a-z), so its verdict on such a line is a coin toss; we count the "#".
    return response.lower().count(letter.lower())


def letter_frequency(response: str, letter: str, let_frequency: int, let_relation: str) -> bool:
    return _compare(count_letter(response, letter), let_relation, let_frequency)


def json_format(response: str) -> bool:
    # IFEval lets the JSON sit inside a markdown code fence.
    text = response.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        if text.startswith(fence):
            text = text[len(fence) :]
            break
    text = text.removesuffix("```").strip()
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def count_bullets(response: str) -> int:
    # Markdown bullets: lines starting with "* " (not "**bold**") or "-", as IFEval.
    stars = re.findall(r"^\s*\*[^*].*$", response, re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", response, re.MULTILINE)
    return len(stars) + len(dashes)


def number_bullet_lists(response: str, num_bullets: int) -> bool:
    return count_bullets(response) == num_bullets  # exactly, as IFEval


def count_highlights(response: str) -> int:
    # *italic* and **bold** spans on one line with non-blank text, as IFEval.
    single = [h for h in re.findall(r"\*[^\n*]*\*", response) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n*]*\*\*", response) if h[2:-2].strip()]
    return len(single) + len(double)


def number_highlighted_sections(response: str, num_highlights: int) -> bool:
    return count_highlights(response) >= num_highlights  # at least, as IFEval


def title(response: str) -> bool:
    return any(t[2:-2].strip() for t in re.findall(r"<<[^\n]+?>>", response))


def count_sections(response: str, section_spliter: str) -> int:
    # Sections start with the marker and a number ("SECTION 1"); case-sensitive.
    marker = re.escape(section_spliter.strip())
    return len(re.split(r"\s?" + marker + r"\s?\d+\s?", response)) - 1


def multiple_sections(response: str, section_spliter: str, num_sections: int) -> bool:
    return count_sections(response, section_spliter) >= num_sections  # at least


def constrained_response(response: str) -> bool:
    return any(option in response for option in CONSTRAINED_OPTIONS)


def postscript(response: str, postscript_marker: str) -> bool:
    # A line that starts with the marker, any case. IFEval tolerates spaces inside "P. S." and "P. P. S";
    # unlike IFEval we require the marker to open a line: IFEval's pattern finds it mid-sentence, so a response
    # that only says "add a P.S." (the echo of each of our postscript prompts) passes there.
    marker = postscript_marker.strip()
    if marker == "P.P.S":
        pattern = r"^\s*p\.\s?p\.\s?s"
    elif marker == "P.S.":
        pattern = r"^\s*p\.\s?s\."
    else:
        pattern = r"^\s*" + re.escape(marker.lower())
    return re.search(pattern, response.lower(), re.MULTILINE) is not None


def count_placeholders(response: str) -> int:
    return len(re.findall(r"\[.*?\]", response))


def number_placeholders(response: str, num_placeholders: int) -> bool:
    return count_placeholders(response) >= num_placeholders


def end_checker(response: str, end_phrase: str) -> bool:
    # A closing double quote after the phrase is forgiven, as IFEval.
    return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def quotation(response: str) -> bool:
    text = response.strip()
    return len(text) > 1 and text[0] == '"' and text[-1] == '"'


def repeat_prompt(response: str, prompt_to_repeat: str) -> bool:
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())


def two_responses(response: str) -> bool:
    pieces = response.split(TWO_RESPONSES_SEPARATOR)
    inner_empty = any(not p.strip() for p in pieces[1:-1])
    answers = [p.strip() for p in pieces if p.strip()]
    return not inner_empty and len(answers) == 2 and answers[0] != answers[1]


def response_language(response: str, language: str) -> bool | None:
    detected = detect_language(response)
    return None if detected is None else detected == language


# --- the table of ids ---------------------------------------------------------------------------------------

Checker = Callable[..., "bool | None"]

# id -> (checker, {kwarg: kind}); every listed kwarg is required. Kinds: "int" (>= 0), "pos" (>= 1),
# "str" (non-empty), "strs" (non-empty list of non-empty strings), "relation", "char" (one non-blank character).
# IFEval's own build_description makes every kwarg optional, but one it finds missing or out of range it replaces
# with a random value (a random letter, a random count), so such an instruction is not checkable: we refuse it.
INSTRUCTIONS: dict[str, tuple[Checker, dict[str, str]]] = {
    "change_case:english_lowercase": (english_lowercase, {}),
    "change_case:english_capital": (english_capital, {}),
    "change_case:capital_word_frequency": (
        capital_word_frequency,
        {"capital_frequency": "int", "capital_relation": "relation"},
    ),
    "punctuation:no_comma": (no_comma, {}),
    "length_constraints:number_words": (number_words, {"num_words": "int", "relation": "relation"}),
    "length_constraints:number_sentences": (number_sentences, {"num_sentences": "int", "relation": "relation"}),
    "length_constraints:number_paragraphs": (number_paragraphs, {"num_paragraphs": "pos"}),
    "length_constraints:nth_paragraph_first_word": (
        nth_paragraph_first_word,
        {"num_paragraphs": "pos", "nth_paragraph": "pos", "first_word": "str"},
    ),
    "keywords:existence": (keywords_existence, {"keywords": "strs"}),
    "keywords:forbidden_words": (forbidden_words, {"forbidden_words": "strs"}),
    "keywords:frequency": (keyword_frequency, {"keyword": "str", "frequency": "int", "relation": "relation"}),
    "keywords:letter_frequency": (
        letter_frequency,
        {"letter": "char", "let_frequency": "int", "let_relation": "relation"},
    ),
    "detectable_format:json_format": (json_format, {}),
    "detectable_format:number_bullet_lists": (number_bullet_lists, {"num_bullets": "int"}),
    "detectable_format:number_highlighted_sections": (number_highlighted_sections, {"num_highlights": "int"}),
    "detectable_format:title": (title, {}),
    "detectable_format:multiple_sections": (multiple_sections, {"section_spliter": "str", "num_sections": "int"}),
    "detectable_format:constrained_response": (constrained_response, {}),
    "detectable_content:postscript": (postscript, {"postscript_marker": "str"}),
    "detectable_content:number_placeholders": (number_placeholders, {"num_placeholders": "int"}),
    "startend:end_checker": (end_checker, {"end_phrase": "str"}),
    "startend:quotation": (quotation, {}),
    "combination:repeat_prompt": (repeat_prompt, {"prompt_to_repeat": "str"}),
    "combination:two_responses": (two_responses, {}),
    "language:response_language": (response_language, {"language": "str"}),
}


def _valid(kind: str, value: Any) -> bool:
    match kind:
        case "int":
            return isinstance(value, int) and not isinstance(value, bool) and value >= 0
        case "pos":
            return isinstance(value, int) and not isinstance(value, bool) and value >= 1
        case "str":
            return isinstance(value, str) and bool(value.strip())
        case "strs":
            return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v.strip() for v in value)
        case "relation":
            return value in RELATIONS
        case "char":
            return isinstance(value, str) and len(value) == 1 and not value.isspace()
    raise AssertionError(kind)


_KIND_TEXT = {
    "int": "an integer >= 0",
    "pos": "an integer >= 1",
    "str": "a non-empty string",
    "strs": "a non-empty list of non-empty strings",
    "relation": f"one of {RELATIONS}",
    "char": "a single character (a letter, or any other non-blank one such as #)",
}


def validate_kwargs(instruction_id: str, kwargs: dict[str, Any], strict: bool = True) -> dict[str, Any]:
    """The kwargs this instruction takes, checked; None values dropped (IFEval's files carry nulls).

    strict=False also takes what IFEval's code takes but our own files never need: a count written as a float
    (3.0, as a table with missing values stores integers), returned as an int. Raises ValueError naming an
    unknown id, a missing, unexpected or ill-typed kwarg.
    """
    if instruction_id not in INSTRUCTIONS:
        raise ValueError(f"unknown instruction id {instruction_id!r}")
    if not isinstance(kwargs, dict):
        raise ValueError(f"{instruction_id}: kwargs must be a JSON object, got {kwargs!r}")
    _, spec = INSTRUCTIONS[instruction_id]
    given = {k: v for k, v in kwargs.items() if v is not None}
    missing = [k for k in spec if k not in given]
    if missing:
        raise ValueError(f"{instruction_id} is missing kwargs {missing}")
    unexpected = sorted(set(given) - set(spec))
    if unexpected:
        raise ValueError(f"{instruction_id} does not take kwargs {unexpected}")
    for name, kind in spec.items():
        value = given[name]
        if not strict and kind in ("int", "pos") and isinstance(value, float) and value.is_integer():
            given[name] = value = int(value)
        if not _valid(kind, value):
            raise ValueError(f"{instruction_id}: {name} must be {_KIND_TEXT[kind]}, got {value!r}")
    if instruction_id == "length_constraints:nth_paragraph_first_word":
        if given["nth_paragraph"] > given["num_paragraphs"]:
            raise ValueError(f"{instruction_id}: nth_paragraph {given['nth_paragraph']} > num_paragraphs")
    return given


def check(instruction_id: str, kwargs: dict[str, Any], response: str) -> bool | None:
    """Does `response` follow one instruction? True/False; None = cannot check (see module doc).

    An empty or blank response follows nothing (False), as in IFEval.
    """
    given = validate_kwargs(instruction_id, kwargs)
    checker, _ = INSTRUCTIONS[instruction_id]
    if not response.strip():
        return False
    return checker(response, **given)
