"""Program judges: import by name, scores, recorded failures, and the shipped functions (literal tables)."""

import pytest

from selfplay.config import JudgeConfig, PairingConfig
from selfplay.judges import JudgeError, make_judge, needs_generator, preflight_judge
from selfplay.pairing import make_pairs
from selfplay.program_judges import ifeval, is_echo, json_format, length_bounds, regex
from selfplay.records import Prompt

from conftest import make_generation, make_prompt

USER_JUDGES = '''
from selfplay.records import Prompt

def words(prompt, response, *, per=1.0):
    return len(response.split()) * per

def boom(prompt, response):
    raise RuntimeError("no idea how to score " + response)

def text(prompt, response):
    return "high"

def flag(prompt, response):
    return True

def nan(prompt, response):
    return float("nan")

def maybe(prompt, response):
    return None if "?" in response else 1

def record(prompt: Prompt, response):
    return float(len(prompt.meta["tags"]))
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_judges.py").write_text(USER_JUDGES)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "my_judges.py"


def judge_one(program: str, text: str, prompt: Prompt | None = None, **args):
    cfg = JudgeConfig(kind="program", program=program, program_args=args)
    [out] = make_judge(cfg, None).judge([prompt or make_prompt("p")], [make_generation("p", 0, text)])
    return out


@pytest.mark.parametrize("fn, text, want", [
    ("words", "three short words", (3.0, "ok", "3.0")),
    ("boom", "x", (None, "error", "raised RuntimeError: no idea how to score x")),
    ("text", "x", (None, "error", "returned str 'high', not a number")),
    ("flag", "x", (None, "error", "returned bool True, not a number")),
    ("nan", "x", (None, "error", "returned nan, not a finite number")),
    ("maybe", "what?", (None, "unparseable", "returned None (cannot judge)")),
    ("maybe", "yes", (1.0, "ok", "1.0")),
])
def test_user_program_outcomes(user_module, fn, text, want):
    for spec in (f"my_judges:{fn}", f"{user_module}:{fn}"):  # by module name (cwd), or by file path
        j = judge_one(spec, text)
        assert (j.score, j.status, j.raw[0]) == want
        assert (j.judge, j.method, j.template, j.generation_ids) == ("program", "program", spec, ["p/g0"])
        assert j.template_hash and len(j.template_hash) == 12  # the program's source file hash


def test_program_gets_options_and_prompt_records(user_module):
    assert judge_one("my_judges:words", "a b", per=0.5).score == 1.0
    prompt = Prompt(id="p", text="t", meta={"tags": ["a", "b", "c"]})
    assert judge_one("my_judges:record", "x", prompt=prompt).score == 3.0
    assert not needs_generator(JudgeConfig(kind="program", program="my_judges:words"))


@pytest.mark.parametrize("spec, args, message", [
    ("no_colon", {}, "expected 'module:function'"),
    ("my_judges:nope", {}, "my_judges has no function nope"),
    ("no_such_module_xyz:f", {}, r"cannot import no_such_module_xyz \(ModuleNotFoundError"),
    ("missing/file.py:f", {}, "no such file"),
    ("my_judges:words", {"bogus": 1}, r"cannot call words\(prompt, response, \*\*judge.program_args\)"),
    ("selfplay.program_judges:regex", {}, "missing a required argument: 'pattern'"),
])
def test_bad_programs_fail_before_the_run(user_module, spec, args, message):
    with pytest.raises(JudgeError, match=message):
        preflight_judge(JudgeConfig(kind="program", program=spec, program_args=args))


def test_program_pairs():
    prompts = [make_prompt("p")]
    gens = [make_generation("p", j, " ".join(["w"] * n)) for j, n in enumerate([5, 30, 400])]
    out = make_judge(JudgeConfig(kind="program", program="selfplay.program_judges:length_bounds",
                                 program_args={"min_words": 10, "max_words": 100}), None).judge(prompts, gens)
    assert [j.score for j in out] == [0.5, 1.0, 0.25]
    pairs, _ = make_pairs(PairingConfig(), prompts, gens, out)
    assert [(p.chosen_id, p.rejected_id, p.judge) for p in pairs] == [("p/g1", "p/g2", "program")]


@pytest.mark.parametrize("n_words, want", [(0, 0.0), (5, 0.5), (10, 1.0), (100, 1.0), (200, 0.5)])
def test_length_bounds_table(n_words, want):
    assert length_bounds("q", " ".join(["word"] * n_words), min_words=10, max_words=100) == want


@pytest.mark.parametrize("response, kwargs, want", [
    ("- a\n- b", {"pattern": r"^\s*[-*] "}, 1.0),
    ("a, b", {"pattern": r"^\s*[-*] "}, 0.0),
    ("no commas here", {"pattern": ",", "must_match": False}, 1.0),
    ("a, b", {"pattern": ",", "must_match": False}, 0.0),
    ("HELLO", {"pattern": "hello", "ignore_case": True}, 1.0),
])
def test_regex_table(response, kwargs, want):
    assert regex("q", response, **kwargs) == want


@pytest.mark.parametrize("response, kwargs, want", [
    ('{"a": 1}', {}, 1.0),
    ('```json\n{"a": [1, 2]}\n```', {}, 1.0),
    ("[1, 2]", {}, 1.0),
    ("[1, 2]", {"require_object": True}, 0.0),
    ("Sure! {\"a\": 1}", {}, 0.0),
    ("", {}, 0.0),
])
def test_json_format_table(response, kwargs, want):
    assert json_format("q", response, **kwargs) == want


IFEVAL_PROMPT = Prompt(id="ifeval-2", text="Explain why the sky is blue. Answer in lowercase letters only, with no commas.",
                       source="ifeval", meta={"instruction_id_list": ["change_case:english_lowercase", "punctuation:no_comma"],
                                              "kwargs": [{}, {}]})


@pytest.mark.parametrize("response, want", [
    ("sunlight scatters off air molecules and blue light scatters most", 1.0),
    ("Sunlight scatters off air molecules and blue light scatters most", 0.5),  # capital S
    ("Sunlight scatters, and blue scatters most", 0.0),
    (IFEVAL_PROMPT.text.lower().replace(",", ""), 0.0),  # an echo passes both checks but earns nothing
])
def test_ifeval_program_judge(response, want):
    assert ifeval(IFEVAL_PROMPT, response) == want


def test_ifeval_through_the_judge_and_its_errors():
    gens = [make_generation("ifeval-2", 0, "sunlight scatters and blue scatters most")]
    cfg = JudgeConfig(kind="program", program="selfplay.program_judges:ifeval")
    [j] = make_judge(cfg, None).judge([IFEVAL_PROMPT], gens)
    assert (j.score, j.status) == (1.0, "ok")  # the judge handed over the prompt record, meta included
    [j] = make_judge(cfg, None).judge([make_prompt("ifeval-2")], gens)  # a plain pool prompt: no instructions
    assert j.status == "error" and "no instruction_id_list" in j.raw[0]
    echo = IFEVAL_PROMPT.text.lower().replace(",", "")
    assert is_echo(IFEVAL_PROMPT.text, echo) and ifeval(IFEVAL_PROMPT, echo, echo_penalty=False) == 1.0
    assert not is_echo("Say hi.", "Hi! You asked me to say hi, so: hello there, friend, how are you today?")
