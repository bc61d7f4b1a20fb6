"""Program revision (selfplay.ifeval.revise) and the revision pairs it gives (pairing.revise)."""

import json

import pytest

from selfplay.config import ConfigError, JudgeConfig, PairingConfig, load_config
from selfplay.ifeval import check
from selfplay.ifeval.revise import complete_sentences, revise
from selfplay.judges.program import program_reviser
from selfplay.loop import pair_responses, preflight, run_stage
from selfplay.rundir import Run
from selfplay.pairing import make_pairs
from selfplay.records import Judgement, Pair, Prompt, read_records, write_records

from conftest import make_generation

CUT = "The sky is blue because air scatters blue light. It scatters more of it than red, which"

# (instruction id, kwargs, response, revision expected; None = no revision)
TABLE = [
    ("change_case:english_lowercase", {}, "The Sky is Blue.", "the sky is blue."),
    ("change_case:english_capital", {}, "The sky is blue.", "THE SKY IS BLUE."),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "Study hard and rest well.", "STUDY HARD and rest well."),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"},
     "STUDY HARD and REST.", "Study Hard and Rest."),
    ("punctuation:no_comma", {}, "Red, green, and blue.", "Red green and blue."),
    ("startend:quotation", {}, CUT, '"The sky is blue because air scatters blue light."'),  # the cut sentence goes
    ("startend:quotation", {}, '"Already quoted."', None),  # follows it already: nothing to revise
    ("startend:end_checker", {"end_phrase": "That is all."}, CUT,
     "The sky is blue because air scatters blue light. That is all."),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Why is the sky blue?"}, "Air scatters blue light.",
     "Why is the sky blue?\n\nAir scatters blue light."),
    ("length_constraints:number_words", {"num_words": 10, "relation": "less than"},
     "Air scatters blue light. Red light passes through the air more easily than blue.", "Air scatters blue light."),
    ("length_constraints:number_words", {"num_words": 50, "relation": "at least"}, "Too short.", None),  # needs content
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"},
     "One. Two. Three. Four.", "One. Two."),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "1. First point.\n2. Second point.\n3. Third.",
     "* First point.\n* Second point."),
    ("detectable_format:title", {}, "The care of a goldfish is simple.", "<<The Care Of A Goldfish>>\n\nThe care of a goldfish is simple."),
    ("detectable_format:json_format", {}, 'Here:\n```json\n{"a": 1}\n```\nThis JSON has a key.', '{"a": 1}'),
    ("detectable_format:json_format", {}, "Three snacks: nuts and fruit.", json.dumps({"answer": "Three snacks: nuts and fruit."})),
    ("detectable_format:json_format", {}, "```python\nx = {1: 2}\n```", None),  # code, not JSON: no rule fits
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "One. Two. Three.", "One. Two.\n\n***\n\nThree."),
    ("detectable_format:multiple_sections", {"section_spliter": "Week", "num_sections": 2}, "Walk. Run.",
     "Week 1\nWalk.\n\nWeek 2\nRun."),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 1}, "Tilt matters. Orbit less.",
     "*Tilt matters.* Orbit less."),
    ("language:response_language", {"language": "fr"}, "The sky is blue.", None),  # content: no rule
    ("keywords:forbidden_words", {"forbidden_words": ["blue"]}, "The sky is blue.", None),  # deleting words breaks prose
]


@pytest.mark.parametrize("iid, kwargs, response, want", TABLE)
def test_revision_rules(iid, kwargs, response, want):
    got = revise([iid], [kwargs], response)
    assert got == want
    if got is not None:
        assert check(iid, kwargs, response) is False and check(iid, kwargs, got) is True


def test_rules_compose_and_every_instruction_is_checked_again():
    ids = ["startend:end_checker", "change_case:english_lowercase"]
    kwargs = [{"end_phrase": "Go Blue Team!"}, {}]
    # The lowercase rule runs after the end phrase is added, so the phrase is lowercased too (still its match).
    assert revise(ids, kwargs, "We Play Today.") == "we play today. go blue team!"
    # A revision that breaks another instruction is no revision: no commas, but the end phrase has one.
    assert revise(["startend:end_checker", "punctuation:no_comma"], [{"end_phrase": "Bye, now."}, {}], "Hi, all.") is None
    # One failed instruction without a rule: nothing is revised, even where another rule could work.
    assert revise(["change_case:english_lowercase", "keywords:existence"], [{}, {"keywords": ["tide"]}], "The Sea.") is None
    with pytest.raises(ValueError, match="missing kwargs"):
        revise(["startend:end_checker"], [{}], "text")


def test_complete_sentences():
    assert complete_sentences(CUT) == "The sky is blue because air scatters blue light."
    assert complete_sentences("Ends well!") == "Ends well!"
    assert complete_sentences("no sentence end at all") == "no sentence end at all"


PROMPT = Prompt(id="ifeval-9", text="Describe rain in lowercase.", source="ifeval",
                meta={"instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]})


def judged(prompt_id: str, texts_scores: list[tuple[str, float]]):
    gens = [make_generation(prompt_id, j, t) for j, (t, _) in enumerate(texts_scores)]
    js = [Judgement(id=f"{g.id}/j", prompt_id=prompt_id, generation_ids=[g.id], judge="program", method="program",
                    raw=[repr(s)], sample_scores=[s], score=s, status="ok") for g, (_, s) in zip(gens, texts_scores)]
    return gens, js


def test_revision_pairs_where_no_sample_passes():
    reviser = program_reviser("selfplay.program_judges:ifeval_revise",
                              JudgeConfig(kind="program", program="selfplay.program_judges:ifeval"))
    cfg = PairingConfig(min_margin=0.05)
    # Every sample fails the same way: without revision a tie, no pair; with it, the fix is the chosen side.
    gens, js = judged("ifeval-9", [("Rain Falls.", 0.0), ("Rain Is Wet.", 0.0)])
    assert make_pairs(cfg, [PROMPT], gens, js)[0] == []
    pairs, stats = make_pairs(cfg, [PROMPT], gens, js, reviser)
    [p] = pairs
    assert (p.chosen, p.rejected, p.chosen_id, p.rejected_id) == ("rain falls.", "Rain Falls.", "ifeval-9/g0/revision", "ifeval-9/g0")
    assert (p.chosen_score, p.rejected_score, p.margin, p.judge) == (1.0, 0.0, 1.0, "program+revision")
    assert (stats.pairs, stats.revised, stats.skipped_tie) == (1, 1, 0)
    # A sample that passes already: the ordinary best-vs-worst pair, no revision.
    gens, js = judged("ifeval-9", [("Rain Falls.", 0.0), ("rain falls.", 1.0)])
    [p], stats = make_pairs(cfg, [PROMPT], gens, js, reviser)
    assert (p.chosen_id, p.rejected_id, stats.revised) == ("ifeval-9/g1", "ifeval-9/g0", 0)


def test_revise_needs_a_program_judge_and_a_working_function(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="pairing.revise needs judge.kind=program"):
        load_config(None, ["pairing.revise=selfplay.program_judges:ifeval_revise"])
    (tmp_path / "bad_revise.py").write_text("def revise(prompt, response):\n    return 3\n")
    monkeypatch.chdir(tmp_path)
    reviser = program_reviser("bad_revise.py:revise", JudgeConfig(kind="program", program="selfplay.program_judges:ifeval"))
    with pytest.raises(Exception, match="returned int for ifeval-9, not a string or None"):
        reviser(PROMPT, make_generation("ifeval-9", 0, "Rain."))


def test_a_cut_response_is_trimmed_to_its_last_sentence_before_revision():
    reviser = program_reviser("selfplay.program_judges:ifeval_revise",
                              JudgeConfig(kind="program", program="selfplay.program_judges:ifeval"))
    cut = make_generation("ifeval-9", 0, "Rain Falls. It Soaks the").model_copy(update={"finish_reason": "length"})
    assert reviser(PROMPT, cut) == ("rain falls.", 1.0)
    finished = make_generation("ifeval-9", 0, "Rain Falls. It Soaks the")  # stopped there itself: kept whole
    assert reviser(PROMPT, finished) == ("rain falls. it soaks the", 1.0)
    # Trimming alone is the revision when it is all that was wrong: fewer than 4 words.
    short = Prompt(id="ifeval-5", text="Describe rain in under 4 words.", source="ifeval",
                   meta={"instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"num_words": 4, "relation": "less than"}]})
    cut = make_generation("ifeval-5", 0, "Rain falls. It soaks the ground and").model_copy(update={"finish_reason": "length"})
    assert reviser(short, cut) == ("Rain falls.", 1.0)
    assert reviser(short, make_generation("ifeval-5", 0, "Rain falls.")) is None  # follows it already
    untrimmed = program_reviser("selfplay.program_judges:ifeval_revise",
                                JudgeConfig(kind="program", program="selfplay.program_judges:ifeval"), trim_cut=False)
    cut = make_generation("ifeval-9", 0, "Rain Falls. It Soaks the").model_copy(update={"finish_reason": "length"})
    assert untrimmed(PROMPT, cut) == ("rain falls. it soaks the", 1.0)  # revise_trim_cut=false: the rules get the cut text


def test_the_pair_stage_revises_through_the_run_config(tmp_path):
    """The loop's pair stage with pairing.revise: records in, revision pairs and their count in the manifest out."""
    cfg = load_config(None, ["judge.kind=program", "judge.program=selfplay.program_judges:ifeval",
                             "pairing.revise=selfplay.program_judges:ifeval_revise", "pairing.min_margin=0.05"])
    preflight(cfg)
    run = Run.create(tmp_path / "rev", cfg)
    p = run.paths(1)
    quoted = Prompt(id="ifeval-3", text="Say hi in double quotes.", source="ifeval",
                    meta={"instruction_id_list": ["startend:quotation"], "kwargs": [{}]})
    rain_gens, rain_js = judged("ifeval-9", [("Rain Falls.", 0.0), ("Rain Is Wet.", 0.0)])
    hi_gens, hi_js = judged("ifeval-3", [('"Hi."', 1.0), ("Hi.", 0.0)])
    write_records(p.prompts, [PROMPT, quoted])
    write_records(p.generations, rain_gens + hi_gens)
    write_records(p.judgements, rain_js + hi_js)
    assert run_stage(run, 1, "pair").count == 2
    pairs = {q.prompt_id: q for q in read_records(p.pairs, Pair)}
    assert (pairs["ifeval-9"].chosen, pairs["ifeval-9"].chosen_id) == ("rain falls.", "ifeval-9/g0/revision")
    assert (pairs["ifeval-3"].chosen_id, pairs["ifeval-3"].rejected_id) == ("ifeval-3/g0", "ifeval-3/g1")  # passed: no revision
    _, stats = pair_responses(cfg, [PROMPT, quoted], rain_gens + hi_gens, rain_js + hi_js)  # what the manifest records
    assert (stats.pairs, stats.revised) == (2, 1)
