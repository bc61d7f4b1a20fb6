"""Hindsight instruction relabelling: the relabel rules as literal tables, the truth of every relabel over the
shipped pools and the default model's real responses, the counts, the bad inputs, and one tiny-model iteration."""

import functools
import json
from pathlib import Path

import pytest

from selfplay.config import PROJECT_ROOT, ConfigError, HIRSection, load_config
from selfplay.ifeval import check
from selfplay.ifeval.relabel import RULE_IDS, COUNT_RULES, find_count_phrase, hindsight, round_above, round_below
from selfplay.pool import load_pool
from selfplay.records import Generation, Prompt
from selfplay.train.hir import check_hir, hir_examples

from conftest import make_generation

BULLETS = "Give me three tips for houseplants. Use exactly 3 markdown bullet points, like '* tip'."
WORDS = "Describe your morning. Keep the whole reply under 100 words."


def words(n: int) -> str:
    return " ".join(["word"] * n) + "."


# (prompt, ids, kwargs, response) -> (outcome, new prompt text or None, new kwargs or None)
RELABELS = [
    (BULLETS, ["detectable_format:number_bullet_lists"], [{"num_bullets": 3}], "* a\n* b\n* c\n* d\n* e",
     "relabelled", "Give me three tips for houseplants. Use exactly 5 markdown bullet points, like '* tip'.", [{"num_bullets": 5}]),
    (WORDS, ["length_constraints:number_words"], [{"num_words": 100, "relation": "less than"}], words(140),
     "relabelled", "Describe your morning. Keep the whole reply under 150 words.", [{"num_words": 150, "relation": "less than"}]),
    ("Review a film. Write at least 60 words.", ["length_constraints:number_words"], [{"num_words": 60, "relation": "at least"}],
     words(37), "relabelled", "Review a film. Write at least 35 words.", [{"num_words": 35, "relation": "at least"}]),
    # "no more than 3" is IFEval's less than 4: the text keeps saying "no more than", one below the new kwarg
    ("Explain climate in no more than 3 sentences.", ["length_constraints:number_sentences"],
     [{"num_sentences": 4, "relation": "less than"}], "One. Two. Three. Four. Five.",
     "relabelled", "Explain climate in no more than 5 sentences.", [{"num_sentences": 6, "relation": "less than"}]),
    ("Cheer a violinist. Make sure the word 'practice' appears at least twice.", ["keywords:frequency"],
     [{"keyword": "practice", "frequency": 2, "relation": "at least"}], "Keep up the practice!",
     "relabelled", "Cheer a violinist. Make sure the word 'practice' appears at least once.",
     [{"keyword": "practice", "frequency": 1, "relation": "at least"}]),
    ("Announce a lost dog. Write your entire response in capital letters, as if it were a poster.",
     ["change_case:english_capital"], [{}], "our dog is lost near the school. please call us if you see him today.",
     "relabelled", "Announce a lost dog. Write your entire response in lowercase, as if it were a poster.", [{}]),
    # a second instruction that passed keeps its phrase
    ("Plan a trip. Use exactly 2 bullet points and write everything in lowercase.",
     ["detectable_format:number_bullet_lists", "change_case:english_lowercase"], [{"num_bullets": 2}, {}],
     "* pack light\n* go early\n* have fun", "relabelled",
     "Plan a trip. Use exactly 3 bullet points and write everything in lowercase.", [{"num_bullets": 3}, {}]),
    # an end phrase becomes the reply's own last words (of its last sentence, at most six)
    ("Write a note to a coworker. End exactly with 'Thanks in advance.'", ["startend:end_checker"],
     [{"end_phrase": "Thanks in advance."}], "The meeting moved.\nSee you at nine!", "relabelled",
     "Write a note to a coworker. End exactly with 'See you at nine!'", [{"end_phrase": "See you at nine!"}]),
    ("Describe tea. End with 'Cheers.'", ["startend:end_checker"], [{"end_phrase": "Cheers."}], "Tea is 'nice'.",
     "not_measurable", None, None),
    # nothing measured to relabel to
    (BULLETS, ["detectable_format:number_bullet_lists"], [{"num_bullets": 3}], "Water them less.", "not_measurable", None, None),
    ("Describe tea. Wrap the reply in double quotes.", ["startend:quotation"], [{}], "Tea is nice.", "no_rule", None, None),
    # the phrase is not in the text: no relabel rather than a prompt that says something else than its kwargs
    ("Explain seasons. Highlight the most important idea with markdown asterisks.",
     ["detectable_format:number_highlighted_sections"], [{"num_highlights": 1}], "It is the tilt.", "not_measurable", None, None),
    ("Explain seasons. Highlight the key ideas with markdown asterisks.",
     ["detectable_format:number_highlighted_sections"], [{"num_highlights": 3}], "It is *the tilt* and *the sun*.",
     "text_not_found", None, None),
    # one failed instruction without a rule blocks the other's relabel: the new prompt would still be failed
    ("Plan a trip in 3 bullet points. Wrap the reply in double quotes.",
     ["detectable_format:number_bullet_lists", "startend:quotation"], [{"num_bullets": 3}, {}], "* a\n* b", "no_rule", None, None),
    ("Say hi in under 10 words.", ["length_constraints:number_words"], [{"num_words": 10, "relation": "less than"}], "Hi there.",
     "passed", None, None),
]


@pytest.mark.parametrize("text, ids, kwargs, response, outcome, new_text, new_kwargs", RELABELS)
def test_relabel_table(text, ids, kwargs, response, outcome, new_text, new_kwargs):
    h = hindsight(text, ids, kwargs, response)
    assert h.outcome == outcome
    if outcome == "relabelled":
        assert (h.prompt, h.kwargs) == (new_text, new_kwargs)
        assert all(check(i, kw, response) for i, kw in zip(h.instruction_id_list, h.kwargs))


def test_case_swap_changes_the_id():
    h = hindsight("Describe a pixel. Make the entire answer uppercase.", ["change_case:english_capital"], [{}],
                  "a pixel is one small dot of colour on a screen, and many of them make a picture.")
    assert h.instruction_id_list == ["change_case:english_lowercase"] and h.prompt == "Describe a pixel. Make the entire answer lowercase."


def test_excluded_instruction_is_not_relabelled():
    h = hindsight(WORDS, ["length_constraints:number_words"], [{"num_words": 100, "relation": "less than"}], words(140),
                  allowed={"detectable_format:number_bullet_lists"})
    assert (h.outcome, h.blocking) == ("excluded", "length_constraints:number_words")


def test_round_numbers():
    assert [round_above(c) for c in (0, 3, 9, 10, 14, 49, 50, 140, 141)] == [1, 4, 10, 15, 15, 50, 60, 150, 150]
    assert [round_below(c) for c in (0, 3, 9, 10, 14, 49, 50, 141)] == [0, 3, 9, 10, 10, 45, 50, 140]


def test_phrase_must_be_unique():
    rule = COUNT_RULES["length_constraints:number_words"]
    assert find_count_phrase("Write 50 words, then 50 words more.", rule, 50, "less than") is None
    assert find_count_phrase("Name 50 states in under 50 words.", rule, 50, "less than").start == 24


def responses_of_every_shape() -> list[str]:
    """Responses that fail the pools' counted instructions in both directions: many and few words, sentences,
    bullets, *** paragraphs, highlights, sections, placeholders, capital words, case."""
    out = []
    for n in (1, 3, 7, 30, 160):
        out += [
            words(n),
            ". ".join(["The cat sat"] * n) + ".",
            "\n".join(f"* point {i}" for i in range(n)),
            " *** ".join(f"Paragraph {i} is here." for i in range(n)),
            " ".join(f"*idea {i}*" for i in range(n)) + " and [name] " * (n % 5),
            " ".join(f"SECTION {i} Day {i} Step {i} Week {i} text" for i in range(1, n + 1)),
            " ".join(["LOUD WORDS here"] * n),
            " ".join(["practice money books mountain zebra"] * n) + " e" * n,
            ("all lower case words here " * n).strip(),
            ("ALL UPPER CASE WORDS HERE " * n).strip(),
        ]
    return out


def pool(*names: str) -> list[Prompt]:
    return [p for name in names for p in load_pool(PROJECT_ROOT / "data" / "ifeval" / name)]


def test_every_relabel_passes_its_checkers_and_says_its_number(monkeypatch):
    """The point of hindsight: every relabelled example is true. Over every prompt of the shipped pools and
    responses of every shape, each relabel passes the checkers with its new kwargs, changes only what it names,
    and its text states each new count."""
    from selfplay.ifeval import checkers

    # the case checkers ask langdetect about the same few responses thousands of times: ask once per text
    monkeypatch.setattr(checkers, "detect_language", functools.cache(checkers.detect_language))
    prompts, shapes = pool("prompts.jsonl", "train_formats.jsonl"), responses_of_every_shape()
    relabelled = set()
    for prompt in prompts:
        ids, kwargs = prompt.meta["instruction_id_list"], prompt.meta["kwargs"]
        for response in shapes:
            h = hindsight(prompt.text, ids, kwargs, response)
            if h.outcome != "relabelled":
                continue
            relabelled.add(tuple(c.instruction_id for c in h.changes))
            assert all(check(i, kw, response) for i, kw in zip(h.instruction_id_list, h.kwargs)), (prompt.id, response)
            assert h.prompt != prompt.text
            for change in h.changes:
                rule = COUNT_RULES.get(change.instruction_id)
                if change.instruction_id == "startend:end_checker":
                    assert change.new_kwargs["end_phrase"] in h.prompt
                if rule:
                    new = change.new_kwargs[rule.count]
                    said = find_count_phrase(h.prompt, rule, new, change.new_kwargs.get(rule.relation) if rule.relation else None)
                    assert said is not None, (prompt.id, h.prompt, change)
    # every rule fired somewhere: the test above cannot pass by relabelling nothing
    fired = {i for ids in relabelled for i in ids}
    assert fired == RULE_IDS, fired


def model_responses() -> tuple[list[Prompt], list[Generation]]:
    """The default model's sampled responses to our prompts (tests/data/ifeval_reference.jsonl, the model cases)."""
    by_id = {p.id: p for p in pool("prompts.jsonl", "train_formats.jsonl", "independent.jsonl")}
    gens = []
    for line in (Path(__file__).parent / "data" / "ifeval_reference.jsonl").read_text().splitlines():
        case = json.loads(line)
        if case["source"] == "model":
            gid = case["case"].removeprefix("model:")
            gens.append(make_generation(gid.split("/")[0], 0, case["response"]).model_copy(update={"id": gid}))
    return [by_id[pid] for pid in sorted({g.prompt_id for g in gens})], gens


def test_default_model_responses_relabel_rate():
    """On 420 real responses of the default model, about one failed response in six gets a true relabel."""
    prompts, gens = model_responses()
    examples, relabels, stats = hir_examples(prompts, gens, HIRSection(max_per_prompt=8))
    assert (stats.responses, stats.passed, stats.relabelled, stats.not_relabellable) == (420, 100, 58, 262)
    assert stats.relabel_rate == pytest.approx(58 / 320, abs=1e-4)
    assert stats.relabelled_per_instruction["startend:end_checker"] == 20
    assert len(examples) == 158 and len(relabels) == 58
    for r in relabels:
        response = next(g.text for g in gens if g.id == r.generation_id)
        assert all(check(i, kw, response) for i, kw in zip(r.instruction_id_list, r.kwargs))


def test_hir_examples_counts_every_response():
    ids = ["length_constraints:number_words"]
    ifeval = Prompt(id="w", text="Describe rain in at least 40 words.", source="ifeval",
                    meta={"instruction_id_list": ids, "kwargs": [{"num_words": 40, "relation": "at least"}]})
    plain = Prompt(id="plain", text="Say hi.")
    gens = [
        make_generation("w", 0, words(45)),  # passed
        make_generation("w", 1, words(45)),  # passed again, same text: not a second original
        make_generation("w", 2, words(12)),  # relabelled to at least 10
        make_generation("w", 3, words(22)),  # relabelled to at least 20
        make_generation("w", 4, words(31)),  # over max_per_prompt=2
        make_generation("w", 5, "   "),  # empty
        make_generation("w", 6, "Describe rain in at least 40 words."),  # echo
        make_generation("w", 7, words(5)).model_copy(update={"finish_reason": "length"}),  # cut
        make_generation("plain", 0, "Hi!"),  # no instruction ids
    ]
    examples, relabels, stats = hir_examples([ifeval, plain], gens, HIRSection())
    assert [e.id for e in examples] == ["w/g0/sft", "w/g2/hir", "w/g3/hir"]
    assert [e.prompt for e in examples] == [ifeval.text, "Describe rain in at least 10 words.", "Describe rain in at least 20 words."]
    assert [r.kwargs for r in relabels] == [[{"num_words": 10, "relation": "at least"}], [{"num_words": 20, "relation": "at least"}]]
    assert relabels[0].changes == [{"instruction_id": ids[0], "old_kwargs": {"num_words": 40, "relation": "at least"},
                                    "new_kwargs": {"num_words": 10, "relation": "at least"}, "measured": 12}]
    assert (stats.responses, stats.passed, stats.originals, stats.relabelled, stats.over_max) == (9, 2, 1, 2, 1)
    assert (stats.empty, stats.echo, stats.cut, stats.not_relabellable) == (1, 1, 1, 1)
    assert stats.reasons == {"no_instruction_ids": 1} and stats.relabelled_per_instruction == {ids[0]: 2}
    assert stats.relabel_rate == pytest.approx(3 / 4)
    assert stats.responses == sum(getattr(stats, k) for k in ("empty", "echo", "cut", "passed", "relabelled", "over_max", "not_relabellable"))
    # without originals, and keeping cut answers
    examples, _, stats = hir_examples([ifeval], gens, HIRSection(keep_originals=False, skip_cut=False, max_per_prompt=8))
    assert [e.id for e in examples] == ["w/g2/hir", "w/g3/hir", "w/g4/hir", "w/g7/hir"] and stats.originals == 0


def test_hir_config_and_preflight_errors():
    ok = load_config(None, ["train.algo=hir", "prompts.pool=data/ifeval/train_formats.jsonl"])
    check_hir(ok)
    assert ok.train.hir == HIRSection()
    with pytest.raises(ConfigError, match="has no prompt with IFEval instruction ids"):
        check_hir(load_config(None, ["train.algo=hir"]))
    with pytest.raises(ConfigError, match="'startend:quotation' has no relabel rule"):
        check_hir(load_config(None, ["train.algo=hir", "prompts.pool=data/ifeval/train.jsonl",
                                     "train.hir.instructions=[startend:quotation]"]))
    with pytest.raises(ConfigError, match="prompts.source=self-instruct writes prompts without them"):
        check_hir(load_config(None, ["train.algo=hir", "prompts.pool=data/ifeval/train.jsonl", "prompts.source=self-instruct"]))
    with pytest.raises(ConfigError, match="train.hir"):
        load_config(None, ["train.algo=dpo", "train.hir.max_per_prompt=3"])
    with pytest.raises(ConfigError, match="names an instruction twice"):
        load_config(None, ["train.algo=hir", "train.hir.instructions=[keywords:frequency, keywords:frequency]"])


def test_shipped_config_preflights():
    from selfplay.loop import preflight

    cfg = load_config(PROJECT_ROOT / "configs" / "hir.yaml")
    assert cfg.train.algo == "hir" and cfg.judge.program == "selfplay.program_judges:ifeval"
    preflight(cfg)


@pytest.mark.slow
def test_one_hir_iteration_on_the_tiny_model(tiny_model_dir, tmp_path):
    """A full iteration: transformers sampling, the program judge, relabelling, SFT; the relabels are true and the
    policy changed."""
    from safetensors.torch import load_file

    from selfplay.loop import run_loop
    from selfplay.records import Relabel, TrainResult, read_record, read_records
    from selfplay.rundir import Run

    pool_file = tmp_path / "pool.jsonl"
    tasks = ["Describe the rain", "Explain a clock", "Praise a dog", "Name a river"]
    pool_file.write_text("".join(json.dumps({"key": i, "prompt": f"{t}. Write at least 200 words.",
                                             "instruction_id_list": ["length_constraints:number_words"],
                                             "kwargs": [{"num_words": 200, "relation": "at least"}]}) + "\n"
                                 for i, t in enumerate(tasks, start=1)))
    cfg = load_config(None, [
        f"model={tiny_model_dir}", "iterations=1", f"prompts.pool={pool_file}", "prompts.per_iteration=4",
        "generation.backend=transformers", "generation.n=2", "generation.max_tokens=12", "judge.kind=program",
        "judge.program=selfplay.program_judges:ifeval", "train.algo=hir", "train.hir.skip_cut=false", "train.batch_size=2",
        "train.max_length=96", "train.learning_rate=1e-3",
    ])
    run = Run.create(tmp_path / "hir", cfg)
    run_loop(run, log=lambda _: None)
    p = run.paths(1)
    result = read_record(p.train, TrainResult)
    relabels = read_records(p.policy / "relabels.jsonl", Relabel)
    gens = {g.id: g for g in read_records(p.generations, Generation)}
    assert result.algo == "hir" and result.skipped is None and result.steps >= 1
    hir = result.sft.hir
    assert hir.responses == 8 and hir.relabelled == len(relabels) >= 1
    assert hir.relabelled_per_instruction == {"length_constraints:number_words": len(relabels)}
    for r in relabels:
        assert all(check(i, kw, gens[r.generation_id].text) for i, kw in zip(r.instruction_id_list, r.kwargs))
        assert r.kwargs[0]["num_words"] < 200 and f"at least {r.kwargs[0]['num_words']} words" in r.prompt
    manifest = json.loads(p.manifest.read_text())
    assert manifest["train"]["sft"]["hir"]["relabelled"] == len(relabels)
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(p.policy / "merged" / "model.safetensors")
    assert any(not before[k].to(after[k].dtype).equal(after[k]) for k in before)
