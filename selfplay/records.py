"""Typed records that cross every stage boundary, and their JSONL files on disk.

Every file is written to a temporary name and renamed, so a killed run leaves either the old file or
the new one, never half of one. Reading is strict: a malformed line is a `RecordError` naming the file
and line, never a silently skipped record.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, TypeVar

import jsonlines
from pydantic import BaseModel, ConfigDict, ValidationError

from selfplay.errors import SelfplayError

RECORDS_VERSION = 1  # bump when a record's meaning changes; old run directories are then refused


class RecordError(SelfplayError, ValueError):
    """A record file that cannot be read: the message names the file and line."""


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Prompt(Record):
    id: str  # unique within a run, e.g. "pool-0042"
    text: str  # the user's instruction, without any chat template
    source: str = "pool"  # pool | ifeval | self-instruct | seed
    meta: dict = {}  # e.g. the IFEval instruction ids and kwargs of a checkable prompt


class Generation(Record):
    id: str  # "<prompt_id>/g<j>"
    prompt_id: str
    text: str
    n_prompt_tokens: int  # chat-templated prompt length, tokens
    n_tokens: int  # response length, tokens
    finish_reason: str  # "stop" (end token) | "length" (hit max_tokens)
    temperature: float
    top_p: float
    max_tokens: int
    seed: int  # engine seed (vLLM) or per-record seed (transformers); see manifest "seeding"
    policy: str  # the model directory that produced it
    backend: Literal["vllm", "transformers"]


class Judgement(Record):
    id: str  # "<generation_id>/j" for pointwise, "<id_a>|<id_b>" for pairwise
    prompt_id: str
    generation_ids: list[str]  # one for pointwise, two (in presented order) for pairwise
    judge: str  # judge kind, e.g. "pointwise"
    method: str  # text (parsed judge text) | logprob (expected score) | program | winrate | revision | label
    raw: list[str]  # every raw judge output, kept even when unparseable
    sample_scores: list[float | None]  # parsed score per raw output; None = unparseable
    score: float | None  # the judgement; pointwise 1..5 (rubric scale); None = no usable score
    status: Literal["ok", "unparseable", "error"]
    template: str | None = None  # template name@version
    template_hash: str | None = None  # sha256 of the template file, first 12 hex
    constitution_hash: str | None = None
    principle: str | None = None


class Pair(Record):
    id: str  # "<prompt_id>/p"
    prompt_id: str
    prompt: str
    chosen: str
    rejected: str
    chosen_id: str
    rejected_id: str
    chosen_score: float
    rejected_score: float
    margin: float  # chosen_score - rejected_score, > 0
    judge: str  # judge kind that produced the scores
    template_hash: str | None = None
    constitution_hash: str | None = None
    principle: str | None = None  # the constitution principle the chosen response was judged under

    def to_trl(self) -> dict:
        """TRL's conversational preference format; the trainer applies the model's chat template."""
        return {
            "prompt": [{"role": "user", "content": self.prompt}],
            "chosen": [{"role": "assistant", "content": self.chosen}],
            "rejected": [{"role": "assistant", "content": self.rejected}],
        }


R = TypeVar("R", bound=BaseModel)


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts, stable across processes and Python versions (unlike hash())."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it over `path` only if the block succeeds."""
    path = Path(path)
    if path.is_dir():  # os.replace would fail only after the block's work, with an OSError
        raise RecordError(f"{path}: is a directory; give a file name to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_main_process() -> bool:
    """False in every process but rank 0 of a distributed launch (accelerate / torchrun set RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


def write_text(path: Path, text: str) -> None:
    """Atomically; the other processes of a distributed launch write nothing (rank 0 writes for all)."""
    if not is_main_process():
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, obj: object) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_records(path: Path, records: Iterable[BaseModel]) -> None:
    if not is_main_process():  # as write_text
        return
    with atomic_path(path) as tmp, jsonlines.open(tmp, mode="w") as out:
        for record in records:
            out.write(record.model_dump(mode="json"))


def append_record(path: Path, record: BaseModel) -> None:
    """Appends one line; used for summary.jsonl, where each row is written once, at iteration end."""
    with jsonlines.open(path, mode="a") as out:
        out.write(record.model_dump(mode="json"))


def read_records(path: Path, cls: type[R], *, unique_ids: bool = True) -> list[R]:
    """Reads a JSONL file of `cls` records; any bad line is a RecordError naming file and line."""
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path}: no such file")
    records: list[R] = []
    seen: set[str] = set()
    try:
        raw = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise RecordError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:  # a directory, no permission
        raise RecordError(f"{path}: cannot read ({err.strerror})") from None
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise RecordError(f"{path}:{lineno}: malformed JSON ({err.msg})") from None
        try:
            record = cls.model_validate(obj)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "record"
            raise RecordError(f"{path}:{lineno}: {where}: {first['msg']}") from None
        rid = getattr(record, "id", None)
        if unique_ids and rid is not None:
            if rid in seen:
                raise RecordError(f"{path}:{lineno}: duplicate id {rid!r}")
            seen.add(rid)
        records.append(record)
    return records
