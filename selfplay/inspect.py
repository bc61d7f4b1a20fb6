"""Viewing a run: the per-iteration summary and any stage's records, as tables or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from selfplay.loop import IterationSummary, Run
from selfplay.records import Generation, Judgement, Pair, Prompt, read_records

STAGE_FILES: dict[str, tuple[str, type[BaseModel]]] = {
    "prompts": ("prompts", Prompt),
    "generations": ("generations", Generation),
    "judgements": ("judgements", Judgement),
    "pairs": ("pairs", Pair),
}


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def summary_table(rows: Sequence[IterationSummary], title: str = "selfplay run") -> Table:
    table = Table(title=title)
    for col in ("iter", "prompts", "gens", "tokens", "cut", "parsed", "score", "pairs", "ties",
                "dpo loss", "rew acc", "gen s", "judge s", "train s"):
        table.add_column(col, justify="right")
    for r in rows:
        loss = f"{_fmt(r.loss_first)}→{_fmt(r.loss_last)}" if r.loss_first is not None else "-"
        table.add_row(
            str(r.iteration), str(r.prompts), str(r.generations), _fmt(r.mean_tokens, 0), _fmt(r.cut_at_max, 2),
            _fmt(r.parse_rate, 2), _fmt(r.mean_score, 2), str(r.pairs), str(r.ties), loss, _fmt(r.reward_accuracy, 2),
            _fmt(r.seconds.get("generate"), 0), _fmt(r.seconds.get("judge"), 0), _fmt(r.seconds.get("train"), 0),
        )
    return table


def load_stage(run: Run, k: int, stage: str) -> list[BaseModel]:
    if stage not in STAGE_FILES:
        raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGE_FILES)}")
    stem, cls = STAGE_FILES[stage]
    return read_records(run.paths(k).dir / f"{stem}.jsonl", cls)


def filter_records(records: Sequence[BaseModel], *, min_score: float | None = None, max_score: float | None = None,
                   status: str | None = None) -> list[BaseModel]:
    """Score range applies to records with a score (judgements; pairs by chosen score); status to judgements."""
    out = []
    for r in records:
        score = getattr(r, "score", getattr(r, "chosen_score", None))
        if (min_score is not None or max_score is not None) and score is None:
            continue
        if min_score is not None and score < min_score:
            continue
        if max_score is not None and score > max_score:
            continue
        if status is not None and getattr(r, "status", None) != status:
            continue
        out.append(r)
    return out


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def records_table(records: Sequence[BaseModel], stage: str) -> Table:
    table = Table(title=f"{stage} ({len(records)})")
    match stage:
        case "prompts":
            cols = [("id", lambda r: r.id), ("source", lambda r: r.source), ("text", lambda r: _short(r.text, 90))]
        case "generations":
            cols = [("id", lambda r: r.id), ("tokens", lambda r: str(r.n_tokens)), ("finish", lambda r: r.finish_reason),
                    ("text", lambda r: _short(r.text, 80))]
        case "judgements":
            cols = [("id", lambda r: r.id), ("status", lambda r: r.status), ("score", lambda r: _fmt(r.score, 2)),
                    ("method", lambda r: r.method), ("raw", lambda r: _short(r.raw[0] if r.raw else "", 70))]
        case "pairs":
            cols = [("id", lambda r: r.id), ("margin", lambda r: _fmt(r.margin, 2)), ("chosen", lambda r: _short(r.chosen, 45)),
                    ("rejected", lambda r: _short(r.rejected, 45))]
    for name, _ in cols:
        table.add_column(name)
    for r in records:
        table.add_row(*(get(r) for _, get in cols))
    return table


def print_json(records: Sequence[BaseModel], console: Console | None = None) -> None:
    text = "\n".join(json.dumps(r.model_dump(mode="json"), ensure_ascii=False) for r in records)
    (console or Console()).print(text, markup=False, highlight=False, soft_wrap=True)
