"""The evaluation and viewing commands as a user meets them: show, diff, eval, report (and sorting)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from selfplay.cli import app as APP
from selfplay.config import load_config
from selfplay.rundir import Manifest, Run, StageInfo
from selfplay.monitors import monitor_iteration
from selfplay.records import PairingStats
from selfplay.records import Judgement, Pair, PreferenceStats, Prompt, TrainResult, read_records, write_json, write_records
from selfplay.views import sort_records

from conftest import make_generation
from test_evaluate import IFEVAL_LINES, INDEPENDENT_LINES, scripted, write_jsonl  # noqa: F401 (fixture)

runner = CliRunner()


def judged(gid: str, raw: str, score: float | None) -> Judgement:
    return Judgement(id=f"{gid}/j", prompt_id=gid.split("/")[0], generation_ids=[gid], judge="pointwise", method="text",
                     raw=[raw], sample_scores=[score], score=score, status="ok" if score is not None else "unparseable",
                     template="self-rewarding@1")


def build_run(tmp_path, name: str = "view") -> Run:
    """Two finished iterations from literal records, monitored as the loop does. Prompt "a" appears in both
    (the pool wrapped)."""
    run = Run.create(tmp_path / "runs" / name, load_config(None))
    monitors = None
    texts = {"a": "Say hi [politely].", "b": "Name a colour.", "c": "Count to three."}
    spec = {  # iteration -> prompt -> [(text, tokens, score)]
        1: {"a": [("hi", 2, 2.0), ("Hello there, friend!", 12, 4.0), ("...", 1, None)],
            "b": [("Blue.", 2, 3.0), ("Red is a colour often seen.", 9, 3.5)]},
        2: {"a": [("Hello!", 3, 3.0), ("Hi, how can I help you today?", 14, 5.0)],
            "c": [("1 2 3", 5, 4.0), ("one, two, three, four", 8, 2.0)]},
    }
    for k, prompts in spec.items():
        p = run.paths(k)
        write_records(p.prompts, [Prompt(id=pid, text=texts[pid]) for pid in prompts])
        gens, judgements, pairs = [], [], []
        for pid, cands in prompts.items():
            for j, (text, n, score) in enumerate(cands):
                gens.append(make_generation(pid, j, text, n))
                judgements.append(judged(f"{pid}/g{j}", f"Reasoning {j}. Score: {score}" if score else "I think it is fine.", score))
            scored = [(s, j, t) for j, (t, _, s) in enumerate(cands) if s is not None]
            (hi, hj, ht), (lo, lj, lt) = max(scored), min(scored)
            pairs.append(Pair(id=f"{pid}/p", prompt_id=pid, prompt=texts[pid], chosen=ht, rejected=lt, chosen_id=f"{pid}/g{hj}",
                              rejected_id=f"{pid}/g{lj}", chosen_score=hi, rejected_score=lo, margin=hi - lo, judge="pointwise"))
        write_records(p.generations, gens)
        write_records(p.judgements, judgements)
        write_records(p.pairs, pairs)
        train = TrainResult(algo="dpo", steps=3, seconds=5.0, loss_first=0.693, loss_last=0.60 - 0.05 * k, policy=f"/models/iter{k}",
                            dpo=PreferenceStats(pairs=len(pairs), reward_accuracy=0.5 + 0.2 * k, reward_margin=0.1))
        write_json(p.train, train.model_dump())
        scores = [j.score for j in judgements if j.score is not None]
        monitors = monitor_iteration(read_records(p.prompts, Prompt), gens, judgements, pairs, run.cfg.monitors, iteration=k,
                                     previous=monitors, kl=train.rl.kl_last if train.rl else None)
        manifest = Manifest(
            iteration=k, policy=f"/models/iter{k - 1}",
            stages={s: StageInfo(status="done", seconds=sec, count=1) for s, sec in
                    (("prompts", 0.0), ("generate", 20.0 * k), ("judge", 10.0), ("pair", 0.1), ("train", 30.0))},
            generation={"count": len(gens), "mean_tokens": sum(g.n_tokens for g in gens) / len(gens), "cut_at_max": 0.1 * k},
            judge={"parse_rate": len(scores) / len(judgements), "mean_score": sum(scores) / len(scores)},
            pairing=PairingStats(prompts=2, pairs=len(pairs), skipped_few_scored=0, skipped_tie=0, mean_margin=1.0),
            train=train, monitors=monitors,
        )
        write_json(p.manifest, manifest.model_dump(mode="json"))
    run.rebuild_summary()
    return run


def _error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_import_is_light_and_help_lists_commands():
    code = ("import sys; from selfplay.cli import app; "
            "from typer.testing import CliRunner; r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "assert all(c in r.output for c in ('show', 'diff', 'eval', 'report')), r.output; "
            "print(sorted(m for m in ('torch', 'vllm', 'transformers', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_show_one_prompt(tmp_path):
    build_run(tmp_path)
    result = runner.invoke(APP, ["show", "view", "1", "a"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("iteration 1 · prompt a (pool)\n  Say hi [politely].")  # brackets are text, not markup
    assert "── a/g1: 12 tokens, stop  [CHOSEN]" in out and "── a/g0: 2 tokens, stop  [REJECTED]" in out
    assert "judgement a/g2/j: score -  (unparseable, pointwise/text, self-rewarding@1)" in out
    assert "I think it is fine." in out and "Reasoning 1. Score: 4.0" in out
    assert "pair a/p: chosen a/g1 (4.00) over rejected a/g0 (2.00), margin 2.00" in out

    view = json.loads(runner.invoke(APP, ["show", "view", "1", "a/g2/j", "--json"]).output)  # any id of the prompt
    assert view["prompt"]["id"] == "a" and [c["role"] for c in view["candidates"]] == ["rejected", "chosen", None]
    assert view["candidates"][2]["judgements"][0]["raw"] == ["I think it is fine."]
    assert view["pair"]["margin"] == 2.0 and view["missing"] == []


def test_show_prints_a_revision_that_no_generation_holds(tmp_path):
    run = build_run(tmp_path)
    p = run.paths(1)
    [first, *rest] = read_records(p.pairs, Pair)
    revised = first.model_copy(update={"chosen": "SAY HI.", "chosen_id": f"{first.rejected_id}/revision"})
    write_records(p.pairs, [revised, *rest])
    out = runner.invoke(APP, ["show", "view", "1", "a"]).output
    assert f"── {first.rejected_id}/revision [CHOSEN]\n    SAY HI." in out and "[REJECTED]" in out


def test_show_errors_are_one_line(tmp_path):
    build_run(tmp_path)
    assert _error_line(runner.invoke(APP, ["show", "view", "1", "zzz"])) == \
        "error: iteration 1: no prompt, generation, judgement or pair with id 'zzz'"
    assert "iteration 5 has no prompts" in _error_line(runner.invoke(APP, ["show", "view", "5", "a"]))
    assert "not a selfplay run directory" in _error_line(runner.invoke(APP, ["show", "nope", "1", "a"]))


def test_diff_on_training_prompts_then_eval_responses(tmp_path):
    run = build_run(tmp_path)
    result = runner.invoke(APP, ["diff", "view", "--iterations", "1", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("training prompts drawn by both iterations 1 and 2")
    assert "═══ a: Say hi [politely]." in result.output and "── iteration 2 #1 (14 tokens)" in result.output
    assert "b:" not in result.output  # only prompts common to both
    view = json.loads(runner.invoke(APP, ["diff", "view", "-i", "1", "2", "--json"]).output)
    assert view["source"] == "train" and [r["prompt_id"] for r in view["rows"]] == ["a"]
    assert view["rows"][0]["responses"]["2"] == ["Hello!", "Hi, how can I help you today?"]

    # With eval responses of both iterations, diff prefers them (same held-out prompts, greedy).
    ev = run.root / "eval"
    write_records(ev / "prompts.jsonl", [Prompt(id="h1", text="Held out?")])
    for k, text in ((0, "base says"), (2, "iteration two says")):
        g = make_generation("h1", 0, text, 3)
        write_records(ev / f"responses_iter_{k:03d}.jsonl", [g])
    view = json.loads(runner.invoke(APP, ["diff", "view", "-i", "0", "2", "--json"]).output)
    assert view["source"] == "eval" and view["rows"][0]["responses"] == {"0": ["base says"], "2": ["iteration two says"]}
    assert "eval responses" in runner.invoke(APP, ["diff", "view", "-i", "0", "2"]).output
    assert "run `selfplay eval` first" in _error_line(runner.invoke(APP, ["diff", "view", "-i", "0", "1"]))


def test_diff_without_common_prompts_says_why(tmp_path):
    run = build_run(tmp_path)
    p = run.paths(2)
    write_records(p.prompts, [Prompt(id="c", text="Count to three.")])
    out = runner.invoke(APP, ["diff", "view", "-i", "1", "2"]).output
    assert "0 in common; iterations draw fresh prompts until the pool wraps" in out


def test_eval_command_with_scripted_policies(tmp_path, scripted, monkeypatch):
    build_run(tmp_path)
    ifeval = write_jsonl(tmp_path / "ifeval.jsonl", IFEVAL_LINES)
    # the literal run's policies are /models/iterK; the scripted fixture answers as /fake/iterK
    scripted["iter2"] = dict(scripted["iter1"])
    result = runner.invoke(APP, ["eval", "view", "--ifeval", str(ifeval), "--iterations", "0,1", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output.splitlines()[-1])
    assert [it["iteration"] for it in data["ifeval"]["iterations"]] == [0, 1]
    assert data["ifeval"]["echo"]["prompt_level_strict"] == pytest.approx(1 / 3) and data["h2h"] == []
    table = runner.invoke(APP, ["eval", "view", "--ifeval", str(ifeval)])  # all trained iterations: 0, 1, 2
    assert table.exit_code == 0, table.output
    assert "echo baseline" in table.output and "iteration 2" in table.output and "33.3%" in table.output

    assert "iteration(s) 7 have no trained policy" in _error_line(runner.invoke(APP, ["eval", "view", "--iterations", "0,7"]))
    assert _error_line(runner.invoke(APP, ["eval", "view", "--set", "eval.judge_modle=x"])) == "error: --set eval.judge_modle: unknown key"
    data = json.loads(runner.invoke(APP, ["eval", "view", "--ifeval", str(ifeval), "-i", "0", "-s", "max_tokens=9", "--json"]).output.splitlines()[-1])
    assert data["ifeval"]["max_tokens"] == 9
    assert "expected iteration numbers" in runner.invoke(APP, ["eval", "view", "--iterations", "x"]).output
    bad = tmp_path / "held.jsonl"
    bad.write_text('{"id": "a", "prompt": "Say hi [politely]."}\n')  # a training prompt
    assert "training prompts of run view" in _error_line(runner.invoke(APP, ["eval", "view", "--no-ifeval", "--prompts", str(bad)]))


def test_eval_command_scores_the_independent_set_beside_the_main_one(tmp_path, scripted):
    build_run(tmp_path)
    ifeval = write_jsonl(tmp_path / "ifeval.jsonl", IFEVAL_LINES)
    independent = write_jsonl(tmp_path / "independent.jsonl", INDEPENDENT_LINES)
    args = ["eval", "view", "--ifeval", str(ifeval), "--independent", str(independent), "-i", "0,1"]
    data = json.loads(runner.invoke(APP, [*args, "--json"]).output.splitlines()[-1])
    assert data["ifeval"]["file"] == str(ifeval) and data["ifeval_independent"]["file"] == str(independent)
    assert [it["prompt_level_strict"] for it in data["ifeval_independent"]["iterations"]] == [pytest.approx(2 / 3)] * 2
    table = runner.invoke(APP, args)
    assert table.exit_code == 0, table.output
    out = " ".join(table.output.split())  # rich wraps long titles
    assert "IFEval-style instruction following:" in out and "The independent set (phrased apart from the train pools):" in out
    assert out.count("echo baseline") == 2 and "66.7%" in out
    # The run config names it (eval.ifeval_independent): scored without the option; --no-ifeval skips both sets.
    by_config = runner.invoke(APP, ["eval", "view", "--ifeval", str(ifeval), "-s", f"ifeval_independent={independent}", "-i", "1", "--json"])
    assert by_config.exit_code == 0, by_config.output
    assert json.loads(by_config.output.splitlines()[-1])["ifeval_independent"]["file"] == str(independent)
    skipped = runner.invoke(APP, ["eval", "view", "--no-ifeval", "--independent", str(independent), "--json"])
    assert json.loads(skipped.output.splitlines()[-1])["ifeval_independent"] is None


def test_report_command(tmp_path):
    build_run(tmp_path)
    result = runner.invoke(APP, ["report", "view", "--json"])
    assert result.exit_code == 0, result.output
    files = json.loads(result.output)
    names = sorted(p.rsplit("/", 1)[1] for p in files["pngs"])
    assert names == ["distributions.png", "metrics.png", "monitors.png"]
    html = open(files["html"]).read()
    assert html.count("data:image/png;base64,") == 3
    assert "Not evaluated" in html
    assert "report:" in runner.invoke(APP, ["report", "view"]).output


def test_sort_records():
    gens = [make_generation("a", 0, "x", 5), make_generation("b", 0, "x", 2), make_generation("c", 0, "x", 9)]
    assert [g.id for g in sort_records(gens, "tokens")] == ["b/g0", "a/g0", "c/g0"]
    assert [g.id for g in sort_records(gens, "tokens", descending=True)] == ["c/g0", "a/g0", "b/g0"]
    js = [judged("a/g0", "r", 3.0), judged("b/g0", "r", None), judged("c/g0", "r", 1.0)]
    assert [j.id for j in sort_records(js, "score")] == ["c/g0/j", "a/g0/j", "b/g0/j"]  # no score: last
    assert [j.id for j in sort_records(js, "score", descending=True)] == ["a/g0/j", "c/g0/j", "b/g0/j"]
    lengths = {g.id: g.n_tokens for g in gens}
    assert [j.id for j in sort_records(js, "tokens", lengths=lengths)] == ["b/g0/j", "a/g0/j", "c/g0/j"]
    assert [j.id for j in sort_records(list(reversed(js)), "id")] == ["a/g0/j", "b/g0/j", "c/g0/j"]
    with pytest.raises(ValueError, match="unknown sort key"):
        sort_records(js, "length")


def test_compare_runs_side_by_side(tmp_path):
    from selfplay.evaluate import IFEvalIteration, IFEvalScores, IFEvalSummary
    from selfplay.stats import PairedDiff

    build_run(tmp_path, "cmp-a")
    other = build_run(tmp_path, "cmp-b")
    scores = dict(n_prompts=100, instruction_level_strict=0.3, prompt_level_loose=0.3, instruction_level_loose=0.35,
                  prompt_strict_ci=None)
    evaluated = IFEvalSummary(file="held.jsonl", file_hash="x", max_tokens=64, echo=IFEvalScores(prompt_level_strict=0.1, **scores),
                              iterations=[
        IFEvalIteration(iteration=0, policy="/m0", mean_tokens=50, cut_at_max=0.2, prompt_level_strict=0.20, **scores),
        IFEvalIteration(iteration=1, policy="/m1", mean_tokens=40, cut_at_max=0.1, prompt_level_strict=0.28, **scores,
                        vs_base=PairedDiff(n=100, mean_diff=0.08, ci_low=0.02, ci_high=0.14)),
        IFEvalIteration(iteration=2, policy="/m2", mean_tokens=40, cut_at_max=0.1, prompt_level_strict=0.22, **scores,
                        vs_base=PairedDiff(n=100, mean_diff=0.02, ci_low=-0.04, ci_high=0.08)),
    ])
    write_json(other.root / "eval" / "ifeval_summary.json", evaluated.model_dump(mode="json"))

    result = runner.invoke(APP, ["compare", "cmp-a", "cmp-b", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [(r["run"], r["iteration"]) for r in rows] == [("cmp-a", 0), ("cmp-a", 1), ("cmp-a", 2), ("cmp-b", 0), ("cmp-b", 1), ("cmp-b", 2)]
    assert [r["trained_on"] for r in rows] == [None, 2, 2, None, 2, 2]
    assert rows[0]["algo"] == "base" and rows[1]["algo"] == "dpo" and rows[1]["loss_last"] == pytest.approx(0.55)
    assert [r["verdict"] for r in rows] == ["-", "-", "-", "-", "improved", "no measurable change"]
    table = runner.invoke(APP, ["compare", "cmp-a", "cmp-b"])
    assert table.exit_code == 0 and "+8.0 (+2.0, +14.0)" in table.output and "not been evaluated" in table.output
    assert "not a selfplay run" in _error_line(runner.invoke(APP, ["compare", "cmp-a", "nope"]))
