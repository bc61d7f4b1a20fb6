"""Verifiable instruction following, IFEval-style (Zhou et al., 2023): checkers, loader, scores.

    from selfplay.ifeval import load_ifeval, evaluate, ifeval_score
    prompts = load_ifeval("data/ifeval/prompts.jsonl")
    report = evaluate(prompts, {p.key: my_model(p.prompt) for p in prompts})
    report.prompt_level_strict  # 0..1

Pure Python; `langdetect` is optional (without it `language:response_language` is None = cannot check).
"""

from selfplay.ifeval.accuracy import (
    IFEvalPrompt,
    IFEvalReport,
    IFEvalResult,
    InstructionStats,
    check_response,
    evaluate,
    ifeval_score,
    load_ifeval,
    loose_variants,
)
from selfplay.ifeval.checkers import INSTRUCTIONS, check, language_check_available, validate_kwargs

__all__ = [
    "INSTRUCTIONS",
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
    "validate_kwargs",
]
