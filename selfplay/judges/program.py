"""Program judges: a Python function scores each response (verifiable rewards)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import numbers
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from selfplay.config import JudgeConfig, resolve_data_path
from selfplay.ifeval.revise import complete_sentences
from selfplay.judges.base import JudgeError
from selfplay.records import Generation, Judgement, Prompt, file_hash


@dataclass
class Program:
    spec: str  # "module:function" or "path/to/file.py:function", as configured
    fn: Callable[..., object]
    takes_record: bool  # first parameter annotated `Prompt`: it gets the Prompt record (text + meta)
    hash: str | None  # sha256 of the function's source file, first 12 hex


def _import_module(module: str, spec: str):
    if module.endswith(".py"):
        path = resolve_data_path(module)
        if not path.is_file():
            raise JudgeError(f"judge.program {spec!r}: no such file {path}")
        loader_spec = importlib.util.spec_from_file_location(f"selfplay_program_{path.stem}", path)
        if loader_spec is None or loader_spec.loader is None:
            raise JudgeError(f"judge.program {spec!r}: {path} cannot be imported as a Python module")
        mod = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(mod)
        return mod
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name == module.split(".")[0] and str(Path.cwd()) not in sys.path:  # a module of the user's project
            sys.path.insert(0, str(Path.cwd()))
            return _import_module(module, spec)
        raise


def load_program(spec: str, args: Mapping[str, object] = {}) -> Program:
    """Imports `module:function` by name; checks it can be called as score(prompt, response, **args)."""
    module, sep, name = spec.rpartition(":")
    if not sep or not module or not name:
        raise JudgeError(f"judge.program {spec!r}: expected 'module:function', e.g. selfplay.program_judges:length_bounds")
    try:
        mod = _import_module(module, spec)
    except JudgeError:
        raise
    except Exception as err:  # the user's module may fail in any way while importing
        raise JudgeError(f"judge.program {spec!r}: cannot import {module} ({type(err).__name__}: {err})") from None
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise JudgeError(f"judge.program {spec!r}: {module} has no function {name}")
    try:
        signature = inspect.signature(fn)
        signature.bind("prompt", "response", **args)
    except TypeError as err:
        raise JudgeError(f"judge.program {spec!r}: cannot call {name}(prompt, response, **judge.program_args): {err}") from None
    except ValueError:  # builtins without a signature: trust them
        signature = None
    takes_record = False
    if signature is not None and signature.parameters:
        first = next(iter(signature.parameters.values()))
        try:
            hints = inspect.get_annotations(fn, eval_str=True)
            takes_record = hints.get(first.name) is Prompt
        except Exception:  # an annotation that does not evaluate: compare its spelling
            takes_record = str(first.annotation).rsplit(".", 1)[-1] == "Prompt"
    try:
        source = inspect.getsourcefile(fn)
    except TypeError:
        source = None
    return Program(spec=spec, fn=fn, takes_record=takes_record, hash=file_hash(Path(source)) if source else None)


def run_program(
    program: Program, prompt: Prompt, response: str, args: Mapping[str, object] = {}
) -> tuple[str, float | None, str]:
    """(raw, score, status) for one response. A raise or a non-number is status "error" with the message
    in raw, never a score; None is "unparseable" (the program cannot judge this one)."""
    try:
        value = program.fn(prompt if program.takes_record else prompt.text, response, **args)
    except Exception as err:  # a user's function may fail in any way; the record says how
        return f"raised {type(err).__name__}: {err}", None, "error"
    if value is None:
        return "returned None (cannot judge)", None, "unparseable"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"returned {type(value).__name__} {value!r:.80}, not a number", None, "error"
    if not math.isfinite(float(value)):
        return f"returned {float(value)}, not a finite number", None, "error"
    return repr(float(value)), float(value), "ok"


@dataclass
class ProgramJudge:
    program: Program
    cfg: JudgeConfig

    def judge(self, prompts: Sequence[Prompt], generations: Sequence[Generation]) -> list[Judgement]:
        by_id = {p.id: p for p in prompts}
        out = []
        for g in generations:  # empty responses too: a program can judge emptiness (length_bounds gives 0)
            raw, score, status = run_program(self.program, by_id[g.prompt_id], g.text, self.cfg.program_args)
            out.append(
                Judgement(
                    id=f"{g.id}/j",
                    prompt_id=g.prompt_id,
                    generation_ids=[g.id],
                    judge="program",
                    method="program",
                    raw=[raw],
                    sample_scores=[score],
                    score=score,
                    status=status,
                    template=self.program.spec,
                    template_hash=self.program.hash,
                )
            )
        return out


def program_reviser(revise_spec: str, cfg: JudgeConfig, trim_cut: bool = True):
    """pairing.revise as a `pairing.Reviser`: the revise function rewrites a response (or returns None), and
    the judge's own program scores the revision, so a revision counts only where the judge agrees it is better.

    With `trim_cut` (pairing.revise_trim_cut), a response cut at max_tokens is first trimmed to its last complete
    sentence: an unfinished answer is the first thing to fix, and a revision trained as a whole answer must not
    stop mid-sentence. The trimmed text alone is the revision when the function finds nothing more to change."""

    if cfg.program is None:
        raise JudgeError("pairing.revise needs judge.program: its program scores the revisions")
    revise = load_program(revise_spec)
    judge = load_program(cfg.program, cfg.program_args)

    def reviser(prompt: Prompt, generation: Generation) -> tuple[str, float] | None:
        original = generation.text
        trimmed = complete_sentences(original) if trim_cut and generation.finish_reason == "length" else original
        try:
            text = revise.fn(prompt if revise.takes_record else prompt.text, trimmed)
        except Exception as err:  # a user's function may fail in any way: stop with its message, pairs unwritten
            raise JudgeError(f"pairing.revise {revise_spec!r} raised {type(err).__name__} on {prompt.id}: {err}") from None
        if text is not None and not isinstance(text, str):
            raise JudgeError(
                f"pairing.revise {revise_spec!r} returned {type(text).__name__} for {prompt.id}, not a string or None"
            )
        text = trimmed if text is None else text
        if text == original or not text.strip():
            return None
        _, score, status = run_program(judge, prompt, text, cfg.program_args)
        return (text, score) if status == "ok" and score is not None else None

    return reviser
