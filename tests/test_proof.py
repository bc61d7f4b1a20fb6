"""The proof pipeline end to end, reduced (one config, one iteration, a handful of prompts), on the tiny
local model: runs, evaluates on the held-out split, writes results.md and the plot."""

import json

import pytest

from selfplay.config import PROJECT_ROOT
from selfplay.evaluate import EvalResult, IFEvalIteration, IFEvalScores, IFEvalSummary
from selfplay.proof import improved_on_both, main, results_markdown
from selfplay.views import pct
from selfplay.stats import change_verdict
from selfplay.stats import PairedDiff


@pytest.mark.slow
def test_quick_proof_writes_results(tiny_model_dir, tmp_path, capsys):
    main(["--quick", "--configs", "self-rewarding", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "docs"),
          "--set", f"model={tiny_model_dir}", "--set", "generation.backend=transformers"])
    text = (tmp_path / "docs" / "results.md").read_text()
    assert "| self-rewarding | 0 |" in text and "| self-rewarding | 1 |" in text
    assert "Echo baseline" in text and "Head-to-head" in text
    assert (tmp_path / "docs" / "results.png").stat().st_size > 10_000
    assert "What the training pairs taught" in text and "chosen follows more" in text
    # results.json holds the same figures for machines: the accuracies, the delta and its verdict, the run's rows
    figures = json.loads((tmp_path / "docs" / "results.json").read_text())["configs"]["self-rewarding"]
    iterations = figures["evaluation"]["ifeval"]["iterations"]
    assert [it["iteration"] for it in iterations] == [0, 1] and f"| self-rewarding | 1 | {pct(iterations[1]['prompt_level_strict'])} |" in text
    assert figures["verdicts"]["1"] == change_verdict(PairedDiff(**iterations[1]["vs_base"]))
    assert figures["iterations"][0]["iteration"] == 1 and "pairs" in figures["iterations"][0]
    # ... and the same for the independent set, evaluated beside the held-out split, with the verdict on both
    independent = figures["evaluation"]["ifeval_independent"]
    assert [it["iteration"] for it in independent["iterations"]] == [0, 1] and independent["iterations"][0]["n_prompts"] == 160
    assert figures["verdicts_independent"]["1"] == change_verdict(PairedDiff(**independent["iterations"][1]["vs_base"]))
    assert figures["improved"] == (figures["verdicts"]["1"] == figures["verdicts_independent"]["1"] == "improved")
    assert "The independent set `data/ifeval/independent.jsonl` (160 prompts" in text
    assert f"| self-rewarding | 1 | {pct(independent['iterations'][1]['prompt_level_strict'])} |" in text
    assert "- self-rewarding, iteration 1: " + ("improved" if figures["improved"] else "not shown to improve") in text
    assert (tmp_path / "runs" / "proof-self-rewarding" / "eval" / "responses_independent_iter_001.jsonl").exists()
    assert figures["evaluation"]["h2h"][0]["calibrated"] is not None
    main(["--diagnostics", "--configs", "self-rewarding", "--runs-dir", str(tmp_path / "runs")])
    assert "| self-rewarding | 1 |" in capsys.readouterr().out
    # the run trained on the train split only: its prompts never include held-out keys
    heldout = {f"ifeval-{json.loads(line)['key']}" for name in ("heldout", "independent")
               for line in open(f"data/ifeval/{name}.jsonl")}
    trained = {json.loads(line)["id"] for line in (tmp_path / "runs" / "proof-self-rewarding" / "iter_001" / "prompts.jsonl").open()}
    assert trained and not trained & heldout


@pytest.mark.parametrize("low, high, want", [(0.01, 0.09, "improved"), (-0.02, 0.05, "no measurable change"),
                                             (-0.09, -0.01, "worse")])
def test_verdict_respects_the_interval(low, high, want):
    assert change_verdict(PairedDiff(n=100, mean_diff=(low + high) / 2, ci_low=low, ci_high=high)) == want


def _summary(file: str, interval: tuple[float, float]) -> IFEvalSummary:
    """Iterations 0 and 2 of 100 prompts, iteration 2's change against 0 having this 95% interval."""
    scores = dict(n_prompts=100, instruction_level_strict=0.4, prompt_level_loose=0.35, instruction_level_loose=0.45,
                  prompt_strict_ci=(0.25, 0.45))
    low, high = interval
    return IFEvalSummary(file=file, file_hash="x", max_tokens=128, echo=IFEvalScores(prompt_level_strict=0.25, **scores),
                         iterations=[
        IFEvalIteration(iteration=0, policy="/m0", mean_tokens=80, cut_at_max=0.4, prompt_level_strict=0.30, **scores),
        IFEvalIteration(iteration=2, policy="/m2", mean_tokens=70, cut_at_max=0.3, prompt_level_strict=0.30 + (low + high) / 2,
                        vs_base=PairedDiff(n=100, mean_diff=(low + high) / 2, ci_low=low, ci_high=high), **scores),
    ])


def _result(main_ci, independent_ci) -> EvalResult:
    return EvalResult(ifeval=_summary("data/ifeval/heldout.jsonl", main_ci),
                      ifeval_independent=_summary(str(PROJECT_ROOT / "data" / "ifeval" / "independent.jsonl"), independent_ci))


@pytest.mark.parametrize("main_ci, independent_ci, want", [
    ((0.02, 0.10), (0.01, 0.05), True),
    ((0.02, 0.10), (-0.01, 0.05), False),  # the independent set's change is inside the noise
    ((-0.03, 0.05), (0.01, 0.05), False),  # the held-out split's is
    ((0.02, 0.10), (-0.09, -0.01), False),  # worse on the independent set
])
def test_improved_only_where_both_sets_improve(main_ci, independent_ci, want):
    assert improved_on_both(_result(main_ci, independent_ci)) is want


def test_results_markdown_has_the_independent_table_and_the_verdict_on_both():
    text = results_markdown({"verifiable": _result((0.02, 0.10), (0.01, 0.05)),
                             "constitution": _result((0.02, 0.10), (-0.01, 0.05))}, 600.0, "abc1234", quick=False)
    independent = text.split("The independent set `data/ifeval/independent.jsonl` (100 prompts, never trained on)")[1]
    assert "| constitution | 2 | 32.0 | 35.0 | 40.0 | 45.0 | +2.0 (-1.0, +5.0) | no measurable change | 70.0 | 0.3 |" in independent
    assert "| verifiable | 2 | 36.0 | 35.0 | 40.0 | 45.0 | +6.0 (+2.0, +10.0) | improved | 70.0 | 0.3 |" in text.split(
        "The independent set")[0]
    assert "- verifiable, iteration 2: improved (held-out +6.0 (+2.0, +10.0), improved; independent +3.0 (+1.0, +5.0), improved)" in text
    assert ("- constitution, iteration 2: not shown to improve on both sets (held-out +6.0 (+2.0, +10.0), improved; "
            "independent +2.0 (-1.0, +5.0), no measurable change)") in text


def test_results_markdown_reports_what_a_taught_judge_learned_and_how_it_judges():
    from selfplay.agreement import Agreement
    from selfplay.records import JudgeQuality, JudgeTeaching, TrainResult

    def quality(r, accuracy, kappa, bias):
        return JudgeQuality(judge="/m", responses=240, scored=240, spearman_checkers=r, score_length_r=bias - 0.1,
                            checker_length_r=-0.1, length_bias=bias, seed_agreement=None,
                            checker_agreement=Agreement(n=50, unjudged=0, agree=30, disagree=10, undecided=10,
                                                        accuracy=accuracy, kappa=kappa))

    taught = JudgeTeaching(target="policy", base="/m", taught="/t", template="instruction-following@1",
                           sources=["checkers"], checker_prompts=100, from_checkers=320, from_seed=0,
                           label_counts={"1": 160, "3": 40, "5": 120},
                           train=TrainResult(algo="judge-sft", steps=80, seconds=500.0, loss_first=3.1, loss_last=1.2,
                                             policy="/t"),
                           measured_on="data/ifeval/heldout.jsonl", before=quality(0.19, 0.55, 0.1, -0.4),
                           after=quality(0.52, 0.75, 0.5, 0.05), seconds=900.0)
    text = results_markdown({"self-rewarding-taught": _result((0.02, 0.10), (0.01, 0.05))}, 600.0, "abc1234", quick=False,
                            teaching={"self-rewarding-taught": taught})
    assert "| self-rewarding-taught | before teaching | 0.19 | 55.0% (kappa 0.10, n 50) | -0.40 | 240/240 |" in text
    assert "| self-rewarding-taught | after teaching | 0.52 | 75.0% (kappa 0.50, n 50) | 0.05 | 240/240 |" in text
    assert ("- self-rewarding-taught: taught policy `instruction-following@1` on 320 judgements (320 labelled by the "
            "checkers from 100 train-pool prompts, 0 from people; verdicts 1: 160, 3: 40, 5: 120); 80 steps, "
            "loss 3.10 -> 1.20, 15 min. In the run it judged alone.") in text
