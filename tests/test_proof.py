"""The proof pipeline end to end, reduced (one config, one iteration, a handful of prompts), on the tiny
local model: runs, evaluates on the held-out split, writes results.md and the plot."""

import pytest

from selfplay.proof import main
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
    main(["--diagnostics", "--configs", "self-rewarding", "--runs-dir", str(tmp_path / "runs")])
    assert "| self-rewarding | 1 |" in capsys.readouterr().out
    # the run trained on the train split only: its prompts never include held-out keys
    import json
    heldout = {f"ifeval-{json.loads(line)['key']}" for line in open("data/ifeval/heldout.jsonl")}
    trained = {json.loads(line)["id"] for line in (tmp_path / "runs" / "proof-self-rewarding" / "iter_001" / "prompts.jsonl").open()}
    assert trained and not trained & heldout


@pytest.mark.parametrize("low, high, want", [(0.01, 0.09, "improved"), (-0.02, 0.05, "no measurable change"),
                                             (-0.09, -0.01, "worse")])
def test_verdict_respects_the_interval(low, high, want):
    assert change_verdict(PairedDiff(n=100, mean_diff=(low + high) / 2, ci_low=low, ci_high=high)) == want
