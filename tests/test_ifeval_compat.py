"""Reading IFEval-format files as IFEval's own code reads them: strict for our files, lenient for a user's, where
a line that cannot be checked is skipped and named, never fatal. The prompts here are ours; the kwarg forms are
those IFEval's published files use (learned from its build_description signatures, see bench/ifeval_reference.py)."""

import json

import pytest

from selfplay.evaluate import EvalError, ifeval_prompts
from selfplay.ifeval import INSTRUCTIONS, load_ifeval, read_ifeval

LT = "less than"
# Every kwarg name of every instruction: a table of IFEval's lines (its Hugging Face copy) gives each line all of
# them, null where the instruction does not use it.
ALL_KWARGS = sorted({name for _, spec in INSTRUCTIONS.values() for name in spec})


def full(**used):
    return {name: used.get(name) for name in ALL_KWARGS}


def line(key, ids, kwargs="absent", prompt="Describe a lighthouse keeper's morning."):
    obj = {"key": key, "prompt": prompt, "instruction_id_list": ids}
    if kwargs != "absent":
        obj["kwargs"] = kwargs
    return json.dumps(obj)


def write(tmp_path, lines, name="theirs.jsonl"):
    path = tmp_path / name
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


IFEVAL_FORMS = [
    line(1, ["length_constraints:number_words", "punctuation:no_comma"], [full(num_words=50, relation=LT), full()]),
    line(2, ["keywords:letter_frequency"], [{"letter": "#", "let_frequency": 4, "let_relation": "at least"}]),
    line(3, ["punctuation:no_comma", "startend:quotation"]),  # no kwargs at all: IFEval reads {} for each
    line(4, ["detectable_format:title"], []),
    line(5, ["detectable_format:number_bullet_lists"], [{"num_bullets": 3.0}]),  # an integer stored as a float
]


def test_lenient_reading_takes_every_form_ifevals_code_takes(tmp_path):
    read = read_ifeval(write(tmp_path, IFEVAL_FORMS), strict=False)
    assert read.skipped == [] and read.n_lines == 5
    assert [p.kwargs for p in read.prompts] == [
        [{"num_words": 50, "relation": LT}, {}],
        [{"letter": "#", "let_frequency": 4, "let_relation": "at least"}],
        [{}, {}],
        [{}],
        [{"num_bullets": 3}],
    ]
    assert isinstance(read.prompts[4].kwargs[0]["num_bullets"], int)


def test_strict_reading_takes_nulls_and_any_letter_but_not_the_rest(tmp_path):
    # Our own files: nulls and a "#" are fine; a missing kwargs list or a float count is a mistake, said per line.
    prompts = load_ifeval(write(tmp_path, IFEVAL_FORMS[:2]))
    assert prompts[1].kwargs == [{"letter": "#", "let_frequency": 4, "let_relation": "at least"}]
    with pytest.raises(ValueError, match=r"theirs\.jsonl:1: kwargs: Field required"):
        load_ifeval(write(tmp_path, IFEVAL_FORMS[2:3]))
    with pytest.raises(ValueError, match=r"theirs\.jsonl:1: 1 instruction ids but 0 kwargs dicts"):
        load_ifeval(write(tmp_path, IFEVAL_FORMS[3:4]))
    with pytest.raises(ValueError, match=r"theirs\.jsonl:1: .*num_bullets must be an integer >= 0, got 3\.0"):
        load_ifeval(write(tmp_path, IFEVAL_FORMS[4:5]))


UNUSABLE = [
    line(1, ["punctuation:no_comma"], [{}]),
    line(2, ["detectable_format:constrained_start"], [{"starter": "I think"}]),  # not one of IFEval's 25
    line(3, ["length_constraints:number_words"], [full(relation=LT)]),  # IFEval would draw a random count
    "{not json",
    line(1, ["startend:quotation"], [{}]),
    line(6, ["keywords:frequency"], [{"keyword": "tide", "frequency": 2, "relation": "at most"}]),
    line(7, ["keywords:letter_frequency"], [{"letter": "ab", "let_frequency": 1, "let_relation": LT}]),
    b'{"key": 8, "prompt": "caf\xe9"}',
    "",
    line(9, ["punctuation:no_comma"], [{"num_words": 5}]),  # IFEval's code would raise on it
    line(10, ["length_constraints:nth_paragraph_first_word"], [{"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "so"}]),
    line(11, ["startend:quotation"], [{}]),
]


def test_lenient_reading_skips_each_unusable_line_and_names_it(tmp_path):
    path = write(tmp_path, UNUSABLE)
    read = read_ifeval(path, strict=False)
    assert [p.key for p in read.prompts] == [1, 11]
    assert read.n_lines == 11
    assert [s.removeprefix(f"{path}:") for s in read.skipped] == [
        "2: unknown instruction id 'detectable_format:constrained_start'",
        "3: length_constraints:number_words is missing kwargs ['num_words']",
        "4: not a JSON object: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "5: duplicate key 1 (first on line 1)",
        "6: keywords:frequency: relation must be one of ('less than', 'at least'), got 'at most'",
        "7: keywords:letter_frequency: letter must be a single character (a letter, or any other non-blank one such as #), "
        "got 'ab'",
        "8: not UTF-8 text (invalid continuation byte)",
        "10: punctuation:no_comma does not take kwargs ['num_words']",
        "11: length_constraints:nth_paragraph_first_word: nth_paragraph 3 > num_paragraphs",
    ]
    # Strictly, the first of them stops the reading.
    with pytest.raises(ValueError, match=r"theirs\.jsonl:2: unknown instruction id"):
        read_ifeval(path)


def test_a_file_without_one_usable_line_is_an_error(tmp_path):
    path = write(tmp_path, UNUSABLE[1:3])
    with pytest.raises(ValueError, match=r"no usable prompts, all 2 lines skipped; the first: .*theirs\.jsonl:1: unknown"):
        read_ifeval(path, strict=False)


def test_eval_reads_a_users_file_leniently_with_one_summary_line(tmp_path):
    logged = []
    path, items, prompts = ifeval_prompts(write(tmp_path, UNUSABLE), logged.append)
    assert [p.key for p in items] == [1, 11] and [p.id for p in prompts] == ["ifeval-1", "ifeval-11"]
    assert logged == [
        f"eval: {path}: skipped 9 of 11 lines that cannot be checked (line 2: unknown instruction id "
        "'detectable_format:constrained_start'; line 3: length_constraints:number_words is missing kwargs ['num_words']; "
        "line 4: not a JSON object: Expecting property name enclosed in double quotes: line 1 column 2 (char 1); "
        "and 6 more)"
    ]
    quiet = []
    ifeval_prompts(write(tmp_path, IFEVAL_FORMS, "forms.jsonl"), quiet.append)
    assert quiet == []  # nothing skipped, nothing said
    with pytest.raises(EvalError, match="no usable prompts"):
        ifeval_prompts(write(tmp_path, UNUSABLE[1:3], "bad.jsonl"))
