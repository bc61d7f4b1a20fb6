"""The proof pipeline end to end, reduced (one config, one iteration, a handful of prompts), on the tiny
local model: runs, evaluates on the held-out split, writes results.md and the plot."""

import json

import pytest

from selfplay.proof import main
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
    assert figures["evaluation"]["h2h"][0]["calibrated"] is not None
    main(["--diagnostics", "--configs", "self-rewarding", "--runs-dir", str(tmp_path / "runs")])
    assert "| self-rewarding | 1 |" in capsys.readouterr().out
    # the run trained on the train split only: its prompts never include held-out keys
    heldout = {f"ifeval-{json.loads(line)['key']}" for line in open("data/ifeval/heldout.jsonl")}
    trained = {json.loads(line)["id"] for line in (tmp_path / "runs" / "proof-self-rewarding" / "iter_001" / "prompts.jsonl").open()}
    assert trained and not trained & heldout


@pytest.mark.parametrize("low, high, want", [(0.01, 0.09, "improved"), (-0.02, 0.05, "no measurable change"),
                                             (-0.09, -0.01, "worse")])
def test_verdict_respects_the_interval(low, high, want):
    assert change_verdict(PairedDiff(n=100, mean_diff=(low + high) / 2, ci_low=low, ci_high=high)) == want
