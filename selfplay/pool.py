"""Prompt pools: loading them (our JSONL or IFEval's, a Parquet or CSV file, a `datasets` folder) and sampling
each iteration's prompts.

JSONL pools are read line by line, as they always were: every error names its line, and ids and IFEval meta come
through exactly. Tables (Parquet, CSV, a folder saved with `Dataset.save_to_disk`, a .json file) are read by the
`datasets` library; prompts.column names the prompt text column and prompts.id_column the id column.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError

from selfplay.config import PromptsConfig, resolve_data_path
from selfplay.records import Prompt, RecordError, derive_seed

TABLE_SUFFIXES = {".parquet": "Parquet", ".csv": "CSV", ".json": "JSON"}  # the rest is read as JSONL
DEFAULT_COLUMN = "prompt"
FALLBACK_COLUMN = "text"  # our Prompt records (a run's prompts.jsonl) carry the text here


def _pool_prompt(obj: dict, column: str, id_column: str | None) -> Prompt:
    if "instruction_id_list" in obj:  # IFEval input format: key, prompt, instruction_id_list, kwargs
        # Arrow fills a struct's missing keys with None in tables; the checkers ignore None kwargs (selfplay.ifeval).
        meta = {"instruction_id_list": obj["instruction_id_list"], "kwargs": obj.get("kwargs", [])}
        return Prompt(id=f"ifeval-{obj['key']}", text=obj[column], source="ifeval", meta=meta)
    if column == DEFAULT_COLUMN and column not in obj and FALLBACK_COLUMN in obj:
        column = FALLBACK_COLUMN
    id_key = id_column or "id"
    meta = {k: v for k, v in obj.items() if k not in (id_key, column)}
    return Prompt(id=str(obj[id_key]), text=_prompt_text(obj[column]), source="pool", meta=meta)


def _prompt_text(value: object) -> object:
    """A prompt cell as text: TRL's conversational prompt-only form (one user message) gives its content;
    anything else is left for the record to check."""
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        if len(value) != 1 or value[0].get("role") != "user":
            roles = ", ".join(str(m.get("role")) for m in value)
            raise ValueError(f"a conversational prompt must be one user message, got {roles}")
        return value[0]["content"]
    return value


def load_pool(path: str | Path, column: str = DEFAULT_COLUMN, id_column: str | None = None) -> list[Prompt]:
    """Every prompt of a pool; any bad line or row is a RecordError naming the file and the line (JSONL) or row."""
    path = resolve_data_path(str(path))
    if not path.exists():
        raise RecordError(f"{path}: no such prompt pool")
    if path.is_dir() or path.suffix.lower() in TABLE_SUFFIXES:
        return _checked(path, "row", enumerate(_table_rows(path, column, id_column), start=1), column, id_column)
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise RecordError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:  # no permission
        raise RecordError(f"{path}: cannot read the prompt pool ({err.strerror})") from None
    return _checked(path, "line", _json_lines(path, lines), column, id_column)


def _json_lines(path: Path, lines: list[str]) -> Iterator[tuple[int, object]]:
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as err:
            raise RecordError(f"{path}:{lineno}: malformed JSON ({err.msg})") from None


def _checked(path: Path, unit: str, rows: Iterator[tuple[int, object]], column: str, id_column: str | None) -> list[Prompt]:
    prompts, seen = [], set()
    expected = (
        "expected {id, prompt} or IFEval {key, prompt, instruction_id_list, kwargs}"
        if (column, id_column) == (DEFAULT_COLUMN, None)
        else f"expected the columns {column!r}" + (f" and {id_column!r}" if id_column else "")
    )
    for n, obj in rows:
        where = f"{path}:{n}" if unit == "line" else f"{path}: row {n}"
        if not isinstance(obj, dict):
            raise RecordError(f"{where}: {expected}, got a JSON {type(obj).__name__}")
        try:
            prompt = _pool_prompt(obj, column, id_column)
        except KeyError as err:
            raise RecordError(f"{where}: {expected} (no {err})") from None
        except ValidationError as err:  # one line naming the field, not pydantic's multi-line report
            first = err.errors()[0]
            raise RecordError(f"{where}: {expected} ({'.'.join(map(str, first['loc']))}: {first['msg']})") from None
        except ValueError as err:
            raise RecordError(f"{where}: {err}") from None
        if not prompt.text.strip():
            raise RecordError(f"{where}: empty prompt")
        if prompt.id in seen:
            raise RecordError(f"{where}: duplicate id {prompt.id!r}")
        seen.add(prompt.id)
        prompts.append(prompt)
    if not prompts:
        raise RecordError(f"{path}: no prompts")
    return prompts


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """datasets logs a reader's failure before raising it, and draws progress bars for a few rows; our error says
    it once, on one line, and reading a pool or writing an export prints nothing of its own."""
    import datasets

    logger, bars = logging.getLogger("datasets"), datasets.is_progress_bar_enabled()
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        logger.setLevel(level)
        if bars:
            datasets.enable_progress_bars()


def _table_rows(path: Path, column: str, id_column: str | None) -> Iterator[dict]:
    """A table's rows, after checking the mapped columns exist (one line naming them and the columns it has)."""
    import datasets

    kind = "datasets folder" if path.is_dir() else TABLE_SUFFIXES[path.suffix.lower()]
    # Read into memory from a throwaway cache: a pool is small, and loading it must leave nothing behind.
    with quiet_datasets(), tempfile.TemporaryDirectory(prefix="selfplay-pool-") as cache:
        try:
            if path.is_dir():
                table = datasets.load_from_disk(str(path), keep_in_memory=True)
            else:
                read = {".parquet": datasets.Dataset.from_parquet, ".csv": datasets.Dataset.from_csv}.get(
                    path.suffix.lower(), datasets.Dataset.from_json
                )
                table = read(str(path), cache_dir=cache, keep_in_memory=True)
        except FileNotFoundError:  # load_from_disk on a folder that is no saved dataset
            raise RecordError(
                f"{path}: cannot read the prompt pool (Is a directory); a datasets folder holds what save_to_disk writes"
            ) from None
        except Exception as err:  # the readers raise many types: ArrowInvalid, pandas' ParserError, ...
            cause = err.__cause__ or err  # DatasetGenerationError wraps the reader's own error
            reason = " ".join(str(cause).split())[:200]
            raise RecordError(f"{path}: cannot read the prompt pool as {kind} ({type(cause).__name__}: {reason})") from None
    if isinstance(table, datasets.DatasetDict):
        if len(table) != 1:
            raise RecordError(f"{path}: a datasets folder with splits {', '.join(table)}; save the one split to use as the pool")
        table = next(iter(table.values()))
    columns = list(table.column_names)
    wanted = [c for c in (column, id_column) if c]
    if column == DEFAULT_COLUMN and column not in columns and FALLBACK_COLUMN in columns:
        wanted = [c for c in wanted if c != DEFAULT_COLUMN]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise RecordError(
            f"{path}: no column {missing[0]!r} (it has {', '.join(columns)}); set prompts.column / prompts.id_column"
        )
    has_id = id_column is not None or "id" in columns or "instruction_id_list" in columns
    for i, row in enumerate(table):
        yield row if has_id else {**row, "id": f"pool-{i + 1:05d}"}  # no id column: the row number


def pool_prompts(cfg: PromptsConfig) -> list[Prompt]:
    """The configured pool, read with its column mapping."""
    return load_pool(cfg.pool, cfg.column, cfg.id_column)


def sample_prompts(cfg: PromptsConfig, seed: int, iteration: int) -> list[Prompt]:
    """Iteration k takes the k-th slice of one seeded shuffle of the pool, so iterations see fresh
    prompts while the pool lasts (Self-Rewarding LMs trains each iteration on new prompts)."""
    pool = pool_prompts(cfg)
    order = list(range(len(pool)))
    random.Random(derive_seed(seed, "pool")).shuffle(order)
    start = (iteration - 1) * cfg.per_iteration
    return [pool[order[(start + i) % len(pool)]] for i in range(min(cfg.per_iteration, len(pool)))]
