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


def _snapshot(root: Path, iterations: int = 2) -> dict:
    out = {}
    for k in range(1, iterations + 1):
        it = root / f"iter_{k:03d}"
        for name in RECORD_FILES:
            out[f"{k}/{name}"] = (it / name).read_text().replace(str(root), "<run>")  # policy paths name the run
        train = json.loads((it / "policy" / "train.json").read_text())
        out[f"{k}/train"] = (train["dpo"]["pairs"], train["steps"], round(train["loss_first"], 4), round(train["loss_last"], 4))
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


def _train(root: Path, k: int) -> dict:
    return json.loads((root / f"iter_{k:03d}" / "policy" / "train.json").read_text())


def test_killed_training_resumes_from_its_last_checkpoint(tiny_model_dir, tmp_path):
    env = {**os.environ, "SELFPLAY_RUNS_DIR": str(tmp_path / "runs"), "SELFPLAY_QUIET": "1"}
    extra = ["--set", "iterations=1", "--set", "prompts.per_iteration=8", "--set", "train.batch_size=1", "--set", "train.save_steps=1"]
    subprocess.run(_cmd(tiny_model_dir, "ref", *extra), env=env, check=True, capture_output=True, timeout=600)
    root = tmp_path / "runs" / "killed"
    proc = subprocess.Popen(_cmd(tiny_model_dir, "killed", *extra), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = root / "iter_001" / "policy" / "checkpoints" / "checkpoint-2"
    while proc.poll() is None and not (checkpoint / "trainer_state.json").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (root / "iter_001" / "policy" / "train.json").exists(), "training finished before the kill"
    subprocess.run(_cmd(tiny_model_dir, "killed", "--resume", *extra), env=env, check=True, capture_output=True, timeout=600)

    resumed, ref = _train(root, 1), _train(tmp_path / "runs" / "ref", 1)
    assert resumed["resumed_at_step"] >= 2 and ref["resumed_at_step"] is None
    assert (resumed["dpo"]["pairs"], resumed["steps"]) == (ref["dpo"]["pairs"], ref["steps"]) and ref["steps"] >= 4
    assert resumed["loss_last"] == pytest.approx(ref["loss_last"], abs=1e-4)  # the remaining steps, as uninterrupted
    assert not (root / "iter_001" / "policy" / "checkpoints").exists()  # removed once the policy is saved


def test_soak_random_kills_over_three_iterations(tiny_model_dir, tmp_path):
    """Kill the run at random moments (seeded) until it finishes, resuming each time; the result must equal
    an uninterrupted run's, and nothing stale is left behind."""
    env = {**os.environ, "SELFPLAY_RUNS_DIR": str(tmp_path / "runs"), "SELFPLAY_QUIET": "1"}
    extra = ["--set", "iterations=3", "--set", "train.save_steps=1"]
    started = time.monotonic()
    subprocess.run(_cmd(tiny_model_dir, "ref", *extra), env=env, check=True, capture_output=True, timeout=600)
    duration = time.monotonic() - started
    rng = random.Random(1)
    root = tmp_path / "runs" / "soak"
    kills = 0
    for attempt in range(10):  # bounded: each attempt either finishes the run or is killed
        proc = subprocess.Popen(_cmd(tiny_model_dir, "soak", *extra, *(["--resume"] if attempt else [])), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            proc.wait(timeout=rng.uniform(0.15, 0.5) * duration)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            kills += 1
            proc.wait()
            continue
        assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
        break
    else:
        subprocess.run(_cmd(tiny_model_dir, "soak", "--resume", *extra), env=env, check=True, capture_output=True, timeout=600)
    assert kills >= 3, "the run finished before most kills; the soak proved little"

    snapshot = _snapshot(root, iterations=3)
    assert snapshot == _snapshot(tmp_path / "runs" / "ref", iterations=3)
    assert not list(root.rglob("*.tmp")) and not list(root.rglob("checkpoints"))


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a chosen size, resized later ("space is back"); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()

    def resize(size_kib: int, first: bool = False) -> None:
        opts = f"size={size_kib}k" if first else f"remount,size={size_kib}k"
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mount)], check=True, capture_output=True)

    try:
        resize(64, first=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs permission to mount a tmpfs (root)")
    yield mount, resize
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_the_run_resumes_once_space_is_back(tiny_model_dir, tmp_path, small_disk):
    mount, resize = small_disk
    env = {**os.environ, "SELFPLAY_RUNS_DIR": str(tmp_path / "runs"), "SELFPLAY_QUIET": "1"}
    subprocess.run(_cmd(tiny_model_dir, "ref"), env=env, check=True, capture_output=True, timeout=600)
    ref = tmp_path / "runs" / "ref"
    used_kib = sum(f.stat().st_size for f in ref.rglob("*") if f.is_file()) // 1024
    resize(used_kib // 2)  # room for iteration 1's records, not for the run
    env_full = {**env, "SELFPLAY_RUNS_DIR": str(mount)}
    full = subprocess.run(_cmd(tiny_model_dir, "full"), env=env_full, capture_output=True, text=True, timeout=600)
    assert full.returncode == 1, full.stderr[-3000:]
    lines = [line for line in full.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: no space left on the device while writing") and "Traceback" not in full.stderr
    assert (mount / "full" / "iter_001" / "prompts.jsonl").exists()  # what finished before the disk filled is kept
    resize(used_kib * 4)
    subprocess.run(_cmd(tiny_model_dir, "full", "--resume"), env=env_full, check=True, capture_output=True, timeout=600)
    assert _snapshot(mount / "full") == _snapshot(ref)
    assert not list((mount / "full").rglob("*.tmp")) and not list((mount / "full").rglob(".tmp*"))
