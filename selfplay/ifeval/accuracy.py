"""IFEval prompts, their JSONL loader, and scoring responses strictly and loosely (Zhou et al., 2023).

Strict: the response as it is. Loose (IFEval's upper bound): an instruction passes if any of eight variants
passes: the response, without its first line, without its last line, without both, and each of those four
with every `*` removed, which forgives a chatty first line ("Sure, here it is:") or markdown emphasis.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from selfplay.ifeval.checkers import check, validate_kwargs


class IFEvalPrompt(BaseModel):
    """One line of an IFEval-format JSONL file."""

    model_config = ConfigDict(extra="ignore", frozen=True)  # IFEval's own files carry no other fields

    key: int | str  # unique within its file
    prompt: str
    instruction_id_list: list[str]  # IFEval ids, e.g. "punctuation:no_comma"; at least one
    kwargs: list[dict[str, Any]]  # one dict per instruction id, same order; None values are ignored

    @model_validator(mode="after")
    def _instructions_are_checkable(self) -> IFEvalPrompt:
        if not self.instruction_id_list:
            raise ValueError("instruction_id_list is empty")
        if len(self.instruction_id_list) != len(self.kwargs):
            raise ValueError(f"{len(self.instruction_id_list)} instruction ids but {len(self.kwargs)} kwargs dicts")
        for instruction_id, kwargs in zip(self.instruction_id_list, self.kwargs, strict=True):
            validate_kwargs(instruction_id, kwargs)  # fail at load, not halfway through an evaluation
        return self


class InstructionStats(BaseModel):
    n: int  # instructions of this id seen
    n_uncheckable: int  # of those, strict result None (e.g. language without langdetect)
    strict: float | None  # 0..1 over checkable ones; None = none checkable
    loose: float | None  # 0..1 over checkable ones (loosely); None = none checkable


class IFEvalResult(BaseModel):
    key: int | str
    strict: list[bool | None]  # per instruction, in instruction_id_list order; None = cannot check
    loose: list[bool | None]


class IFEvalReport(BaseModel):
    # Prompt level: every instruction followed, over prompts whose instructions are all checkable.
    # Instruction level: over checkable instructions. None = nothing checkable.
    prompt_level_strict: float | None  # 0..1
    instruction_level_strict: float | None  # 0..1
    prompt_level_loose: float | None  # 0..1
    instruction_level_loose: float | None  # 0..1
    n_prompts: int
    n_instructions: int
    n_uncheckable: int  # instructions whose strict result is None
    n_uncheckable_loose: int  # instructions whose every loose variant is None
    per_instruction: dict[str, InstructionStats]  # by instruction id, sorted
    results: list[IFEvalResult]  # per prompt, in input order


class IFEvalFile(BaseModel):
    """What reading an IFEval-format file gave: its prompts and, read leniently, the lines it skipped."""

    prompts: list[IFEvalPrompt]  # in file order
    n_lines: int  # non-blank lines read
    skipped: list[str]  # one "path:line: why" per unusable line, in file order; always empty when strict


def _lenient(obj: Any) -> Any:
    """A line as IFEval's own code would take it: no kwargs list (or an empty one) means no kwargs for any
    instruction, and each kwargs dict in the form validate_kwargs(strict=False) gives (None dropped, 3.0 -> 3)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("instruction_id_list"), list):
        return obj  # the model says what is wrong
    ids = obj["instruction_id_list"]
    kwargs = obj.get("kwargs") or [{} for _ in ids]
    if isinstance(kwargs, list) and len(kwargs) == len(ids):
        kwargs = [validate_kwargs(i, k, strict=False) for i, k in zip(ids, kwargs, strict=True)]
    return {**obj, "kwargs": kwargs}


def _parse(raw: bytes, strict: bool) -> IFEvalPrompt:
    """One non-blank line; ValueError says what is wrong with it."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"not UTF-8 text ({err.reason})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"not a JSON object: {err}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"not a JSON object: a JSON {type(obj).__name__}")
    try:
        return IFEvalPrompt.model_validate(obj if strict else _lenient(obj))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ValueError(f"{where + ': ' if where else ''}{str(first['msg']).removeprefix('Value error, ')}") from None


def read_ifeval(path: str | Path, strict: bool = True) -> IFEvalFile:
    """Reads an IFEval-format JSONL file (blank lines ignored).

    strict (our own pools and tests): any problem is a one-line ValueError "path:line: what". Lenient (a user's
    file, `selfplay eval --ifeval FILE`): IFEval's own forms are taken too (see _lenient), and a line that still
    cannot be checked (an unknown id, a missing kwarg, malformed JSON, a repeated key) is skipped and named in
    `skipped`; only a file with no usable line at all is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}:0: no such file")
    prompts: list[IFEvalPrompt] = []
    skipped: list[str] = []
    seen: dict[str, int] = {}  # str(key) -> line; 1 and "1" are the same key to a reader
    n_lines = 0
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        n_lines += 1
        try:
            prompt = _parse(raw, strict)
            if str(prompt.key) in seen:
                raise ValueError(f"duplicate key {prompt.key!r} (first on line {seen[str(prompt.key)]})")
        except ValueError as err:
            if strict:
                raise ValueError(f"{path}:{number}: {err}") from None
            skipped.append(f"{path}:{number}: {err}")
            continue
        seen[str(prompt.key)] = number
        prompts.append(prompt)
    if not prompts:
        if skipped:
            raise ValueError(f"{path}: no usable prompts, all {n_lines} lines skipped; the first: {skipped[0]}")
        raise ValueError(f"{path}:1: empty file, no prompts")
    return IFEvalFile(prompts=prompts, n_lines=n_lines, skipped=skipped)


def load_ifeval(path: str | Path) -> list[IFEvalPrompt]:
    """The prompts of one of our own IFEval-format files, strictly: any problem is a one-line ValueError
    "path:line: what" (read_ifeval(path, strict=False) reads a user's file)."""
    return read_ifeval(path).prompts


def loose_variants(response: str) -> list[str]:
    """IFEval's eight loose variants of a response (see module doc)."""
    lines = response.split("\n")
    cut = [
        response,
        "\n".join(lines[1:]).strip(),
        "\n".join(lines[:-1]).strip(),
        "\n".join(lines[1:-1]).strip(),
    ]
    return cut + [r.replace("*", "") for r in cut]


def check_response(p: IFEvalPrompt, response: str, loose: bool = False) -> list[bool | None]:
    """Per instruction of `p`: True followed, False not, None cannot check.

    Loose: True if any variant passes, else False if any variant could be checked, else None. Blank
    variants (a one-line response less its line) are skipped: they follow nothing and say nothing.
    """
    variants = [response]
    if loose:
        variants += [v for v in loose_variants(response)[1:] if v.strip()]
    results: list[bool | None] = []
    for instruction_id, kwargs in zip(p.instruction_id_list, p.kwargs, strict=True):
        outcomes = [check(instruction_id, kwargs, v) for v in variants]
        if any(o is True for o in outcomes):
            results.append(True)
        elif any(o is False for o in outcomes):
            results.append(False)
        else:
            results.append(None)
    return results


def ifeval_score(prompt: IFEvalPrompt, response: str) -> float | None:
    """Fraction 0..1 of the prompt's checkable instructions followed strictly: a program judge's score.

    None when no instruction could be checked (only possible for language instructions without langdetect).
    """
    checked = [r for r in check_response(prompt, response) if r is not None]
    return sum(checked) / len(checked) if checked else None


def _fraction(hits: int, total: int) -> float | None:
    return hits / total if total else None


def evaluate(prompts: Sequence[IFEvalPrompt], responses: Mapping[int | str, str]) -> IFEvalReport:
    """Scores one response per prompt, looked up by the prompt's key, strictly and loosely.

    Raises ValueError when a prompt has no response; responses for other keys are ignored.
    """
    if not prompts:
        raise ValueError("no prompts to evaluate")
    missing = [p.key for p in prompts if p.key not in responses]
    if missing:
        raise ValueError(f"{len(missing)} prompts have no response, e.g. keys {missing[:5]}")
    results = [
        IFEvalResult(
            key=p.key,
            strict=check_response(p, responses[p.key]),
            loose=check_response(p, responses[p.key], loose=True),
        )
        for p in prompts
    ]
    ids = [i for p in prompts for i in p.instruction_id_list]
    strict = [r for res in results for r in res.strict]
    loose = [r for res in results for r in res.loose]

    def prompt_level(rows: list[list[bool | None]]) -> float | None:
        checkable = [row for row in rows if None not in row]
        return _fraction(sum(all(row) for row in checkable), len(checkable))

    def instruction_level(flat: list[bool | None]) -> float | None:
        checkable = [r for r in flat if r is not None]
        return _fraction(sum(checkable), len(checkable))

    per_instruction = {}
    for instruction_id in sorted(set(ids)):
        s = [r for i, r in zip(ids, strict, strict=True) if i == instruction_id]
        lo = [r for i, r in zip(ids, loose, strict=True) if i == instruction_id]
        per_instruction[instruction_id] = InstructionStats(
            n=len(s), n_uncheckable=s.count(None), strict=instruction_level(s), loose=instruction_level(lo)
        )
    return IFEvalReport(
        prompt_level_strict=prompt_level([r.strict for r in results]),
        instruction_level_strict=instruction_level(strict),
        prompt_level_loose=prompt_level([r.loose for r in results]),
        instruction_level_loose=instruction_level(loose),
        n_prompts=len(prompts),
        n_instructions=len(ids),
        n_uncheckable=strict.count(None),
        n_uncheckable_loose=loose.count(None),
        per_instruction=per_instruction,
        results=results,
    )
