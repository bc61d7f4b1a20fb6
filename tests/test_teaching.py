"""Judge teaching (selfplay/teaching.py): checker-derived and human labels rendered as the judge's own targets,
the measurement of a judge against the checkers, the config section, and the stage on the tiny model."""

import json
import math

import pytest
from conftest import FakeGenerator, make_generation

from selfplay.config import ConfigError, JudgeConfig, load_config
from selfplay.generation import chat_ids
from selfplay.judges import PointwiseJudge
from selfplay.records import Pair, Prompt
from selfplay.seed import ScoredResponse, SeedSet
from selfplay.teaching import (
    TeachingError,
    check_teaching,
    checker_examples,
    checker_verdicts,
    measure_judge,
    pairwise_checker_examples,
    reason,
    rubric_score,
    seed_examples,
)
from selfplay.templates import load_template


def lowercase_no_comma(pid: str = "p1") -> Prompt:
    return Prompt(
        id=pid,
        text="Describe rain in lowercase letters only, without commas.",
        source="ifeval",
        meta={"instruction_id_list": ["change_case:english_lowercase", "punctuation:no_comma"], "kwargs": [{}, {}]},
    )


def test_checker_verdicts_and_the_reason_line():
    prompt = lowercase_no_comma()
    assert checker_verdicts(prompt, "rain falls, softly") == [
        ("change_case:english_lowercase", True),
        ("punctuation:no_comma", False),
    ]
    assert reason(checker_verdicts(prompt, "rain falls, softly")) == "Follows 1 of 2 instructions; misses: no comma."
    assert reason(checker_verdicts(prompt, "rain falls softly")) == "Follows 2 of 2 instructions."
    assert checker_verdicts(Prompt(id="x", text="hi"), "anything") is None  # no instructions: no label


def test_rubric_score_maps_the_share_followed_onto_the_scale():
    assert [rubric_score(f, (1, 5)) for f in (0.0, 0.5, 1.0, 1 / 3)] == [1, 3, 5, 2]
    assert rubric_score(0.5, (0, 10)) == 5


def test_pointwise_targets_put_the_score_where_the_logprob_method_reads_it():
    template = load_template("instruction-following")
    prompt = lowercase_no_comma()
    gens = [make_generation("p1", 0, "rain falls, softly"), make_generation("p1", 1, "Rain Falls"), make_generation("p1", 2, "  ")]
    examples = checker_examples("pointwise", template, [prompt], gens)
    assert [e.generation_id for e in examples] == ["p1/g0", "p1/g1"]  # a blank response gets no label
    assert examples[0].completion == "Score: 3\nFollows 1 of 2 instructions; misses: no comma."
    assert examples[1].completion == "Score: 3\nFollows 1 of 2 instructions; misses: english lowercase."
    assert examples[0].score == 3 and examples[0].judge == "checkers"
    assert examples[0].prompt == template.render(prompt=prompt.text, response="rain falls, softly")
    # The judge's logprob input is the user turn plus the forced prefix: the taught target continues it with the digit.
    assert examples[0].completion.startswith(template.score_prefix)
    # contrast: a prompt whose responses all get one score teaches no ranking, so it is left out
    assert checker_examples("pointwise", template, [prompt], gens, contrast=True) == []
    passing = make_generation("p1", 3, "rain falls softly")
    assert len(checker_examples("pointwise", template, [prompt], [*gens, passing], contrast=True)) == 3


def test_pairwise_targets_best_against_worst_in_both_orders():
    template = load_template("pairwise")
    prompt = lowercase_no_comma()
    good, bad, mid = (
        make_generation("p1", 0, "rain falls softly"),
        make_generation("p1", 1, "Rain, Falls"),
        make_generation("p1", 2, "rain, falls"),
    )
    examples = pairwise_checker_examples(template, prompt, [bad, good, mid], "checkers")
    assert [(e.generation_id, e.completion.split("\n")[0]) for e in examples] == [
        ("p1/g0|p1/g1", "Verdict: A"),
        ("p1/g1|p1/g0", "Verdict: B"),
    ]
    same = [make_generation("p1", 0, "Rain, a"), make_generation("p1", 1, "Rain, b")]
    assert pairwise_checker_examples(template, prompt, same, "checkers") == []  # the checkers rank them level


def test_seed_examples_rescale_scored_lines_and_present_pairs_both_ways():
    seed = SeedSet(
        source="s.jsonl",
        pairs=[
            Pair(id="h1", prompt_id="q", prompt="Name a colour.", chosen="Blue.", rejected="Seven.", chosen_id="a",
                 rejected_id="b", chosen_score=1.0, rejected_score=0.0, margin=1.0, judge="human")
        ],
        scored=[
            ScoredResponse(id="s1", prompt_id="q", prompt="Name a colour.", response="Blue.", score=10),
            ScoredResponse(id="s2", prompt_id="q", prompt="Name a colour.", response="Seven.", score=0),
            ScoredResponse(id="s3", prompt_id="q", prompt="Name a colour.", response="Blueish.", score=5),
        ],
    )
    pointwise = seed_examples("pointwise", load_template("instruction-following"), seed)
    assert [e.completion.split("\n")[0] for e in pointwise] == ["Score: 5", "Score: 1", "Score: 3"]
    pairwise = seed_examples("pairwise", load_template("pairwise"), seed)
    assert [e.completion.split("\n")[0] for e in pairwise] == ["Verdict: A", "Verdict: B"]
    assert "Blue." in pairwise[0].prompt.split("reply_B")[0] and "Seven." in pairwise[1].prompt.split("reply_B")[0]


def scoring_judge(rule):
    """A pointwise judge over a fake model whose score-token distribution puts all mass on rule(judge input)."""
    template = load_template("instruction-following")
    gen = FakeGenerator(logprobs=lambda text: {ord(str(rule(text))): 0.0})
    return PointwiseJudge(gen, template, JudgeConfig(kind="pointwise", template="instruction-following", method="logprob"))


def test_measure_judge_against_the_checkers():
    prompts = [lowercase_no_comma("p1"), lowercase_no_comma("p2")]
    texts = {"p1": ["rain falls softly", "Rain, Falls Down Hard"], "p2": ["wet, cold", "Wet Cold Rain Today"]}
    gens = [make_generation(pid, j, t) for pid, ts in texts.items() for j, t in enumerate(ts)]  # 3, 4, 2, 4 tokens
    # Checker scores 1, 0, 0.5, 0.5: only p1's two responses are ranked apart (on p2 each follows 1 of 2).

    def reply(text: str) -> str:
        return text.split("<reply>")[1].split("</reply>")[0].strip()

    good = measure_judge(scoring_judge(lambda t: 1 if "," in reply(t) else 5), "fake", prompts, gens, [], seed=0)
    assert good.responses == 4 and good.scored == 4
    assert good.checker_agreement.n == 1 and good.checker_agreement.accuracy == 1.0
    assert good.spearman_checkers == pytest.approx(3 / math.sqrt(18))  # ranks 3.5,1.5,1.5,3.5 against 4,1,2.5,2.5
    # A judge that pays for length (5 for a reply over 18 characters) prefers p1's worse, longer reply.
    longer = measure_judge(scoring_judge(lambda t: 5 if len(reply(t)) > 18 else 1), "fake", prompts, gens, [], seed=0)
    assert longer.checker_agreement.accuracy == 0.0 and longer.checker_agreement.disagree == 1
    assert longer.score_length_r == pytest.approx(4 / math.sqrt(18))
    assert longer.checker_length_r == pytest.approx(-0.5)
    assert longer.length_bias == pytest.approx(4 / math.sqrt(18) + 0.5)


def test_the_config_section_belongs_to_judge_data():
    cfg = load_config(None, ["train.judge_data=[checkers]"])
    assert cfg.train.judge is not None and cfg.train.judge.samples == 4
    assert load_config(None).train.judge is None
    with pytest.raises(ConfigError, match="train.judge: belongs to judge teaching"):
        load_config(None, ["train.judge.samples=3"])
    with pytest.raises(ConfigError, match="names a source twice"):
        load_config(None, ["train.judge_data=[checkers,checkers]"])
    with pytest.raises(ConfigError, match="judge_data"):
        load_config(None, ["train.judge_data=[people]"])


def test_preflight_refuses_what_cannot_be_taught(tmp_path):
    with pytest.raises(TeachingError, match="cannot be taught"):
        check_teaching(load_config(None, ["train.judge_data=[checkers]", "judge.kind=program",
                                          "judge.program=selfplay.program_judges:length_bounds"]))
    with pytest.raises(TeachingError, match="no checkable prompts"):  # the default pool has no instructions
        check_teaching(load_config(None, ["train.judge_data=[checkers]"]))
    with pytest.raises(TeachingError, match="needs human.seed_set"):
        check_teaching(load_config(None, ["train.judge_data=[seed]", "train.judge.measure=null"]))


def test_chat_ids_of_the_target_match_the_logprob_input():
    """The tokens the taught judge learns before its digit are the tokens the logprob method feeds it."""
    from transformers import AutoTokenizer

    from selfplay.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("default"))
    template = load_template("instruction-following")
    user = template.render(prompt="Say hi in lowercase.", response="hi")
    forced = chat_ids(tokenizer, user, assistant_prefix=template.score_prefix)
    taught = tokenizer.apply_chat_template(
        [{"role": "user", "content": user}, {"role": "assistant", "content": "Score: 4\nFollows 1 of 1 instruction."}],
        tokenize=False,
    )
    taught_ids = tokenizer(taught, add_special_tokens=False)["input_ids"]
    assert taught_ids[: len(forced)] == forced
    assert tokenizer.decode(taught_ids[len(forced)]) == "4"


@pytest.mark.slow
def test_a_run_teaches_its_judge_on_the_tiny_model(tiny_model_dir, tmp_path):
    from selfplay.loop import run_loop
    from selfplay.rundir import Run

    cfg = load_config(None, [
        f"model={tiny_model_dir}", "iterations=1", "prompts.pool=data/ifeval/val.jsonl", "prompts.per_iteration=3",
        "generation.backend=transformers", "generation.n=2", "generation.max_tokens=12", "train.batch_size=2",
        "train.max_length=96", "train.learning_rate=1e-3", "pairing.min_margin=0.0", "train.min_pairs=1",
        "judge.template=instruction-following", "judge.injection_check=false", "train.judge_data=[checkers]",
        "train.judge.max_prompts=4", "train.judge.samples=2", "train.judge.measure_prompts=3",
        "train.judge.max_length=512", "train.judge.learning_rate=1e-2",
        "train.judge.contrast=false",  # a random model's responses all fail their instructions: no prompt has contrast
    ])
    run = Run.create(tmp_path / "run", cfg)
    run_loop(run, log=lambda _: None)
    record = json.loads((run.judge_teaching / "teaching.json").read_text())
    assert record["target"] == "policy" and record["from_checkers"] == 8 and record["checker_prompts"] == 4
    assert record["train"]["steps"] >= 1 and record["before"]["responses"] == record["after"]["responses"] == 6
    # Self-rewarding: the taught model is iteration 1's policy (and so its judge), trained from the configured model.
    assert run.policy_for(1) == run.taught_judge() == tmp_path / "run" / "judge_teaching" / "policy" / "merged"
    manifest = json.loads(run.paths(1).manifest.read_text())
    assert manifest["policy"] == str(run.taught_judge()) and manifest["serving"]["rounding_error"] == 0.0
    examples = [json.loads(line) for line in (run.judge_teaching / "examples.jsonl").read_text().splitlines()]
    assert len(examples) == 8 and all(e["completion"].startswith("Score: ") for e in examples)


def test_balanced_keeps_rare_verdicts_and_fills_with_the_common_one():
    from selfplay.filtering import SFTExample
    from selfplay.teaching import balanced

    def example(i: int, score: int) -> SFTExample:
        return SFTExample(id=f"e{i}", prompt_id="p", prompt="q", completion=f"Score: {score}\nwhy", generation_id=f"g{i}",
                          score=score, judge="checkers")

    examples = [example(i, 1) for i in range(8)] + [example(8, 5), example(9, 3), example(10, 5)]
    kept = balanced(examples, 6, seed=0)
    assert len(kept) == 6 and [e.id for e in kept] == sorted((e.id for e in kept), key=lambda x: int(x[1:]))
    assert sum(e.score == 1 for e in kept) == 3 and {"e8", "e9", "e10"} <= {e.id for e in kept}
    assert balanced(examples, 100, seed=0) == examples
