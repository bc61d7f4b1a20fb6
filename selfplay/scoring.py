"""Reward models outside the loop: train one on a run's pairs (`selfplay train rm`), score lines with one
(`selfplay score`). The training itself is selfplay.train.reward's; this reads the inputs and checks them first,
so a bad file or directory fails in a second, before torch is imported."""

from __future__ import annotations

import json
from pathlib import Path

from selfplay.config import RewardModelSection
from selfplay.loop import read_inputs
from selfplay.models import resolve_model
from selfplay.pairing import reward_model_pairs
from selfplay.records import RecordError, RewardResult
from selfplay.rundir import Run
from selfplay.seed import SeedSet
from selfplay.train.reward import RewardModel, RewardModelError, train_reward_model
from selfplay.train.setup import check_bitsandbytes


def train_run_reward_model(run: Run, out: Path, seed: SeedSet | None = None, base: str | None = None) -> RewardResult:
    """A reward model on every paired iteration of `run` plus an optional human seed set (selfplay.seed.load_seed),
    from `base` (default: the run's model), saved in `out`: on the iterations' pairs, or with
    train.reward_model.pairs=all on every pair of each prompt's ranking (selfplay.pairing.reward_model_pairs). A run
    without pairs (and no seed pairs) is an error, not an empty model."""
    check_bitsandbytes(run.cfg.train)  # train.optim=adamw_8bit trains the reward model too: CUDA only
    settings = run.cfg.train.reward_model or RewardModelSection()
    paired = sorted(int(path.parent.name.removeprefix("iter_")) for path in run.root.glob("iter_*/pairs.jsonl"))
    pairs, weights = reward_model_pairs(settings, run.cfg.pairing, [read_inputs(run, k) for k in paired], seed)
    if not pairs:  # before the base model is resolved (the default one is converted on first use)
        raise RewardModelError(
            f"{run.root}: no pairs to train a reward model on (no iteration has pairs.jsonl"
            f"{'' if seed else ', and no --seed-set was given'})"
        )
    result = train_reward_model(pairs, resolve_model(base or run.cfg.model), out, run.cfg.train, run.cfg.seed, weights)
    if result.model_dir is None:
        raise RewardModelError(f"reward model not trained: {result.skipped}")
    return result


def read_score_lines(path: Path) -> list[dict]:
    """JSON objects with (at least) prompt and response; any other line is a RecordError naming file and line."""
    path = Path(path)
    if path.is_dir():
        raise RecordError(f"{path}: is a directory; expected a JSONL file of prompt/response lines")
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        raise RecordError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise RecordError(f"{path}:{lineno}: malformed JSON ({err.msg})") from None
        if not isinstance(row, dict) or "prompt" not in row or "response" not in row:
            raise RecordError(f"{path}:{lineno}: expected a JSON object with prompt and response")
        rows.append(row)
    return rows


def score_lines(model: Path, rows: list[dict]) -> list[dict]:
    """Each row with a "reward" field: the reward model's score of str(prompt), str(response)."""
    if not (Path(model) / "config.json").exists():  # before torch is imported: a typo fails at once
        raise RewardModelError(f"{model}: not a reward model directory (no config.json); train one with selfplay train rm")
    rewards = RewardModel.load(model).score([str(r["prompt"]) for r in rows], [str(r["response"]) for r in rows])
    return [{**row, "reward": reward} for row, reward in zip(rows, rewards, strict=True)]
