"""Evaluation: IFEval per iteration with the echo baseline, head-to-head in both orders, held-out checks,
judge agreement. Fast tests use scripted fakes; the slow one runs a tiny random model end to end."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest

import selfplay.evaluate as ev
from selfplay.config import EvalConfig, load_config
from selfplay.evaluate import (
    EvalError, H2HRow, IFEvalRow, agreement_eval, check_held_out, h2h_eval, h2h_judge, h2h_plan, ifeval_eval,
    load_pairwise_template, read_agreement, read_ifeval_summary, run_eval,
)
from selfplay.bestofn import BestOfN
from selfplay.rundir import Run
from selfplay.records import Generation, Prompt, TrainResult, read_records, write_json, write_records

from conftest import FakeGenerator

IFEVAL_LINES = [
    # echo passes (the prompt is lowercase)
    {"key": 1, "prompt": "write about cats. answer in lowercase only.", "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]},
    # echo fails (the prompt has a comma)
    {"key": 2, "prompt": "Say hello, without commas.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
    # echo fails (the prompt does not end with the phrase)
    {"key": 3, "prompt": "End with the phrase 'Bye now.' and describe rain.", "instruction_id_list": ["startend:end_checker"],
     "kwargs": [{"end_phrase": "Bye now."}]},
]
# policy name -> prompt key -> response
SCRIPT = {
    "iter0": {"1": "Cats are small animals that live with people and like to sleep in the sun.", "2": "hello there", "3": "Rain is wet."},  # passes 2 only
    "iter1": {"1": "cats are small animals that live with people and like to sleep in the sun.", "2": "hello there", "3": "Rain is wet. Bye now."},  # passes all
}
TEMPLATE = """name: test-pairwise
version: 1
kind: pairwise
variables: [prompt, response_a, response_b]
output_format: "Winner: A or B"
parse: 'Winner:\\s*([AB])'
template: |
  Q: {prompt}
  <a>{response_a}</a>
  <b>{response_b}</b>
  Answer "Winner: A" or "Winner: B".
"""


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class ScriptedPolicy:
    """Greedy 'generation' from a script keyed by the policy directory's name and the prompt."""

    calls: list[tuple[str, int]] = []

    def __init__(self, model_dir: Path, cfg, seed: int, script):
        self.model_dir, self.cfg, self.seed, self.script = str(model_dir), cfg, seed, script

    def generate(self, prompts, n):
        ScriptedPolicy.calls.append((Path(self.model_dir).name, len(prompts)))
        out = []
        for p in prompts:
            text = self.script[Path(self.model_dir).name][p.id.removeprefix("ifeval-")]
            out.append(Generation(id=f"{p.id}/g0", prompt_id=p.id, text=text, n_prompt_tokens=3, n_tokens=len(text.split()),
                                  finish_reason="stop", temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                                  max_tokens=self.cfg.max_tokens, seed=self.seed, policy=self.model_dir, backend="transformers"))
        return out


@pytest.fixture
def scripted(monkeypatch):
    """Iteration k's policy is /fake/iter<k>; generation follows SCRIPT (tests may add entries)."""
    script = {k: dict(v) for k, v in SCRIPT.items()}
    ScriptedPolicy.calls = []

    @contextmanager
    def fake_open(cfg, model_dir, seed):
        assert cfg.temperature == 0.0  # evaluation is greedy
        yield ScriptedPolicy(model_dir, cfg, seed, script)

    monkeypatch.setattr(ev, "open_generator", fake_open)  # the name evaluate opens engines through
    monkeypatch.setattr(ev, "policy_dir", lambda run, k: Path(f"/fake/iter{k}"))
    return script


def make_run(tmp_path, overrides=()) -> Run:
    return Run.create(tmp_path / "runs" / "ev", load_config(None, list(overrides)))


def test_ifeval_eval_per_iteration_with_echo_baseline(tmp_path, scripted):
    run = make_run(tmp_path)
    path = write_jsonl(tmp_path / "ifeval.jsonl", IFEVAL_LINES)
    s = ifeval_eval(run, [0, 1], path, run.cfg.eval)
    assert s.echo.prompt_level_strict == pytest.approx(1 / 3)
    [base, one] = s.iterations
    assert (base.iteration, base.prompt_level_strict, base.instruction_level_strict) == (0, pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert (one.iteration, one.prompt_level_strict, one.prompt_level_loose) == (1, 1.0, 1.0)
    assert base.vs_base is None
    assert one.vs_base.mean_diff == pytest.approx(2 / 3)  # per prompt: 1-0, 1-1, 1-0
    assert one.prompt_strict_ci[0] < 1.0 and one.prompt_strict_ci[1] == 1.0  # Wilson 3 of 3
    assert one.policy == "/fake/iter1" and one.cut_at_max == 0.0

    rows = read_records(run.root / "eval" / "ifeval_iter_001.jsonl", IFEvalRow)
    assert [(r.key, r.response, r.strict) for r in rows] == [(k, SCRIPT["iter1"][str(k)], [True]) for k in (1, 2, 3)]
    saved = json.loads((run.root / "eval" / "ifeval_summary.json").read_text())
    assert [it["iteration"] for it in saved["iterations"]] == [0, 1] and saved["echo"]["n_prompts"] == 3

    # Cached: a second evaluation generates nothing, and evaluating iteration 1 alone keeps iteration 0's row.
    ScriptedPolicy.calls = []
    s2 = ifeval_eval(run, [1], path, run.cfg.eval)
    assert ScriptedPolicy.calls == [] and [it.iteration for it in s2.iterations] == [0, 1]
    assert s2.iterations[1].vs_base.mean_diff == pytest.approx(2 / 3)
    # A different max_tokens makes the cache stale: regenerated.
    ifeval_eval(run, [1], path, run.cfg.eval.model_copy(update={"max_tokens": 7}))
    assert ScriptedPolicy.calls == [("iter1", 3)]


def test_ifeval_bad_file_is_one_line(tmp_path, scripted):
    run = make_run(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": 1, "prompt": "x", "instruction_id_list": ["nope:nope"], "kwargs": [{}]}\n')
    with pytest.raises(EvalError, match="bad.jsonl:1"):
        ifeval_eval(run, [0], bad, run.cfg.eval)


# The independent set: the same keys as IFEVAL_LINES, other prompts and instructions (SCRIPT answers by key).
INDEPENDENT_LINES = [
    {"key": 1, "prompt": "Name a pet, and mind: no commas.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
    {"key": 2, "prompt": "Greet me in small letters.", "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]},
    {"key": 3, "prompt": "Describe rain in two words.", "instruction_id_list": ["length_constraints:number_words"],
     "kwargs": [{"num_words": 3, "relation": "less than"}]},
]


def test_independent_set_keeps_its_own_files_beside_the_main_one(tmp_path, scripted):
    run = make_run(tmp_path)
    write_json(run.paths(1).train, TrainResult(algo="dpo", policy="/fake/iter1").model_dump())
    main_file = write_jsonl(tmp_path / "ifeval.jsonl", IFEVAL_LINES)
    other = write_jsonl(tmp_path / "independent.jsonl", INDEPENDENT_LINES)
    result = run_eval(run, ifeval_file=str(main_file), independent_file=str(other))
    assert [it.prompt_level_strict for it in result.ifeval.iterations] == [pytest.approx(1 / 3), 1.0]
    # iteration 0 and 1 both pass keys 1 and 2 and fail 3 ("Rain is wet." is 3 words): no change, no mixing of sets
    ind = result.ifeval_independent
    assert [it.prompt_level_strict for it in ind.iterations] == [pytest.approx(2 / 3), pytest.approx(2 / 3)]
    assert ind.iterations[1].vs_base.mean_diff == 0.0 and ind.echo.prompt_level_strict == 0.0  # the echo fails all three
    assert (ind.file, ind.file_hash) != (result.ifeval.file, result.ifeval.file_hash)
    folder = run.root / "eval"
    for k in (0, 1):
        main_ids = [g.prompt_id for g in read_records(folder / f"responses_iter_{k:03d}.jsonl", Generation)]
        assert main_ids == [g.prompt_id for g in read_records(folder / f"responses_independent_iter_{k:03d}.jsonl", Generation)]
    # The same ids with other texts: each set registers its own prompts (one registry would refuse the second set).
    assert read_records(folder / "prompts.jsonl", Prompt)[0].text == IFEVAL_LINES[0]["prompt"]
    assert read_records(folder / "prompts_independent.jsonl", Prompt)[0].text == INDEPENDENT_LINES[0]["prompt"]
    rows = read_records(folder / "ifeval_independent_iter_001.jsonl", IFEvalRow)
    assert [r.strict for r in rows] == [[True], [True], [False]]
    assert read_ifeval_summary(run).file == str(main_file) and read_ifeval_summary(run, "independent").file == str(other)
    # Each set's cache serves it: evaluating again generates nothing, and the main summary is still the main set's.
    ScriptedPolicy.calls = []
    again = run_eval(run, ifeval_file=str(main_file), independent_file=str(other))
    assert ScriptedPolicy.calls == [] and again == result


def test_training_prompts_are_refused(tmp_path, scripted):
    run = make_run(tmp_path)
    write_records(run.paths(1).prompts, [Prompt(id="pool-0001", text="Explain the tides.")])
    check_held_out(run, [Prompt(id="h1", text="Something else.")], "held.jsonl")
    with pytest.raises(EvalError, match=r"held.jsonl: 1 of 2 prompts are training prompts of run ev \(e.g. pool-0001\)"):
        check_held_out(run, [Prompt(id="pool-0001", text="Other text"), Prompt(id="h1", text="Fine.")], "held.jsonl")
    with pytest.raises(EvalError, match="e.g. h2"):  # same text under another id is the same prompt
        check_held_out(run, [Prompt(id="h2", text="Explain  the tides.")], "held.jsonl")


class PrefersGood:
    """Prefers the response containing 'good'; with no such difference it picks the first (position bias)."""

    def __init__(self):
        self.calls = 0

    def compare(self, prompt, first, second):
        self.calls += 1
        a, b = "good" in first, "good" in second
        return "second" if b and not a else "first"


def test_h2h_both_orders(tmp_path, scripted):
    run = make_run(tmp_path)
    scripted["iter1"].update({"p1": "good answer", "p2": "bad answer", "p3": "bad one", "p4": "same"})
    scripted["iter0"].update({"p1": "bad answer", "p2": "good answer", "p3": "bad two", "p4": "same"})
    prompts = [Prompt(id=f"p{i}", text=f"Question {i}?") for i in range(1, 5)]
    judge = PrefersGood()
    r = h2h_eval(run, 1, 0, prompts, judge, prompts_file="held.jsonl")
    assert judge.calls == 6  # 3 differing prompts x 2 orders; identical responses are not judged
    assert (r.n, r.wins, r.losses, r.ties, r.identical) == (4, 1, 1, 2, 1)
    assert r.win_rate == pytest.approx(0.5) and r.tie_rate == pytest.approx(0.5)
    assert r.ci_low <= 0.5 <= r.ci_high
    assert r.consistent == pytest.approx(2 / 3)  # p3: both orders chose the first-presented
    assert r.first_position_rate == pytest.approx(4 / 6) and r.unparseable == 0
    rows = read_records(run.root / "eval" / "h2h_iter_001_vs_000.jsonl", H2HRow, unique_ids=False)
    assert [(x.prompt_id, x.k_first, x.k_second, x.outcome, x.reason) for x in rows] == [
        ("p1", "first", "second", "win", "agree"), ("p2", "second", "first", "loss", "agree"),
        ("p3", "first", "first", "tie", "inconsistent"), ("p4", None, None, "tie", "identical")]
    summary = json.loads((run.root / "eval" / "h2h_summary.json").read_text())
    assert summary["1_vs_0"]["wins"] == 1 and summary["1_vs_0"]["judge"] == "PrefersGood"


def test_h2h_unparseable_is_a_tie(tmp_path, scripted):
    run = make_run(tmp_path)
    scripted["iter1"]["q"] = "x"
    scripted["iter0"]["q"] = "y"

    class Mute:
        def compare(self, prompt, first, second):
            return None

    r = h2h_eval(run, 1, 0, [Prompt(id="q", text="Q?")], Mute())
    assert (r.ties, r.unparseable, r.win_rate, r.first_position_rate) == (1, 2, 0.5, None)


def test_h2h_judge_reads_both_orders(tmp_path):
    """The head-to-head judge is the loop's pairwise judge (make_judge), comparing given texts."""
    path = tmp_path / "pairwise.yaml"
    path.write_text(TEMPLATE)
    gen = FakeGenerator(replies=lambda text: ["The second is better. Winner: B"] if "<a>short</a>" in text else ["Winner: A"])
    judge = h2h_judge(gen, EvalConfig(judge_template=str(path), judge_method="text", judge_max_tokens=16))
    assert judge.compare("Q", "short", "long") == "second"
    assert judge.compare("Q", "long", "short") == "first"
    assert judge.compare_many([("Q", "short", "x")]) == [("second", "The second is better. Winner: B")]
    mute = h2h_judge(FakeGenerator(replies=lambda text: ["I cannot decide."]),
                     EvalConfig(judge_template=str(path), judge_method="text"))
    assert mute.compare("Q", "a", "b") is None
    assert "Q: Q" in gen.seen[0] and "<b>long</b>" in gen.seen[0]
    assert judge.name == "test-pairwise@1 on fake"  # recorded in h2h_summary.json


def test_h2h_judge_by_logprob():
    cfg = EvalConfig()  # the shipped pairwise template, forced prefix "Verdict: ", logprob verdicts
    seen = []

    def logprobs(text):
        seen.append(text)
        return {ord("A"): -2.0, ord("B"): -0.5} if "short" in text.split("<reply_A>")[1].split("</reply_A>")[0] else {ord("A"): -0.1}

    judge = h2h_judge(FakeGenerator(logprobs=logprobs), cfg)
    [(v1, raw1), (v2, _)] = judge.compare_many([("Q", "short", "long"), ("Q", "long", "short")])
    assert (v1, v2) == ("second", "first")
    assert json.loads(raw1)["verdict_token_probs"]["B"] == pytest.approx(0.606531, abs=1e-6)
    assert seen[0].endswith("<assistant>Verdict: ")  # the verdict is read right after the forced prefix
    assert h2h_judge(FakeGenerator(logprobs=lambda t: {}), cfg).compare("Q", "a", "b") is None


def test_pointwise_template_is_refused_for_h2h():
    with pytest.raises(EvalError, match="pointwise template"):
        load_pairwise_template("self-rewarding")
    with pytest.raises(EvalError, match="no such template"):
        load_pairwise_template("no-such-template-xyz")
    with pytest.raises(EvalError, match="pointwise template"):  # what open_comparer checks before an engine starts
        h2h_judge(None, EvalConfig(judge_template="self-rewarding"))


def test_h2h_template_must_fill_the_pairwise_variables(tmp_path):
    path = tmp_path / "odd.yaml"
    path.write_text(TEMPLATE.replace("response_a", "first").replace("response_b", "second"))
    with pytest.raises(EvalError, match=r"head-to-head judge: template test-pairwise@1: variables .* a pairwise judge fills"):
        h2h_judge(None, EvalConfig(judge_template=str(path), judge_method="text"))


def test_agreement_with_human_labels(tmp_path):
    run = make_run(tmp_path)
    seed = write_jsonl(tmp_path / "seed.jsonl", [
        {"prompt": "a", "chosen": "good 1", "rejected": "bad 1"}, {"prompt": "b", "chosen": "good 2", "rejected": "bad 2"},
        {"prompt": "c", "chosen": "bad a", "rejected": "bad b", "labeler": "x"}])
    r = agreement_eval(run, seed, PrefersGood())
    assert (r.n, r.agree, r.disagree, r.undecided) == (3, 2, 0, 1)
    assert r.accuracy == pytest.approx(2.5 / 3)
    # human: first x3, second x3; judge: first, first, first, second, second, first -> p_o 5/6, p_e 1/2, kappa 2/3
    assert r.kappa == pytest.approx(2 / 3)
    assert (run.root / "eval" / "agreement.json").exists()
    assert read_agreement(run) == r and r.judge == "PrefersGood" and r.unjudged == 0


def test_agreement_without_verdicts_is_left_out(tmp_path):
    """No verdict in either order: the pair is counted as unjudged, not as a tie; one order without a
    verdict leaves that order out of accuracy and kappa."""
    run = make_run(tmp_path)
    seed = write_jsonl(tmp_path / "seed.jsonl", [
        {"prompt": "a", "chosen": "good 1", "rejected": "bad 1"}, {"prompt": "mute", "chosen": "good 2", "rejected": "bad 2"},
        {"prompt": "half", "chosen": "good 3", "rejected": "bad 3"}])

    class MuteOnSome(PrefersGood):
        def compare(self, prompt, first, second):
            if prompt == "mute" or (prompt == "half" and first.startswith("bad")):
                return None
            return super().compare(prompt, first, second)

    r = agreement_eval(run, seed, MuteOnSome())
    assert (r.n, r.unjudged, r.agree, r.disagree, r.undecided) == (2, 1, 1, 0, 1)
    assert r.accuracy == 1.0  # every verdict given named the person's choice
    assert r.kappa == pytest.approx(1.0)  # judge first, first, second vs human first, first, second


def test_agreement_file_of_an_earlier_version_still_reads(tmp_path):
    run = make_run(tmp_path)
    write_json(run.root / "eval" / "agreement.json", {
        "file": "seed.jsonl", "judge": "pairwise@1 on base", "n": 30, "agree": 18, "disagree": 4, "inconsistent": 8,
        "accuracy": {"n": 30, "wins": 18, "losses": 4, "ties": 8, "win_rate": 22 / 30, "tie_rate": 8 / 30,
                     "ci_low": 0.6, "ci_high": 0.85}, "kappa": 0.41})
    a = read_agreement(run)
    assert (a.n, a.unjudged, a.agree, a.disagree, a.undecided, a.kappa) == (30, 0, 18, 4, 8, 0.41)
    assert a.accuracy == pytest.approx(22 / 30) and a.accuracy_ci == (0.6, 0.85)


def test_h2h_plan():
    assert h2h_plan([0, 1, 2, 3]) == [(1, 0), (2, 0), (3, 0), (2, 1), (3, 2)]
    assert h2h_plan([0]) == []


def test_run_eval_checks_iterations(tmp_path, scripted):
    run = make_run(tmp_path)
    with pytest.raises(EvalError, match="iteration\\(s\\) 2 have no trained policy; available: 0"):
        run_eval(run, iterations=[0, 2], ifeval_file="x")


@pytest.mark.slow
def test_ifeval_and_h2h_on_tiny_model(tmp_path, tiny_model_dir):
    """Real generation (transformers, tiny random llama): files written, greedy, cached, both orders judged."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfplay.records import TrainResult

    other = tmp_path / "tiny-other"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    model.save_pretrained(other)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(other)

    # Judged by the shipped pairwise template, logprob verdicts (the default), with the base model as judge.
    run = make_run(tmp_path, [f"model={tiny_model_dir}", "generation.backend=transformers", "generation.dtype=float32",
                              "eval.max_tokens=6", "generation.max_tokens=6", "eval.best_of_n=2"])
    write_json(run.paths(1).train, TrainResult(algo="dpo", policy=str(other)).model_dump())
    ifeval = write_jsonl(tmp_path / "ifeval.jsonl", IFEVAL_LINES)
    result = run_eval(run, ifeval_file=str(ifeval), prompts_file=str(ifeval))  # the IFEval prompts double as held-out ones
    s = result.ifeval
    assert [it.iteration for it in s.iterations] == [0, 1] and s.echo.prompt_level_strict == pytest.approx(1 / 3)
    assert all(0.0 <= it.prompt_level_strict <= 1.0 for it in s.iterations)
    responses = read_records(run.root / "eval" / "responses_iter_001.jsonl", Generation)
    assert len(responses) == 3 and {g.policy for g in responses} == {str(other)}
    assert all(g.n_tokens <= 6 and g.temperature == 0.0 for g in responses)
    [h2h, vs_best] = result.h2h
    assert (h2h.iteration, h2h.against, h2h.n, h2h.baseline) == (1, 0, 3, None)
    # Best-of-2 from the base model, picked by the base model's own pointwise score, is a second baseline.
    assert (vs_best.iteration, vs_best.n, vs_best.baseline) == (1, 3, "best-of-2 (pointwise) from 0")
    best = read_records(run.root / "eval" / "bestofn.jsonl", BestOfN)
    assert len(best) == 3 and all(len(b.candidates) == 2 and b.pick in {c.id for c in b.candidates} for b in best)
    assert (run.root / "eval" / "h2h_iter_001_vs_000_best-of-2--pointwise--from-0.jsonl").exists()
    assert h2h.wins + h2h.losses + h2h.ties == 3
    rows = read_records(run.root / "eval" / "h2h_iter_001_vs_000.jsonl", H2HRow, unique_ids=False)
    judged = [r for r in rows if r.reason != "identical"]
    assert all(len(r.raw) == 2 and "verdict_token_probs" in r.raw[0] for r in judged)  # both orders' raw output kept
    assert all(r.k_first is not None and r.k_second is not None for r in judged)  # logprob verdicts always exist


class PulledToFirst:
    """P(first wins) = 0.75 plus 0.125 toward whichever response says 'good': every verdict picks the first-presented
    answer (a vote sees only ties), but the preference moves with content. Binary fractions: exact arithmetic."""

    def preferences(self, items):
        return [(0.75 + 0.125 * ("good" in first) - 0.125 * ("good" in second), "raw") for _, first, second in items]


def test_h2h_calibration_decides_where_the_vote_cannot(tmp_path, scripted):
    run = make_run(tmp_path)
    scripted["iter1"].update({"p1": "good answer", "p2": "bad answer", "p3": "bad one"})
    scripted["iter0"].update({"p1": "bad answer", "p2": "good answer", "p3": "bad two"})
    prompts = [Prompt(id=f"p{i}", text=f"Question {i}?") for i in range(1, 4)]
    r = h2h_eval(run, 1, 0, prompts, PulledToFirst())
    # The vote: every comparison picked the first-presented answer, so every prompt is an inconsistent tie...
    assert (r.wins, r.losses, r.ties, r.first_position_rate, r.consistent) == (0, 0, 3, 1.0, 0.0)
    assert r.decides is False  # ...and the report says the judge could not decide, not that the policies drew.
    rows = read_records(run.root / "eval" / "h2h_iter_001_vs_000.jsonl", H2HRow, unique_ids=False)
    # Calibrated: P(iteration 1 wins) averaged over both orders, (p_first + 1 - p_second) / 2.
    assert [(x.k_first_p, x.k_second_p, x.calibrated, x.calibrated_outcome) for x in rows] == [
        (0.875, 0.625, 0.625, "win"), (0.625, 0.875, 0.375, "loss"), (0.75, 0.75, 0.5, "tie")]
    assert (r.calibrated.wins, r.calibrated.losses, r.calibrated.ties) == (1, 1, 1)
    # With the judge's mean pull (0.75 - 0.5) taken out, half the decided comparisons pick the first answer, and the two
    # orders of every decided prompt name the same winner.
    assert (r.first_position_rate_calibrated, r.consistent_calibrated) == (0.5, 1.0)


def test_h2h_vote_judges_still_get_a_calibrated_view(tmp_path, scripted):
    """A judge that only gives verdicts: its preference is 1 or 0, so calibrated and voted outcomes agree."""
    run = make_run(tmp_path)
    scripted["iter1"].update({"p1": "good answer", "p2": "bad one"})
    scripted["iter0"].update({"p1": "bad answer", "p2": "bad two"})
    r = h2h_eval(run, 1, 0, [Prompt(id="p1", text="Q1?"), Prompt(id="p2", text="Q2?")], PrefersGood())
    rows = read_records(run.root / "eval" / "h2h_iter_001_vs_000.jsonl", H2HRow, unique_ids=False)
    assert [(x.outcome, x.calibrated_outcome, x.calibrated) for x in rows] == [("win", "win", 1.0), ("tie", "tie", 0.5)]
    assert r.first_position_rate == 0.75 and r.decides is False  # 3 of 4 verdicts picked the first answer (> 0.7)


def test_agreement_is_calibrated_for_position_bias(tmp_path):
    """A judge pulled to the first answer agrees with people only when their choice is shown first; averaged over
    both orders its preference still names their choice."""
    run = make_run(tmp_path)
    seed = write_jsonl(tmp_path / "seed.jsonl", [
        {"prompt": "a", "chosen": "good 1", "rejected": "bad 1"}, {"prompt": "b", "chosen": "good 2", "rejected": "bad 2"},
        {"prompt": "c", "chosen": "bad a", "rejected": "bad b"}])
    r = agreement_eval(run, seed, PulledToFirst())
    assert r.first_position_rate == 1.0 and r.accuracy == pytest.approx(0.5)  # every verdict: the first answer
    # a, b: (0.875 + 1 - 0.625) / 2 = 0.625 > 0.5, hits; c: 0.5, half a hit
    assert r.calibrated_accuracy == pytest.approx(2.5 / 3)
    voted = agreement_eval(run, seed, PrefersGood())
    assert voted.first_position_rate == pytest.approx(4 / 6) and voted.calibrated_accuracy == pytest.approx(2.5 / 3)


def test_a_run_ends_with_iteration_0_against_its_last_iteration(tmp_path, scripted):
    """eval.after_run: the closing evaluation compares iteration 0 with the LAST trained iteration (not every one),
    on both held-out sets, and its line states the change with the paired interval and the verdict."""
    from selfplay.evaluate import evaluate_after_run
    from selfplay.views import before_after_line

    main_file = write_jsonl(tmp_path / "ifeval.jsonl", IFEVAL_LINES)
    other = write_jsonl(tmp_path / "independent.jsonl", INDEPENDENT_LINES)
    run = make_run(tmp_path, [f"eval.ifeval={main_file}", f"eval.ifeval_independent={other}", "eval.after_run=true"])
    assert evaluate_after_run(run) is None  # nothing trained yet: nothing to compare
    scripted["iter2"] = scripted.pop("iter1")
    for k in (1, 2):
        write_json(run.paths(k).train, TrainResult(algo="dpo", policy=f"/fake/iter{k}").model_dump())
    result = evaluate_after_run(run)
    assert [it.iteration for it in result.ifeval.iterations] == [0, 2]
    assert [name for name, _ in ScriptedPolicy.calls].count("iter1") == 0  # the middle iteration is not evaluated
    line = before_after_line(result.ifeval, "held-out")
    diff = result.ifeval.iterations[1].vs_base
    assert line.startswith("held-out (ifeval.jsonl, 3 prompts), prompt-level strict: 33.3% at iteration 0 -> 100.0% at iteration 2, +66.7 points (95% CI ")
    assert line.endswith(f"{100 * diff.ci_high:+.1f}): improved" if diff.ci_low > 0 else "): no measurable change")
    assert before_after_line(result.ifeval_independent, "independent held-out").endswith(
        "66.7% at iteration 0 -> 66.7% at iteration 2, +0.0 points (95% CI +0.0, +0.0): no measurable change"
    )
