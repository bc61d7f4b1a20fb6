"""Prompt pools: loading them (our pool format or IFEval's) and sampling each iteration's prompts."""

from __future__ import annotations

import json
import random
from pathlib import Path

from pydantic import ValidationError

from selfplay.config import PromptsConfig, resolve_data_path
from selfplay.records import Prompt, RecordError, derive_seed


def _pool_prompt(obj: dict) -> Prompt:
    if "instruction_id_list" in obj:  # IFEval input format: key, prompt, instruction_id_list, kwargs
        meta = {"instruction_id_list": obj["instruction_id_list"], "kwargs": obj.get("kwargs", [])}
        return Prompt(id=f"ifeval-{obj['key']}", text=obj["prompt"], source="ifeval", meta=meta)
    meta = {k: v for k, v in obj.items() if k not in ("id", "prompt")}
    return Prompt(id=str(obj["id"]), text=obj["prompt"], source="pool", meta=meta)


def load_pool(path: str | Path) -> list[Prompt]:
    """Every prompt of a pool file; any bad line is a RecordError naming file and line."""
    path = resolve_data_path(str(path))
    if not path.exists():
        raise RecordError(f"{path}: no such prompt pool")
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise RecordError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:  # a directory, no permission
        raise RecordError(f"{path}: cannot read the prompt pool ({err.strerror})") from None
    prompts, seen = [], set()
    expected = "expected {id, prompt} or IFEval {key, prompt, instruction_id_list, kwargs}"
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise RecordError(f"{path}:{lineno}: malformed JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise RecordError(f"{path}:{lineno}: {expected}, got a JSON {type(obj).__name__}")
        try:
            prompt = _pool_prompt(obj)
        except KeyError as err:
            raise RecordError(f"{path}:{lineno}: {expected} (no {err})") from None
        except ValidationError as err:  # one line naming the field, not pydantic's multi-line report
            first = err.errors()[0]
            raise RecordError(f"{path}:{lineno}: {expected} ({'.'.join(map(str, first['loc']))}: {first['msg']})") from None
        if not prompt.text.strip():
            raise RecordError(f"{path}:{lineno}: empty prompt")
        if prompt.id in seen:
            raise RecordError(f"{path}:{lineno}: duplicate id {prompt.id!r}")
        seen.add(prompt.id)
        prompts.append(prompt)
    if not prompts:
        raise RecordError(f"{path}: no prompts")
    return prompts


def sample_prompts(cfg: PromptsConfig, seed: int, iteration: int) -> list[Prompt]:
    """Iteration k takes the k-th slice of one seeded shuffle of the pool, so iterations see fresh
    prompts while the pool lasts (Self-Rewarding LMs trains each iteration on new prompts)."""
    pool = load_pool(cfg.pool)
    order = list(range(len(pool)))
    random.Random(derive_seed(seed, "pool")).shuffle(order)
    start = (iteration - 1) * cfg.per_iteration
    return [pool[order[(start + i) % len(pool)]] for i in range(min(cfg.per_iteration, len(pool)))]
