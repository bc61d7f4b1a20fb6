"""Best-of-N: the pick as a literal table, scorers from specs, a failing scorer counted, and the CLI."""

import json
import math

import pytest
from typer.testing import CliRunner

from selfplay.bestofn import BestOfN, best_of_n, make_scorer, pick_best, picks
from selfplay.cli import app
from selfplay.config import ConfigError
from selfplay.records import read_records

from conftest import FakeGenerator, make_generation, make_prompt

# prompt id -> candidate scores (None = the scorer failed); expected pick
TABLE = [
    ("a", [0.2, 0.9, 0.5], "a/g1"),
    ("b", [None, 0.1, None], "b/g1"),  # the only scored one wins
    ("c", [None, None], None),  # nothing scored: no pick, counted
    ("d", [0.7, 0.7, 0.3], "d/g0"),  # equal best: the lower id
    ("e", [math.nan, 0.4, math.inf], "e/g1"),  # non-finite scores are failures, never picks
]


def test_pick_best_table():
    prompts = [make_prompt(pid, f"prompt {pid}") for pid, _, _ in TABLE]
    gens = [make_generation(pid, j, f"{pid} says {j}") for pid, scores, _ in TABLE for j in range(len(scores))]
    scores = [s for _, ss, _ in TABLE for s in ss]
    records, stats = pick_best(prompts, gens, scores, "test")
    assert [r.pick for r in records] == [want for *_, want in TABLE]
    a = records[0]
    assert [(c.id, c.score) for c in a.candidates] == [("a/g0", 0.2), ("a/g1", 0.9), ("a/g2", 0.5)]
    assert (a.pick_text, a.pick_score, a.id, a.scorer) == ("a says 1", 0.9, "a/best", "test")
    assert [c.score for c in records[4].candidates] == [None, 0.4, None]
    assert (stats.prompts, stats.candidates, stats.unscored, stats.no_pick) == (5, 14, 6, 1)
    assert stats.mean_pick_score == pytest.approx((0.9 + 0.1 + 0.7 + 0.4) / 4)
    assert stats.mean_first_score == pytest.approx((0.2 + 0.7) / 2)
    assert [g.id for g in picks(records, gens)] == ["a/g1", "b/g1", "d/g0", "e/g1"]
    with pytest.raises(ValueError, match="2 scores for 14 responses"):
        pick_best(prompts, gens, [1.0, 2.0], "test")


def test_best_of_n_with_a_program_scorer_that_fails_on_some(tmp_path):
    program = tmp_path / "picky.py"
    program.write_text(
        "def score(prompt, response):\n"
        "    if response.startswith('answer 1'):\n"
        "        raise RuntimeError('cannot judge this one')\n"
        "    return float(len(response))\n")
    prompts = [make_prompt("p1", "Say hi."), make_prompt("p2", "Name a colour.")]
    records, stats = best_of_n(FakeGenerator(), prompts, 3, make_scorer(f"program:{program}:score"), "picky")
    assert stats.unscored == 2 and stats.no_pick == 0  # "answer 1 ..." of each prompt failed: excluded, counted
    assert [[c.score is None for c in r.candidates] for r in records] == [[False, True, False]] * 2
    assert [r.pick for r in records] == ["p1/g0", "p2/g0"]  # equal lengths: the lower id


def test_length_bounds_program_with_args():
    score = make_scorer("program:selfplay.program_judges:length_bounds", program_args={"min_words": 2, "max_words": 4})
    gens = [make_generation("p", 0, "one"), make_generation("p", 1, "one two three"), make_generation("p", 2, "a b c d e f g h")]
    assert score([make_prompt("p")], gens) == [0.5, 1.0, 0.5]


def test_pointwise_scorer_reads_through_the_sampling_model():
    # the model judges itself: P("4") = 1 after the forced "Score: " for every response
    gen = FakeGenerator(logprobs=lambda text: {ord("4"): 0.0})
    score = make_scorer("pointwise", gen)
    prompts = [make_prompt("p")]
    assert score(prompts, gen.generate(prompts, n=2)) == [4.0, 4.0]
    assert all("Score: " in seen for seen in gen.seen)


@pytest.mark.parametrize("spec, match", [
    ("telepathy", "unknown scorer"),
    ("program", "program:MODULE:FUNCTION"),
    ("program:selfplay.program_judges:nope", "has no function nope"),
    ("rm", "rm:PATH"),
    ("human", "human:LABELS"),
])
def test_bad_scorer_specs(spec, match):
    with pytest.raises(ConfigError, match=match):
        make_scorer(spec)


def test_rm_scorer_needs_a_reward_model(tmp_path):
    from selfplay.train.reward import RewardModelError

    with pytest.raises(RewardModelError, match="not a reward model directory"):
        make_scorer(f"rm:{tmp_path}")


@pytest.fixture
def cli():
    return app  # the selfplay app itself: best-of-n is addressed by name


def test_cli_bad_scorer_is_one_line_before_any_engine(cli, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "x", "prompt": "Hi"}) + "\n")
    result = CliRunner().invoke(cli, ["best-of-n", str(prompts), "--scorer", "program:nowhere_module:f", "--model", str(tmp_path / "none")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [result.output.strip()] and "cannot import nowhere_module" in result.output


@pytest.mark.slow
def test_cli_end_to_end_on_the_tiny_model(cli, tiny_model_dir, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": t}) + "\n" for i, t in enumerate(["Say hi.", "Name a fruit."])))
    out = tmp_path / "best.jsonl"
    result = CliRunner().invoke(cli, ["best-of-n", str(prompts), "--model", str(tiny_model_dir), "--scorer",
                                      "program:selfplay.program_judges:length_bounds", "--scorer-args", '{"min_words": 3}',
                                      "--n", "3", "--backend", "transformers", "--max-tokens", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = read_records(out, BestOfN)
    assert [r.prompt_id for r in records] == ["q0", "q1"]
    for r in records:
        assert len(r.candidates) == 3 and all(c.score is not None for c in r.candidates)
        assert r.pick_score == max(c.score for c in r.candidates)
    stats_line = next(line for line in result.output.splitlines() if '{"prompts"' in line)  # after any progress bar
    assert json.loads(stats_line[stats_line.index("{"):])["prompts"] == 2
