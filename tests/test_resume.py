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

    # Kill points are chosen by what is on disk, not by the clock (load on a 2-core machine varies): during
    # judging, during training, and early in iteration 2 -- each plus a random delay.
    rng = random.Random(0)
    root = tmp_path / "runs" / "killed"
    triggers = [root / "iter_001" / "generations.jsonl", root / "iter_001" / "pairs.jsonl", root / "iter_002" / "prompts.jsonl"]
    kills = 0
    for attempt, trigger in enumerate(triggers):
        args = _cmd(tiny_model_dir, "killed", *(["--resume"] if attempt else []))
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and not trigger.exists():
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.05 * duration))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    subprocess.run(_cmd(tiny_model_dir, "killed", "--resume"), env=env, check=True, capture_output=True, timeout=600)
    assert kills >= 2, "the run finished before most kill points; the test proved little"

    assert _snapshot(root) == _snapshot(tmp_path / "runs" / "ref")
    assert not list(root.rglob("*.tmp"))  # stale temp files of killed writes are cleaned
