"""Kill `selfplay run` with SIGKILL at random moments, resume it, and compare with an uninterrupted run
(transformers backend: every record is reproducible from its own seed)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SELFPLAY = Path(sys.executable).with_name("selfplay")
RECORD_FILES = ("prompts.jsonl", "generations.jsonl", "judgements.jsonl", "pairs.jsonl")


def _cmd(model_dir: Path, name: str, *extra: str) -> list[str]:
    sets = [f"model={model_dir}", "iterations=2", "prompts.per_iteration=3", "generation.backend=transformers",
            "generation.n=3", "generation.max_tokens=12", "train.batch_size=2", "train.max_length=96",
            "pairing.min_margin=0.0", "train.min_pairs=1"]
    return [str(SELFPLAY), "run", "--name", name, *[a for s in sets for a in ("--set", s)], *extra]


def _snapshot(root: Path) -> dict:
    out = {}
    for k in (1, 2):
        it = root / f"iter_{k:03d}"
        for name in RECORD_FILES:
            out[f"{k}/{name}"] = (it / name).read_text().replace(str(root), "<run>")  # policy paths name the run
        train = json.loads((it / "policy" / "train.json").read_text())
        out[f"{k}/train"] = (train["pairs"], train["steps"], round(train["loss_first"], 4), round(train["loss_last"], 4))
    rows = [json.loads(line) for line in (root / "summary.jsonl").read_text().splitlines()]
    out["summary"] = [{k: v for k, v in row.items() if k not in ("seconds", "loss_first", "loss_last", "reward_accuracy")}
                      for row in rows]
    return out


def test_sigkill_anywhere_then_resume_matches_uninterrupted(tiny_model_dir, tmp_path):
    env = {**os.environ, "SELFPLAY_RUNS_DIR": str(tmp_path / "runs"), "SELFPLAY_QUIET": "1"}
    started = time.monotonic()
    subprocess.run(_cmd(tiny_model_dir, "ref"), env=env, check=True, capture_output=True, timeout=600)
    duration = time.monotonic() - started

    rng = random.Random(0)
    kills = 0
    for attempt in range(3):
        args = _cmd(tiny_model_dir, "killed", *(["--resume"] if attempt else []))
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=rng.uniform(0.35, 0.9) * duration)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
    subprocess.run(_cmd(tiny_model_dir, "killed", "--resume"), env=env, check=True, capture_output=True, timeout=600)
    assert kills >= 1, "no attempt was interrupted; the test proved nothing"

    root = tmp_path / "runs"
    assert _snapshot(root / "killed") == _snapshot(root / "ref")
    assert not list((root / "killed").rglob("*.tmp"))  # stale temp files of killed writes are cleaned
