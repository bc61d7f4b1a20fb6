"""Verifiable instruction following, IFEval-style (Zhou et al., 2023): checkers, loader, scores.

    from selfplay.ifeval import load_ifeval, evaluate, ifeval_score
    prompts = load_ifeval("data/ifeval/prompts.jsonl")
    report = evaluate(prompts, {p.key: my_model(p.prompt) for p in prompts})
    report.prompt_level_strict  # 0..1
    read_ifeval("theirs.jsonl", strict=False)  # a user's file: unusable lines skipped and named, not fatal

Pure Python; `langdetect` is optional (without it `language:response_language` is None = cannot check).
"""

from selfplay.ifeval.accuracy import (
    IFEvalFile,
    IFEvalPrompt,
    IFEvalReport,
    IFEvalResult,
    InstructionStats,
    check_response,
    evaluate,
    ifeval_score,
    load_ifeval,
    loose_variants,
    read_ifeval,
)
from selfplay.ifeval.checkers import INSTRUCTIONS, check, language_check_available, validate_kwargs

__all__ = [
    "INSTRUCTIONS",
    "IFEvalFile",
    "IFEvalPrompt",
    "IFEvalReport",
    "IFEvalResult",
    "InstructionStats",
    "check",
    "check_response",
    "evaluate",
    "ifeval_score",
    "language_check_available",
    "load_ifeval",
    "loose_variants",
    "read_ifeval",
    "validate_kwargs",
]
