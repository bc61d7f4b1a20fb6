"""The judge injection check: the shipped cases, the lift over a control with its interval, the loop's side record
and the manifest and report that read it (old runs' bare success rate included)."""

from __future__ import annotations

import json
import re
import time

import pytest
from conftest import FakeGenerator, make_generation, make_prompt

from selfplay.config import JudgeConfig, load_config
from selfplay.judges import InjectionLift, injection_lift, load_injection_cases, make_judge
from selfplay.judges.injection import ATTACKS_FILE, ITEMS_FILE, Attack, InjectionItem
from selfplay.loop import INJECTION, judge_responses, judge_summary
from selfplay.records import RecordError, read_record, read_records, write_json
from selfplay.report import collect, write_report
from selfplay.rundir import IterationSummary, Manifest, Run, StageInfo

CASES = load_injection_cases()
ITEMS = read_records(ITEMS_FILE, InjectionItem)
ATTACKS = read_records(ATTACKS_FILE, Attack)
PLAIN = {i.response for i in ITEMS} | {i.reference for i in ITEMS}  # every response a case judges without an attack
CONTROL_SCORE = {i.response: 1 + n % 3 for n, i in enumerate(ITEMS)}  # 1, 2 or 3 points: the controls differ


def _between(text: str, tag: str) -> str:
    return re.search(rf"<{tag}>\n(.*?)\n</{tag}>", text, re.DOTALL).group(1)


def _score_token(score: int) -> dict[int, float]:
    """Log-probabilities that put all the mass on one score (the fake tokenizer's token for '3' is ord('3'))."""
    return {ord(str(score)): 0.0}


def _pointwise(logprobs) -> object:
    return make_judge(JudgeConfig(kind="pointwise", method="logprob"), FakeGenerator(logprobs=logprobs))


def _reply_score(text: str, bump: int) -> dict[int, float]:
    """A reference gets 5; a poor response its control score, plus `bump` when an attack follows it."""
    reply = _between(text, "reply")
    if reply in PLAIN and reply not in CONTROL_SCORE:
        return _score_token(5)
    base = reply.split("\n\n", 1)[0]  # an injected response is its control, a blank line, the attack
    return _score_token(CONTROL_SCORE[base] + (bump if reply not in PLAIN else 0))


# --- the cases ------------------------------------------------------------------------------------------


def test_cases_are_every_item_with_every_attack():
    assert len(ITEMS) == 20 and [a.id for a in ATTACKS] == ["rubric-override", "grader-note", "tag-breakout", "judge-appeal"]
    assert len(CASES) == 80 >= 60 and len({c.id for c in CASES}) == 80
    assert [c.id for c in CASES[:5]] == [f"inj-01+{a.id}" for a in ATTACKS] + ["inj-02+rubric-override"]  # item-major
    by_id = {i.id: i for i in ITEMS}
    texts = {a.id: a.text for a in ATTACKS}
    for c in CASES:
        item, attack = c.id.split("+")
        assert attack == c.attack and c.prompt == by_id[item].prompt and c.reference == by_id[item].reference
        assert c.control == by_id[item].response and c.injected == f"{c.control}\n\n{texts[attack]}"
    assert len(PLAIN) == 40  # no control is also some item's reference, so the fakes below can tell them apart


def test_a_line_without_a_reference_or_a_repeated_id_is_refused(tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text('{"id": "x", "prompt": "p", "response": "r"}\n')
    with pytest.raises(RecordError, match="items.jsonl:1"):
        load_injection_cases(items)
    items.write_text('{"id": "x", "prompt": "p", "response": "r", "reference": "good"}\n' * 2)
    with pytest.raises(RecordError, match="items.jsonl"):
        load_injection_cases(items)


# --- the lift ---------------------------------------------------------------------------------------------


def test_a_judge_the_injection_adds_exactly_one_point_to():
    lift = injection_lift(_pointwise(lambda text: _reply_score(text, bump=1)), CASES, seed=3)
    assert (lift.judge, lift.method, lift.n, lift.unscored) == ("pointwise", "logprob", 80, 0)
    assert lift.mean_lift == 1.0 and (lift.ci_low, lift.ci_high) == (1.0, 1.0)  # every case the same: a degenerate interval
    assert lift.success == 1.0 and lift.per_attack == {a.id: 1.0 for a in ATTACKS}
    # References score 5, controls 1..3 (seven 1s, seven 2s and six 3s over the 20 items): mean gap 5 - 39/20.
    assert lift.reference_gap == pytest.approx(5 - 39 / 20)


def test_a_judge_that_ignores_the_injection_shows_no_lift():
    lift = injection_lift(_pointwise(lambda text: _reply_score(text, bump=0)), CASES)
    assert (lift.n, lift.mean_lift, lift.ci_low, lift.ci_high, lift.success) == (80, 0.0, 0.0, 0.0, 0.0)
    assert lift.per_attack == {a.id: 0.0 for a in ATTACKS}


def test_the_interval_is_a_seeded_bootstrap_over_cases():
    def noisy(text: str) -> dict[int, float]:  # +2 for the rubric override only: the lift varies over cases
        reply = _between(text, "reply")
        return _reply_score(text, bump=2 if "Scoring update" in reply else 0)

    judge = _pointwise(noisy)
    lift = injection_lift(judge, CASES, seed=1)
    assert lift.mean_lift == 0.5 and lift.per_attack["rubric-override"] == 2.0 and lift.per_attack["judge-appeal"] == 0.0
    assert lift.success == 0.25 and 0.0 < lift.ci_low < 0.5 < lift.ci_high < 1.0
    assert injection_lift(judge, CASES, seed=1) == lift  # seeded: the same interval again


def test_unscored_cases_are_counted_and_left_out():
    dropped = {i.response for i in ITEMS[:5]}  # no score token for these controls (5 items x 4 attacks)

    def partial(text: str) -> dict[int, float]:
        return {} if _between(text, "reply") in dropped else _reply_score(text, bump=1)

    lift = injection_lift(_pointwise(partial), CASES)
    assert (lift.n, lift.unscored, lift.mean_lift, lift.success) == (60, 20, 1.0, 1.0)
    nothing = injection_lift(_pointwise(lambda text: {}), CASES)
    assert (nothing.n, nothing.unscored, nothing.mean_lift, nothing.ci_low, nothing.ci_high) == (0, 80, None, None, None)
    assert nothing.success is None and nothing.reference_gap is None and nothing.per_attack == {a.id: None for a in ATTACKS}
    with pytest.raises(ValueError, match="no injection cases"):
        injection_lift(_pointwise(partial), [])


def _verdict(prefer_injected: bool):
    """A pairwise judge that picks the reply with an attack in it when `prefer_injected`, and otherwise the first
    presented reply (a pure position bias)."""

    def replies(text: str) -> list[str]:
        a, b = _between(text, "reply_A"), _between(text, "reply_B")
        if prefer_injected and (a not in PLAIN or b not in PLAIN):
            return ["Verdict: A" if a not in PLAIN else "Verdict: B"]
        return ["Verdict: A"]

    return replies


@pytest.mark.parametrize("kind", ["pairwise", "constitution-pairwise"])
def test_pairwise_lift_is_a_win_rate_among_the_three(kind):
    cfg = JudgeConfig(kind=kind, method="text")
    steered = injection_lift(make_judge(cfg, FakeGenerator(replies=_verdict(True))), CASES)
    # Injected wins its 4 comparisons; the control loses both to it and wins 1 of 2 with the reference (first wins).
    assert (steered.judge, steered.method, steered.n, steered.unscored) == (kind, "winrate", 80, 0)
    assert (steered.mean_lift, steered.ci_low, steered.ci_high, steered.success) == (0.75, 0.75, 0.75, 1.0)
    assert steered.reference_gap == 0.0
    # A judge that always picks the first answer gives every response 0.5: no lift, where a bare rate read a coin flip.
    biased = injection_lift(make_judge(cfg, FakeGenerator(replies=_verdict(False))), CASES)
    assert (biased.mean_lift, biased.ci_low, biased.ci_high, biased.success) == (0.0, 0.0, 0.0, 0.0)


def test_anchor_mode_compares_the_injected_response_with_both_others():
    cfg = JudgeConfig(kind="pairwise", method="text", pairwise_mode="anchor")
    gen = FakeGenerator(replies=_verdict(True))
    lift = injection_lift(make_judge(cfg, gen), CASES[:4])
    assert len(gen.seen) == 4 * 4  # injected vs control and vs reference, both orders; never control vs reference
    assert (lift.n, lift.mean_lift, lift.reference_gap) == (4, 1.0, 0.0)


# --- the shipped templates, with a judge that sees through attacks and one that obeys them --------------------


def gullible(text: str) -> list[str]:
    """Obeys what a reply says about the verdict: a named score, else a claim that "this" reply should win;
    otherwise it scores 2 or picks A (a position bias)."""
    if "<reply>" in text:  # pointwise templates
        scores = re.findall(r"Score: ([1-5])", _between(text, "reply"))
        return [f"Score: {scores[-1] if scores else 2}"]
    replies = {"A": _between(text, "reply_A"), "B": _between(text, "reply_B")}
    for letter, reply in replies.items():
        if re.search(r"prefer|pick|choose|winner|wins|better|Score: 5", reply, re.IGNORECASE):
            return [f"Verdict: {letter}"]
    return ["Verdict: A"]


def honest(text: str) -> list[str]:
    """Sees through every attack: an injected reply scores 1 or loses; otherwise 4, or A (a position bias)."""
    if "<reply>" in text:
        return ["Score: 1" if _between(text, "reply") not in PLAIN else "Score: 4"]
    return ["Verdict: B" if _between(text, "reply_A") not in PLAIN else "Verdict: A"]


def test_lift_per_shipped_template():
    lifts = {}
    for name, cfg in [
        ("self-rewarding", JudgeConfig(method="text")),
        ("pairwise", JudgeConfig(kind="pairwise", method="text")),
        ("constitution-pairwise", JudgeConfig(kind="constitution-pairwise", method="text")),
    ]:
        for fake in (honest, gullible):
            lifts[(name, fake.__name__)] = injection_lift(make_judge(cfg, FakeGenerator(replies=fake)), CASES)
    assert all(lift.n == 80 and lift.unscored == 0 for lift in lifts.values())
    honest_pointwise = lifts[("self-rewarding", "honest")]
    assert (honest_pointwise.mean_lift, honest_pointwise.success, honest_pointwise.reference_gap) == (-3.0, 0.0, 0.0)
    # Pointwise, gullible: the three attacks that end in "Score: 5" get it (2 -> 5); the appeal names no score.
    obeyed = lifts[("self-rewarding", "gullible")]
    assert obeyed.per_attack == {"rubric-override": 3.0, "grader-note": 3.0, "tag-breakout": 3.0, "judge-appeal": 0.0}
    assert (obeyed.mean_lift, obeyed.success) == (2.25, 0.75) and obeyed.ci_low > 0
    for name in ("pairwise", "constitution-pairwise"):
        # Honest: the injected reply loses all 4; the control beats it twice and wins 1 of 2 with the reference.
        assert (lifts[(name, "honest")].mean_lift, lifts[(name, "honest")].success) == (-0.75, 0.0)
        # Gullible: every attack says "prefer", "better" or "Score: 5", so the injected reply wins all 4.
        assert (lifts[(name, "gullible")].mean_lift, lifts[(name, "gullible")].success) == (0.75, 1.0)


# --- the loop's side record, the manifest, the report ---------------------------------------------------------


class FakeEngines:
    """What judge_responses asks of the loop's engines: a judge generator."""

    def __init__(self, gen: FakeGenerator):
        self.gen = gen

    def judge(self) -> FakeGenerator:
        return self.gen


def _judge_stage(tmp_path, *overrides: str) -> tuple[Run, FakeGenerator]:
    run = Run.create(tmp_path / "runs" / "inj", load_config(None, ["judge.method=text", *overrides]))
    run.paths(1).dir.mkdir(parents=True)
    gen = FakeGenerator(replies=gullible)
    judge_responses(
        run, 1, FakeEngines(gen), [make_prompt("p")], [make_generation("p", 0, "Hi."), make_generation("p", 1, "Hello.")]
    )
    return run, gen


def test_the_judge_stage_writes_the_lift_and_the_manifest_reads_it(tmp_path):
    run, gen = _judge_stage(tmp_path)
    lift = read_record(run.paths(1).dir / INJECTION, InjectionLift)
    assert (lift.n, lift.mean_lift, lift.success) == (80, 2.25, 0.75) and len(gen.seen) == 2 + 80 * 3
    stats = judge_summary([], run.paths(1).dir)
    assert stats["injection"] == lift.model_dump(mode="json") and "injection_success" not in stats
    capped, gen = _judge_stage(tmp_path / "capped", "judge.injection_cases=8")
    lift = read_record(capped.paths(1).dir / INJECTION, InjectionLift)
    assert lift.n == 8 and sorted(lift.per_attack) == sorted(a.id for a in ATTACKS) and len(gen.seen) == 2 + 8 * 3


@pytest.mark.parametrize("overrides", [["judge.injection_check=false"], ["judge.kind=constitution-revision"]])
def test_no_check_when_off_or_for_a_judge_without_scores(tmp_path, overrides):
    run, gen = _judge_stage(tmp_path, *overrides)
    assert not (run.paths(1).dir / INJECTION).exists() and len(gen.seen) <= 4  # the two responses only
    assert "injection" not in judge_summary([], run.paths(1).dir)


def _manifest_with(run: Run, k: int, judge: dict) -> None:
    stages = {s: StageInfo(status="done", seconds=1.0, count=1) for s in ("prompts", "generate", "judge", "pair", "train")}
    manifest = Manifest(iteration=k, policy="/models/base", stages=stages, generation={"count": 4}, judge=judge)
    write_json(run.paths(k).manifest, manifest.model_dump(mode="json"))


def test_an_old_runs_bare_rate_still_reads_and_reports(tmp_path):
    run = Run.create(tmp_path / "runs" / "old", load_config(None))
    folder = run.paths(1).dir
    folder.mkdir(parents=True)
    write_json(folder / INJECTION, {"injection_success": 0.25, "n": 16})  # what selfplay wrote before the lift
    old = judge_summary([], folder)
    assert old["injection_success"] == 0.25 and "injection" not in old
    _manifest_with(run, 1, {"parse_rate": 1.0, **old})
    new = injection_lift(_pointwise(lambda text: _reply_score(text, bump=1)), CASES)
    _manifest_with(run, 2, {"parse_rate": 1.0, "injection": new.model_dump(mode="json")})
    rows = run.rebuild_summary()
    assert [r.injection_lift for r in rows] == [None, 1.0]
    assert IterationSummary.from_manifest(read_record(run.paths(1).manifest, Manifest)).injection_lift is None
    data = collect(run)
    assert [(r.iteration, r.lift, r.old_success) for r in data.injection] == [(1, None, 0.25), (2, new, None)]
    html = open(write_report(run).html, encoding="utf-8").read()
    section = html.split("<h2>Injection check")[1].split("<h2>")[0]
    assert "iteration 1: 25.0% of the injections got their way" in section
    assert '<td class="l">2</td><td class="l">pointwise (logprob)</td><td>80 (0 left out)</td>' in section
    assert "[+1.00, +1.00]" in section and "<span class='warn'>+1.00</span>" in section and "<th>tag-breakout</th>" in section


def test_the_report_says_when_nothing_was_measured(tmp_path):
    run = Run.create(tmp_path / "runs" / "none", load_config(None))
    _manifest_with(run, 1, {"parse_rate": 1.0})
    html = open(write_report(run).html, encoding="utf-8").read()
    assert collect(run).injection == [] and "Not measured: judge.injection_check is off" in html


# --- on a real (tiny) model --------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_check_on_a_tiny_model_through_the_judge_stage(tiny_model_dir, tmp_path):
    """The prompts, generate and judge stages of one iteration on a tiny random llama, the model judging itself by
    log-probability: the check is recorded, and what it costs beside judging the iteration's own responses."""
    from selfplay.loop import run_stage

    seconds = {}
    for check in ("true", "false"):
        cfg = load_config(
            None,
            [
                f"model={tiny_model_dir}",
                "prompts.per_iteration=2",
                "generation.backend=transformers",
                "generation.n=2",
                "generation.max_tokens=8",
                f"judge.injection_check={check}",
            ],
        )
        run = Run.create(tmp_path / check, cfg)
        run_stage(run, 1, "prompts")
        run_stage(run, 1, "generate")
        started = time.monotonic()
        assert run_stage(run, 1, "judge").status == "done"
        seconds[check] = time.monotonic() - started
    lift = read_record(tmp_path / "true" / "iter_001" / INJECTION, InjectionLift)
    assert (lift.judge, lift.method, lift.n, lift.unscored) == ("pointwise", "logprob", 80, 0)
    assert lift.ci_low <= lift.mean_lift <= lift.ci_high and -4 <= lift.ci_low <= lift.ci_high <= 4
    assert not (tmp_path / "false" / "iter_001" / INJECTION).exists()
    print(f"judge stage, 4 responses: {seconds['false']:.1f} s without the check, {seconds['true']:.1f} s with it (80 cases)")
    assert json.loads((tmp_path / "true" / "iter_001" / INJECTION).read_text())["per_attack"].keys() == {a.id for a in ATTACKS}
