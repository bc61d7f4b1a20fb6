"""Each monitor on literal records, with hand-computed values and thresholds."""

import math

import pytest

from selfplay.config import MonitorConfig
from selfplay.monitors import first_presented_won, monitor_iteration
from selfplay.records import Judgement, Pair, Prompt

from conftest import make_generation


def pointwise(gid: str, score: float | None) -> Judgement:
    return Judgement(id=f"{gid}/j", prompt_id=gid.split("/")[0], generation_ids=[gid], judge="pointwise", method="text",
                     raw=["..."], sample_scores=[score], score=score, status="ok" if score is not None else "unparseable")


def pairwise(pid: str, first: str, second: str, score: float | None) -> Judgement:
    return Judgement(id=f"{first}|{second}", prompt_id=pid, generation_ids=[first, second], judge="pairwise",
                     method="text", raw=["Verdict: A"], sample_scores=[score], score=score,
                     status="ok" if score is not None else "unparseable")


def pair(pid: str, chosen: str, rejected: str, margin: float) -> Pair:
    return Pair(id=f"{pid}/p", prompt_id=pid, prompt="?", chosen="c", rejected="r", chosen_id=chosen, rejected_id=rejected,
                chosen_score=1 + margin, rejected_score=1.0, margin=margin, judge="pointwise")


PROMPTS = [Prompt(id="a", text="A?"), Prompt(id="b", text="B?")]
# tokens: a/g0 10, a/g1 20, b/g0 30, b/g1 40
GENS = [make_generation("a", 0, "x", 10), make_generation("a", 1, "x", 20),
        make_generation("b", 0, "x", 30), make_generation("b", 1, "x", 40)]
LOOSE = MonitorConfig(min_samples=1)


def test_length_correlation_and_parse_failure():
    judgements = [pointwise("a/g0", 1.0), pointwise("a/g1", 2.0), pointwise("b/g0", 3.0), pointwise("b/g1", None)]
    r = monitor_iteration(PROMPTS, GENS, judgements, [], LOOSE)
    assert r.length_corr == pytest.approx(1.0) and r.n_scored == 3  # scores 1,2,3 against 10,20,30 tokens
    assert r.parse_failure == pytest.approx(0.25) and r.n_judgements == 4
    assert r.position_bias is None and r.n_pairwise == 0  # no pairwise judgements: not 0, unknown
    assert [w.split(":")[0] for w in r.warnings] == ["length_corr"]
    assert "+1.00" in r.warnings[0] and "\n" not in r.warnings[0]

    # scores 4, 1, 3, 2 against 10, 20, 30, 40: dx = 1.5, -1.5, .5, -.5; dy = -15, -5, 5, 15 -> sxy = -22.5 + 7.5 + 2.5 - 7.5 = -20, r = -20/sqrt(5*500) = -0.4
    r = monitor_iteration(PROMPTS, GENS, [pointwise("a/g0", 4.0), pointwise("a/g1", 1.0), pointwise("b/g0", 3.0),
                                          pointwise("b/g1", 2.0)], [], LOOSE)
    assert r.length_corr == pytest.approx(-20 / math.sqrt(5 * 500)) == pytest.approx(-0.4)
    assert r.warnings == []  # |r| = 0.4 is not above 0.5


def test_parse_failure_threshold():
    judgements = [pointwise("a/g0", None), pointwise("a/g1", None), pointwise("b/g0", 3.0), pointwise("b/g1", None)]
    r = monitor_iteration(PROMPTS, GENS, judgements, [], LOOSE)
    assert r.parse_failure == 0.75
    assert any(w.startswith("parse_failure: 75% of 4 judgements") for w in r.warnings)


def test_length_gap_and_margin_trend():
    pairs = [pair("a", "a/g1", "a/g0", 2.0), pair("b", "b/g1", "b/g0", 1.0)]  # chosen longer by 10 and 10
    r = monitor_iteration(PROMPTS, GENS, [], pairs, LOOSE)
    assert r.length_gap_tokens == 10.0 and r.n_pairs == 2
    assert r.mean_margin == 1.5 and r.margin_change is None
    assert r.warnings == []  # 10 < 40
    tight = MonitorConfig(min_samples=1, max_length_gap_tokens=5, max_margin_drop=0.5, stop_on=["length_gap"])
    r2 = monitor_iteration(PROMPTS, GENS, [], [pair("a", "a/g0", "a/g1", 0.5)], tight, previous=r)
    assert r2.length_gap_tokens == -10.0  # chosen shorter: a gap either way is a length preference
    assert r2.margin_change == pytest.approx(-1.0)
    assert [w.split(":")[0] for w in r2.warnings] == ["length_gap", "margin_drop"]
    assert r2.stop == ["length_gap"] and r2.should_stop


def test_position_bias():
    # presented orders: first won 3 times, second once, one tie (excluded), one unparseable (excluded)
    judgements = [pairwise("a", "a/g0", "a/g1", 1.0), pairwise("a", "a/g1", "a/g0", 1.0), pairwise("b", "b/g0", "b/g1", 1.0),
                  pairwise("b", "b/g1", "b/g0", 0.0), pairwise("a", "a/g0", "a/g1x", 0.5), pairwise("b", "b/g0", "b/g1y", None)]
    assert [first_presented_won(j) for j in judgements] == [True, True, True, False, None, None]
    r = monitor_iteration(PROMPTS, GENS, judgements, [], LOOSE)
    assert r.position_bias == 0.75 and r.n_pairwise == 4
    assert r.parse_failure == pytest.approx(1 / 6)
    assert r.length_corr is None  # pairwise judgements carry no per-response score
    assert r.warnings == []  # 75% <= 80%
    r = monitor_iteration(PROMPTS, GENS, judgements[:3], [], LOOSE)
    assert r.position_bias == 1.0 and r.warnings[0].startswith("position_bias: the first-presented answer won 100% of 3")
    r = monitor_iteration(PROMPTS, GENS, [judgements[3]] * 1, [], LOOSE)
    assert "second-presented" in r.warnings[0]


def test_what_counts_as_a_verdict():
    # A human pair label has no presentation order; a derived win rate is no verdict; an "error" (empty
    # response, never judged) is not a parse failure.
    human = Judgement(id="a/g0|a/g1", prompt_id="a", generation_ids=["a/g0", "a/g1"], judge="human", method="human",
                      raw=["label"], sample_scores=[1.0], score=1.0, status="ok")
    winrate = Judgement(id="a/g0/j", prompt_id="a", generation_ids=["a/g0"], judge="pairwise", method="winrate",
                        raw=["a/g0|a/g1"], sample_scores=[None], score=None, status="unparseable")
    error = Judgement(id="a/g1/j", prompt_id="a", generation_ids=["a/g1"], judge="pointwise", method="text",
                      raw=["empty response: not judged"], sample_scores=[None], score=None, status="error")
    r = monitor_iteration(PROMPTS, GENS, [human, winrate, error, pairwise("a", "a/g1", "a/g0", None)], [], LOOSE)
    assert first_presented_won(human) is None and r.position_bias is None and r.n_pairwise == 0
    assert (r.parse_failure, r.n_judgements) == (0.5, 2)  # the human label (ok) and the unparsed comparison
    # logprob comparisons give P(first wins): 0.7 is a first-position win, 0.3 a second-position one
    r = monitor_iteration(PROMPTS, GENS, [pairwise("a", "a/g0", "a/g1", 0.7), pairwise("a", "a/g1", "a/g0", 0.3)], [], LOOSE)
    assert (r.position_bias, r.n_pairwise) == (0.5, 2)


def test_min_samples_and_kl():
    judgements = [pointwise("a/g0", None), pointwise("a/g1", None)]
    r = monitor_iteration(PROMPTS, GENS, judgements, [], MonitorConfig())  # default min_samples=8 > 2 judgements
    assert r.parse_failure == 1.0 and r.warnings == []
    r = monitor_iteration(PROMPTS, GENS, [], [], MonitorConfig(max_kl=0.1, stop_on=["kl"]), kl=0.25)
    assert r.kl == 0.25 and r.stop == ["kl"] and r.warnings[0].startswith("kl: KL to the reference policy is 0.250")
    r = monitor_iteration(PROMPTS, GENS, [], [], MonitorConfig(max_kl=0.1), kl=None)
    assert r.warnings == [] and r.mean_margin is None


def test_stop_on_is_validated():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        MonitorConfig(stop_on=["length"])


def test_monitors_of_records_on_disk(tmp_path):
    """As the loop monitors each iteration from its files, the previous iteration's report giving the trend."""
    from selfplay.config import load_config
    from selfplay.rundir import Run
    from selfplay.records import Generation, read_records, write_records

    run = Run.create(tmp_path / "r", load_config(None))
    reports = []
    for k, margin in ((1, 2.0), (2, 0.5)):
        p = run.paths(k)
        write_records(p.prompts, PROMPTS)
        write_records(p.generations, GENS)
        write_records(p.judgements, [pointwise("a/g0", 1.0), pointwise("a/g1", 2.0)])
        write_records(p.pairs, [pair("a", "a/g1", "a/g0", margin)])
        reports.append(monitor_iteration(read_records(p.prompts, Prompt), read_records(p.generations, Generation),
                                         read_records(p.judgements, Judgement), read_records(p.pairs, Pair), run.cfg.monitors,
                                         iteration=k, previous=reports[-1] if reports else None))
    assert [r.iteration for r in reports] == [1, 2]
    assert reports[1].margin_change == pytest.approx(-1.5)
    assert reports[0].length_gap_tokens == 10.0
