"""IFEval-style checkers, loader and aggregate scores, on literal tables."""

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from selfplay.ifeval import (
    INSTRUCTIONS,
    IFEvalPrompt,
    check,
    check_response,
    checkers,
    evaluate,
    ifeval_score,
    load_ifeval,
    loose_variants,
    validate_kwargs,
)
from selfplay.ifeval.checkers import capital_words, count_sentences, count_words

needs_langdetect = pytest.mark.skipif(not checkers.language_check_available(), reason="langdetect not installed")
PROMPTS_FILE = Path(__file__).resolve().parents[1] / "data" / "ifeval" / "prompts.jsonl"

LT, AL = "less than", "at least"
ENGLISH = "this is a calm answer written in plain english about the weather today"


def capf(n, relation):
    return {"capital_frequency": n, "capital_relation": relation}


def words(n, relation):
    return {"num_words": n, "relation": relation}


def sents(n, relation):
    return {"num_sentences": n, "relation": relation}


NTH = {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"}
SEC = {"section_spliter": "Section", "num_sections": 2}

# (instruction id, kwargs, response, expected). Every id has a pass and a fail; boundaries beside them.
CASES = [
    ("change_case:english_lowercase", {}, ENGLISH, True),
    ("change_case:english_lowercase", {}, "This has One capital letter in it.", False),
    ("change_case:english_lowercase", {}, "123 !!!", False),  # no cased letters at all
    ("change_case:english_capital", {}, ENGLISH.upper(), True),
    ("change_case:english_capital", {}, "THIS IS mostly LOUD", False),
    ("change_case:capital_word_frequency", capf(2, AL), "this is VERY IMPORTANT", True),
    ("change_case:capital_word_frequency", capf(2, AL), "this is VERY important", False),
    ("change_case:capital_word_frequency", capf(2, LT), "only ONE here", True),
    ("change_case:capital_word_frequency", capf(2, LT), "TWO BIG words", False),
    ("change_case:capital_word_frequency", capf(2, LT), "a WELL-KNOWN fact", True),
    ("change_case:capital_word_frequency", capf(1, AL), "I think so", True),  # "I" counts
    # Tokens as nltk.word_tokenize makes them, as IFEval counts: a clitic is a word of its own, so is each half of
    # CANNOT; a possessive leaves its word in capitals; U.S.A. is one word.
    ("change_case:capital_word_frequency", capf(3, AL), "DON'T STOP", True),  # DO, N'T, STOP
    ("change_case:capital_word_frequency", capf(4, AL), "I CANNOT GO", True),  # I, CAN, NOT, GO
    ("change_case:capital_word_frequency", capf(1, AL), "NASA's plan", True),
    ("change_case:capital_word_frequency", capf(2, LT), "the U.S.A. is big", True),
    ("change_case:capital_word_frequency", capf(2, AL), "DON\u2019T", True),  # a curly apostrophe splits: DON, T
    ("punctuation:no_comma", {}, "no commas here at all.", True),
    ("punctuation:no_comma", {}, "one, two", False),
    ("length_constraints:number_words", words(5, LT), "one two three four", True),
    ("length_constraints:number_words", words(5, LT), "one two three four five", False),
    ("length_constraints:number_words", words(5, AL), "one two three four five", True),
    ("length_constraints:number_words", words(5, AL), "one two three four", False),
    ("length_constraints:number_words", words(3, AL), "don't stop", True),  # don, t, stop
    ("length_constraints:number_sentences", sents(3, LT), "One. Two!", True),
    ("length_constraints:number_sentences", sents(3, LT), "One. Two! Three?", False),
    ("length_constraints:number_sentences", sents(3, AL), "One. Two! Three?", True),
    ("length_constraints:number_sentences", sents(3, AL), "Dr. Smith left at 3.5 p.m. today. Bye.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First part.\n***\nSecond part.", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "one\n***\ntwo\n***\nthree", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "a\n***\n***\nb", False),  # empty inner paragraph
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "***\na\n***\nb\n***", True),  # edges dropped
    ("length_constraints:number_paragraphs", {"num_paragraphs": 1}, "just one paragraph", True),
    ("length_constraints:nth_paragraph_first_word", NTH, "Cats sleep a lot.\n\nHowever, dogs do not.", True),
    ("length_constraints:nth_paragraph_first_word", NTH, "Cats sleep.\n\nDogs do not.", False),
    ("length_constraints:nth_paragraph_first_word", NTH, "Cats.\n\nHowever dogs.\n\nThird.", False),
    ("length_constraints:nth_paragraph_first_word", dict(NTH, first_word="However"), 'A.\n\n\n\n"However," she.', True),
    # The first word as IFEval reads it: up to . , ? ! ' or ", after leading quotes; markdown stays part of it.
    ("length_constraints:nth_paragraph_first_word", NTH, "Cats.\n\n**However**, dogs do not.", False),
    ("length_constraints:nth_paragraph_first_word", NTH, "Cats.\n\nHowever: dogs do not.", False),
    ("length_constraints:nth_paragraph_first_word", NTH, "Cats.\n \nHowever dogs do not.", False),  # "\n \n" is no break
    ("keywords:existence", {"keywords": ["garden", "Rain"]}, "The rain fell on the gardens.", True),
    ("keywords:existence", {"keywords": ["garden", "Rain"]}, "The rain fell.", False),
    ("keywords:forbidden_words", {"forbidden_words": ["cat"]}, "A category of dogs.", True),  # whole words only
    ("keywords:forbidden_words", {"forbidden_words": ["cat"]}, "The Cat sat.", False),
    ("keywords:frequency", {"keyword": "moon", "frequency": 2, "relation": AL}, "The Moon and the moon.", True),
    ("keywords:frequency", {"keyword": "moon", "frequency": 2, "relation": AL}, "the moon", False),
    ("keywords:frequency", {"keyword": "moon", "frequency": 2, "relation": LT}, "the moon", True),
    ("keywords:frequency", {"keyword": "moon", "frequency": 2, "relation": LT}, "moon moon", False),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": AL}, "Zebras zip zoo", True),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": AL}, "zebra", False),
    ("keywords:letter_frequency", {"letter": "Z", "let_frequency": 2, "let_relation": LT}, "zebra", True),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": LT}, "zz", False),
    ("keywords:letter_frequency", {"letter": "#", "let_frequency": 2, "let_relation": AL}, "#one #two", True),  # IFEval's files
    ("keywords:letter_frequency", {"letter": "#", "let_frequency": 2, "let_relation": AL}, "one #two", False),
    ("detectable_format:json_format", {}, '{"a": 1}', True),
    ("detectable_format:json_format", {}, '```json\n{"a": [1, 2]}\n```', True),
    ("detectable_format:json_format", {}, "{'a': 1}", False),
    ("detectable_format:json_format", {}, 'Here it is: {"a": 1}', False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n* two", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "- one\n- two\n- three", False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "**bold** line\n* one\n- two", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and **two**", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* only", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 1}, "** ** and *  *", False),
    ("detectable_format:title", {}, "<<My Title>>\ntext", True),
    ("detectable_format:title", {}, "<< >> text", False),
    ("detectable_format:title", {}, "<<broken\n>>", False),
    ("detectable_format:multiple_sections", SEC, "Section 1\nIntro\nSection 2\nBody", True),
    ("detectable_format:multiple_sections", SEC, "Section 1 only", False),
    ("detectable_format:multiple_sections", SEC, "section 1\nsection 2", False),
    ("detectable_format:constrained_response", {}, "My answer is yes. Because it is.", True),
    ("detectable_format:constrained_response", {}, "my answer is yes.", False),  # case-sensitive, as IFEval
    ("detectable_format:constrained_response", {}, "Yes.", False),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hello.\nP.S. bring snacks", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hello.\np. s. bring snacks", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "I wrote P.S. mid sentence", False),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Bye\nP.P.S. one more", True),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Bye\nP.S. one more", False),
    ("detectable_content:postscript", {"postscript_marker": "Note:"}, "text\nnote: x", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[name] at [place]", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[name] only", False),
    ("startend:end_checker", {"end_phrase": "See you soon."}, "Bye. See you soon.", True),
    ("startend:end_checker", {"end_phrase": "See you soon."}, '"Bye. SEE YOU SOON."', True),  # quote, case forgiven
    ("startend:end_checker", {"end_phrase": "See you soon."}, "See you soon. Bye.", False),
    ("startend:quotation", {}, '"hi"', True),
    ("startend:quotation", {}, '  "hi there"  \n', True),
    ("startend:quotation", {}, '"', False),
    ("startend:quotation", {}, "hi", False),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Why is the sky blue?"}, "why is the sky blue? Air.", True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Why is the sky blue?"}, "Sure! Why is the sky blue?", False),
    ("combination:two_responses", {}, "A\n******\nB", True),
    ("combination:two_responses", {}, "******\nA\n******\nB", True),  # empty edge allowed
    ("combination:two_responses", {}, "A\n******\nA", False),  # must differ
    ("combination:two_responses", {}, "A ****** B ****** C", False),
    ("combination:two_responses", {}, "A\n******\n******\nB", False),  # empty inner response
]


@pytest.mark.parametrize(("instruction_id", "kwargs", "response", "expected"), CASES)
def test_checker_table(instruction_id, kwargs, response, expected):
    assert check(instruction_id, kwargs, response) is expected


def test_every_instruction_id_has_a_pass_and_a_fail():
    outcomes = defaultdict(set)
    for instruction_id, _, _, expected in CASES:
        outcomes[instruction_id].add(expected)
    missing = [i for i in INSTRUCTIONS if i != "language:response_language" and outcomes[i] != {True, False}]
    assert missing == []


@pytest.mark.parametrize("instruction_id", sorted(INSTRUCTIONS))
def test_blank_response_follows_nothing(instruction_id, monkeypatch):
    # IFEval: an empty response fails every instruction (including those a blank text would satisfy).
    kwargs = {
        "change_case:capital_word_frequency": capf(1, LT),
        "length_constraints:number_words": {"num_words": 5, "relation": LT},
        "length_constraints:number_sentences": {"num_sentences": 2, "relation": LT},
        "length_constraints:number_paragraphs": {"num_paragraphs": 1},
        "length_constraints:nth_paragraph_first_word": {"num_paragraphs": 1, "nth_paragraph": 1, "first_word": "a"},
        "keywords:existence": {"keywords": ["a"]},
        "keywords:forbidden_words": {"forbidden_words": ["a"]},
        "keywords:frequency": {"keyword": "a", "frequency": 1, "relation": LT},
        "keywords:letter_frequency": {"letter": "a", "let_frequency": 1, "let_relation": LT},
        "detectable_format:number_bullet_lists": {"num_bullets": 0},
        "detectable_format:number_highlighted_sections": {"num_highlights": 0},
        "detectable_format:multiple_sections": {"section_spliter": "Section", "num_sections": 0},
        "detectable_content:postscript": {"postscript_marker": "P.S."},
        "detectable_content:number_placeholders": {"num_placeholders": 0},
        "startend:end_checker": {"end_phrase": "bye"},
        "combination:repeat_prompt": {"prompt_to_repeat": "hi"},
        "language:response_language": {"language": "en"},
    }.get(instruction_id, {})
    assert check(instruction_id, kwargs, "  \n ") is False


def test_word_and_sentence_counts():
    assert count_words("Hello, world! It's 3.5 km.") == 7  # Hello world It s 3 5 km: \w+ runs
    assert count_sentences("Dr. Smith arrived at 3.5 p.m. today. He waved! Did J. R. R. Tolkien write it?") == 3
    assert count_sentences("The U.S.A. is big... Yes") == 2
    assert count_sentences("no punctuation at all") == 1
    assert count_sentences("i went home. then i slept.") == 2  # lowercase sentence starts still split


@pytest.mark.parametrize(
    ("text", "n"),
    [
        # Each as nltk's punkt counts it (IFEval's sentence counter), checked with bench/ifeval_reference.py.
        ("**Done.** Next one.", 2),  # markdown emphasis after the period closes the sentence
        ("Wait... what? Really!", 2),  # an ellipsis before a lower-case word goes on
        ("Top 5. then more.", 1),  # so does a number's period
        ("It was 10 a.m. The sun rose.", 2),  # an abbreviation before a common opener ends its sentence
        ("It was 10 a.m. Sun rose.", 1),
        ("Meet Dr. The Great.", 2),
        ("He works at Acme Inc. and likes it. Yes.", 2),  # abbreviations of news text, as punkt learned them
        ("Ask Jan. He knows.", 2),
        ("It is 3 ft. long. Wow.", 2),
        ("Sen. Brown spoke. Then left.", 2),
        # Where we differ on purpose (docs/design.md, "IFEval compatibility"): punkt never learned e.g. and i.e.
        ("Use tools, e.g. a hammer. Then rest.", 2),
        ("That is, i.e. the rest. Done.", 2),
    ],
)
def test_sentence_counts_as_punkt(text, n):
    assert count_sentences(text) == n


def test_capital_words_are_nltk_tokens():
    assert capital_words("DON'T say IT'S OK, JAMES' CAR and AND/OR (WELL-KNOWN) **BOLD** #TAG") == [
        "DO", "N'T", "IT", "'S", "OK", "JAMES", "CAR", "AND/OR", "WELL-KNOWN", "BOLD", "TAG"
    ]  # fmt: skip
    assert capital_words("x-RAY X-ray") == []  # a word with a lower-case letter is not a capital word


@needs_langdetect
def test_response_language_with_langdetect():
    french = "Bonjour, je m'appelle Marie et j'habite à Paris avec ma famille depuis dix ans."
    assert check("language:response_language", {"language": "fr"}, french) is True
    assert check("language:response_language", {"language": "fr"}, ENGLISH) is False
    assert check("language:response_language", {"language": "en"}, "12345 678") is None  # no features
    # Lowercase/capital also want English when langdetect can tell (IFEval does the same).
    assert check("change_case:english_lowercase", {}, french.lower()) is False


def test_response_language_without_langdetect_is_uncheckable(monkeypatch):
    monkeypatch.setattr(checkers, "_language_factory", lambda: None)
    assert not checkers.language_check_available()
    assert check("language:response_language", {"language": "fr"}, "Bonjour mes amis") is None
    assert check("change_case:english_lowercase", {}, "bonjour mes amis") is True  # case rule alone
    p = IFEvalPrompt(key=1, prompt="x", instruction_id_list=["language:response_language"], kwargs=[{"language": "fr"}])
    assert check_response(p, "Bonjour") == [None]
    assert check_response(p, "Bonjour", loose=True) == [None]
    assert ifeval_score(p, "Bonjour") is None


@pytest.mark.parametrize(
    ("instruction_id", "kwargs", "message"),
    [
        ("foo:bar", {}, "unknown instruction id 'foo:bar'"),
        ("length_constraints:number_words", {"relation": LT}, r"missing kwargs \['num_words'\]"),
        ("length_constraints:number_words", {"num_words": 5, "relation": "at most"}, "relation must be one of"),
        ("length_constraints:number_words", {"num_words": "5", "relation": LT}, "num_words must be an integer"),
        ("length_constraints:number_words", {"num_words": True, "relation": LT}, "num_words must be an integer"),
        ("punctuation:no_comma", {"num_words": 5}, r"does not take kwargs \['num_words'\]"),
        ("keywords:letter_frequency", {"letter": "ab", "let_frequency": 1, "let_relation": LT}, "single character"),
        ("keywords:letter_frequency", {"letter": " ", "let_frequency": 1, "let_relation": LT}, "single character"),
        ("keywords:existence", {"keywords": []}, "non-empty list"),
        ("length_constraints:nth_paragraph_first_word", dict(NTH, nth_paragraph=3), "nth_paragraph 3 > num_paragraphs"),
    ],
)
def test_bad_instructions_are_clear_errors(instruction_id, kwargs, message):
    with pytest.raises(ValueError, match=message):
        check(instruction_id, kwargs, "some response")


def test_none_kwargs_are_ignored():
    # IFEval's published files give every kwarg of every instruction, most of them null.
    kwargs = {"num_words": 5, "relation": LT, "keywords": None, "prompt_to_repeat": None}
    assert validate_kwargs("length_constraints:number_words", kwargs) == {"num_words": 5, "relation": LT}
    assert check("punctuation:no_comma", {"num_words": None}, "fine") is True


def _prompt(key, ids_kwargs, prompt="a prompt"):
    ids = [i for i, _ in ids_kwargs]
    return IFEvalPrompt(key=key, prompt=prompt, instruction_id_list=ids, kwargs=[k for _, k in ids_kwargs])


def test_loose_variants_are_ifevals_eight():
    assert loose_variants("first\n*mid*\nlast") == [
        "first\n*mid*\nlast",
        "*mid*\nlast",
        "first\n*mid*",
        "*mid*",
        "first\nmid\nlast",
        "mid\nlast",
        "first\nmid",
        "mid",
    ]


def test_loose_forgives_a_chatty_first_line_and_markdown():
    ends = ("startend:end_checker", {"end_phrase": "the end"})
    p = _prompt(1, [("change_case:english_lowercase", {}), ("startend:quotation", {}), ends])
    response = 'Sure! Here it is:\n**"' + ENGLISH + ' the end"**'
    assert check_response(p, response) == [False, False, False]
    assert check_response(p, response, loose=True) == [True, True, True]
    # A trailing line is forgiven too; a violation in the middle is not.
    p2 = _prompt(2, [("punctuation:no_comma", {}), ("startend:end_checker", {"end_phrase": "bye."})])
    assert check_response(p2, "hello, there\nok bye.\nHope this helps!", loose=True) == [True, True]
    assert check_response(p2, "a\nb, c\nd", loose=True) == [False, False]


def test_ifeval_score_is_the_strict_fraction():
    p = _prompt(1, [("punctuation:no_comma", {}), ("startend:quotation", {})])
    assert ifeval_score(p, "no commas") == 0.5
    assert ifeval_score(p, '"no commas"') == 1.0
    assert ifeval_score(p, "a, b") == 0.0


def test_evaluate_hand_computed_table():
    prompts = [
        _prompt(1, [("punctuation:no_comma", {}), ("startend:end_checker", {"end_phrase": "Bye."})]),
        _prompt(2, [("change_case:english_lowercase", {})]),
        _prompt("c", [("length_constraints:number_words", words(3, LT)), ("startend:quotation", {})]),
    ]
    responses = {
        1: "Hello there. Bye.",  # strict [T, T]
        2: "Sure:\n" + ENGLISH,  # strict [F]; loose [T] (first line dropped)
        "c": "one, two, three four",  # strict [F, F]; loose [F, F]
        "unused": "ignored",
    }
    report = evaluate(prompts, responses)
    assert report.prompt_level_strict == pytest.approx(1 / 3)
    assert report.instruction_level_strict == pytest.approx(2 / 5)
    assert report.prompt_level_loose == pytest.approx(2 / 3)
    assert report.instruction_level_loose == pytest.approx(3 / 5)
    assert (report.n_prompts, report.n_instructions, report.n_uncheckable) == (3, 5, 0)
    lower = report.per_instruction["change_case:english_lowercase"]
    assert (lower.n, lower.strict, lower.loose) == (1, 0.0, 1.0)
    assert report.per_instruction["punctuation:no_comma"].strict == 1.0
    assert list(report.per_instruction) == sorted(report.per_instruction)
    assert [r.strict for r in report.results] == [[True, True], [False], [False, False]]


def test_evaluate_counts_uncheckable_apart(monkeypatch):
    monkeypatch.setattr(checkers, "_language_factory", lambda: None)
    prompts = [
        _prompt("a", [("language:response_language", {"language": "fr"}), ("punctuation:no_comma", {})]),
        _prompt("b", [("punctuation:no_comma", {})]),
    ]
    report = evaluate(prompts, {"a": "bonjour", "b": "a, b"})
    assert report.n_uncheckable == 1
    assert report.n_uncheckable_loose == 1
    assert report.instruction_level_strict == 0.5  # 1 of the 2 checkable
    assert report.prompt_level_strict == 0.0  # only "b" is fully checkable, and it fails
    assert report.per_instruction["language:response_language"].strict is None


def test_evaluate_refuses_missing_responses_and_no_prompts():
    with pytest.raises(ValueError, match="have no response"):
        evaluate([_prompt(1, [("punctuation:no_comma", {})])], {2: "x"})
    with pytest.raises(ValueError, match="no prompts"):
        evaluate([], {})


# --- loader ----------------------------------------------------------------------------------------------

GOOD = {"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}


def _write(tmp_path, lines):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_load_ifeval_reads_records_and_skips_blank_lines(tmp_path):
    second = dict(GOOD, key="two", kwargs=[{"num_words": None}])
    prompts = load_ifeval(_write(tmp_path, [json.dumps(GOOD), "", json.dumps(second)]))
    assert [p.key for p in prompts] == [1, "two"]
    assert prompts[1].kwargs == [{"num_words": None}]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([json.dumps(GOOD), "{not json"], r"p\.jsonl:2: not a JSON object"),
        ([json.dumps(GOOD), "", json.dumps(GOOD)], r"p\.jsonl:3: duplicate key 1 \(first on line 1\)"),
        ([json.dumps(GOOD), json.dumps(dict(GOOD, key="1"))], r"p\.jsonl:2: duplicate key '1'"),
        ([json.dumps(dict(GOOD, kwargs=[{}, {}]))], r"p\.jsonl:1: 1 instruction ids but 2 kwargs dicts"),
        ([json.dumps(dict(GOOD, instruction_id_list=["no:pe"]))], r"p\.jsonl:1: unknown instruction id 'no:pe'"),
        ([json.dumps(dict(GOOD, kwargs=[{"num_words": 3}]))], r"p\.jsonl:1: punctuation:no_comma does not take"),
        ([json.dumps({"key": 1, "prompt": "p"})], r"p\.jsonl:1: instruction_id_list: Field required"),
        (["[1, 2]"], r"p\.jsonl:1: not a JSON object"),
        ([], r"p\.jsonl:1: empty file"),
        (["", "  "], r"p\.jsonl:1: empty file"),
    ],
)
def test_load_ifeval_errors_name_file_and_line(tmp_path, lines, message):
    with pytest.raises(ValueError, match=message) as err:
        load_ifeval(_write(tmp_path, lines))
    assert "\n" not in str(err.value)


def test_load_ifeval_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_ifeval(tmp_path / "absent.jsonl")


# --- our shipped prompt set -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    return load_ifeval(PROMPTS_FILE)


def test_shipped_prompts_load_and_cover_every_instruction(shipped):
    assert len(shipped) >= 320
    assert [p.key for p in shipped] == list(range(1, len(shipped) + 1))
    counts = Counter(i for p in shipped for i in p.instruction_id_list)
    assert set(counts) == set(INSTRUCTIONS)
    assert counts["language:response_language"] >= 3
    assert all(1 <= len(p.instruction_id_list) <= 3 for p in shipped)
    for p in shipped:
        for instruction_id, kwargs in zip(p.instruction_id_list, p.kwargs, strict=True):
            if instruction_id == "combination:repeat_prompt":
                assert kwargs["prompt_to_repeat"] in p.prompt


def test_every_shipped_instruction_runs_on_empty_and_on_the_prompt(shipped):
    for p in shipped:
        for response in ("", p.prompt):
            for loose in (False, True):
                results = check_response(p, response, loose=loose)
                assert len(results) == len(p.instruction_id_list)
                assert all(r in (True, False, None) for r in results)


def test_shipped_prompts_share_no_word_8gram(shipped):
    # Train and held-out splits are drawn from this file; shared 8-grams would leak between them.
    owners = defaultdict(set)
    for p in shipped:
        words = re.findall(r"\w+", p.prompt.lower())
        for j in range(len(words) - 7):
            owners[tuple(words[j : j + 8])].add(p.key)
    shared = {" ".join(g): sorted(k) for g, k in owners.items() if len(k) > 1}
    assert shared == {}
