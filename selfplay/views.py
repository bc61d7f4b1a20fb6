"""Viewing a run: the per-iteration summary and any stage's records, as tables or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from selfplay.errors import SelfplayError
from selfplay.evaluate import IFEvalSummary
from selfplay.records import Generation, Judgement, Pair, Prompt, read_records
from selfplay.rundir import IterationSummary, Run
from selfplay.stats import PairedDiff, change_verdict


class ViewError(SelfplayError, ValueError):
    """A view that cannot be shown as asked (no such stage, sort key, iteration or id); one line saying why."""


STAGE_FILES: dict[str, tuple[str, type[BaseModel]]] = {
    "prompts": ("prompts", Prompt),
    "generations": ("generations", Generation),
    "judgements": ("judgements", Judgement),
    "pairs": ("pairs", Pair),
}


def pct(x: float | None) -> str:
    """A 0..1 fraction as a percentage with one decimal, "-" when missing."""
    return "-" if x is None else f"{100 * x:.1f}"


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def before_after_line(summary: IFEvalSummary, label: str) -> str | None:
    """One line of a closing evaluation: prompt-level strict accuracy at iteration 0 and at the last iteration, the
    paired difference with its 95% interval, and the verdict (an improvement only outside the noise)."""
    by_k = {it.iteration: it for it in summary.iterations}
    if 0 not in by_k or len(by_k) < 2:
        return None
    base, last = by_k[0], by_k[max(by_k)]
    diff = last.vs_base
    change = "-"
    if diff and diff.mean_diff is not None:
        lo, hi = diff.ci_low, diff.ci_high
        interval = f" (95% CI {100 * lo:+.1f}, {100 * hi:+.1f})" if lo is not None and hi is not None else ""
        change = f"{100 * diff.mean_diff:+.1f} points{interval}"
    return (
        f"{label} ({Path(summary.file).name}, {base.n_prompts} prompts), prompt-level strict: "
        f"{pct(base.prompt_level_strict)}% at iteration 0 -> {pct(last.prompt_level_strict)}% at iteration "
        f"{last.iteration}, {change}: {change_verdict(diff)}"
    )


# Columns shown only when some iteration has a value: DPO's implicit-reward accuracy, RL training, the reward model,
# the human seed set.
OPTIONAL_COLUMNS = (
    ("rew acc", lambda r: _fmt(r.reward_accuracy, 2) if r.reward_accuracy is not None else None),
    ("rl reward", lambda r: f"{_fmt(r.rl_reward_first)}→{_fmt(r.rl_reward_last)}" if r.rl_reward_last is not None else None),
    ("kl", lambda r: _fmt(r.kl_last, 3) if r.kl_last is not None else None),
    ("rl unscored", lambda r: _fmt(r.rl_unscored, 2) if r.rl_unscored is not None else None),
    ("rm acc", lambda r: _fmt(r.rm_accuracy, 2) if r.rm_accuracy is not None else None),
    ("human acc", lambda r: _fmt(r.human_accuracy, 2) if r.human_accuracy is not None else None),
    ("human κ", lambda r: _fmt(r.human_kappa, 2) if r.human_kappa is not None else None),
)


def summary_table(rows: Sequence[IterationSummary], title: str = "selfplay run") -> Table:
    """Every cell and the title are Text, never markup: a run name may hold a '['."""
    table = Table(title=Text(title))
    extra = [(name, cell) for name, cell in OPTIONAL_COLUMNS if any(cell(r) is not None for r in rows)]
    for col in (
        "iter",
        "prompts",
        "gens",
        "tokens",
        "cut",
        "parsed",
        "score",
        "pairs",
        "ties",
        "loss",
        *(name for name, _ in extra),
        "gen s",
        "judge s",
        "train s",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        loss = f"{_fmt(r.loss_first)}→{_fmt(r.loss_last)}" if r.loss_first is not None else "-"
        table.add_row(
            str(r.iteration),
            str(r.prompts),
            str(r.generations),
            _fmt(r.mean_tokens, 0),
            _fmt(r.cut_at_max, 2),
            _fmt(r.parse_rate, 2),
            _fmt(r.mean_score, 2),
            str(r.pairs),
            str(r.ties),
            loss,
            *(cell(r) or "-" for _, cell in extra),
            _fmt(r.seconds.get("generate"), 0),
            _fmt(r.seconds.get("judge"), 0),
            _fmt(r.seconds.get("train"), 0),
        )
    return table


def load_stage(run: Run, k: int, stage: str) -> list[BaseModel]:
    if stage not in STAGE_FILES:
        raise ViewError(f"unknown stage {stage!r}; one of {', '.join(STAGE_FILES)}")
    stem, cls = STAGE_FILES[stage]
    return read_records(run.paths(k).dir / f"{stem}.jsonl", cls)


def filter_records(
    records: Sequence[BaseModel], *, min_score: float | None = None, max_score: float | None = None, status: str | None = None
) -> list[BaseModel]:
    """Score range applies to records with a score (judgements; pairs by chosen score); status to judgements."""
    out = []
    for r in records:
        score = getattr(r, "score", getattr(r, "chosen_score", None))
        if score is None:
            if min_score is not None or max_score is not None:
                continue
        elif (min_score is not None and score < min_score) or (max_score is not None and score > max_score):
            continue
        if status is not None and getattr(r, "status", None) != status:
            continue
        out.append(r)
    return out


def select_records(
    run: Run,
    k: int,
    stage: str,
    *,
    min_score: float | None = None,
    max_score: float | None = None,
    status: str | None = None,
    sort: str | None = None,
    descending: bool = False,
    limit: int = 0,
) -> list[BaseModel]:
    """`selfplay inspect RUN -k K`: one stage's records, filtered, then sorted, then the first `limit` (0 = all)."""
    records = filter_records(load_stage(run, k, stage), min_score=min_score, max_score=max_score, status=status)
    if sort:
        records = sort_records(
            records, sort, descending=descending, lengths=generation_lengths(run, k) if sort == "tokens" else None
        )
    return records[: limit or None]


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def records_table(records: Sequence[BaseModel], stage: str) -> Table:
    """Model text is data: cells are Text, so a response holding '[/b]' is shown, not parsed as markup."""
    table = Table(title=Text(f"{stage} ({len(records)})"))
    match stage:
        case "prompts":
            cols = [("id", lambda r: r.id), ("source", lambda r: r.source), ("text", lambda r: _short(r.text, 90))]
        case "generations":
            cols = [
                ("id", lambda r: r.id),
                ("tokens", lambda r: str(r.n_tokens)),
                ("finish", lambda r: r.finish_reason),
                ("text", lambda r: _short(r.text, 80)),
            ]
        case "judgements":
            cols = [
                ("id", lambda r: r.id),
                ("status", lambda r: r.status),
                ("score", lambda r: _fmt(r.score, 2)),
                ("method", lambda r: r.method),
                ("raw", lambda r: _short(r.raw[0] if r.raw else "", 70)),
            ]
        case "pairs":
            cols = [
                ("id", lambda r: r.id),
                ("margin", lambda r: _fmt(r.margin, 2)),
                ("chosen", lambda r: _short(r.chosen, 45)),
                ("rejected", lambda r: _short(r.rejected, 45)),
            ]
    for name, _ in cols:
        table.add_column(name)
    for r in records:
        table.add_row(*(Text(get(r)) for _, get in cols))
    return table


def print_json(records: Sequence[BaseModel], console: Console | None = None) -> None:
    text = "\n".join(json.dumps(r.model_dump(mode="json"), ensure_ascii=False) for r in records)
    (console or Console()).print(text, markup=False, highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------------------------------------
# Sorting, one prompt in full (`selfplay show`), and the same prompts across iterations (`selfplay diff`).

SORT_KEYS = ("score", "tokens", "id")


def sort_records(
    records: Sequence[BaseModel], key: str, *, descending: bool = False, lengths: dict[str, int] | None = None
) -> list[BaseModel]:
    """Sorted by score (judgement score, pair chosen score, as filter_records), tokens (generations; other
    records through `lengths`, generation id -> tokens, by their first generation) or id. Records without
    the key go last, in their original order."""
    if key not in SORT_KEYS:
        raise ViewError(f"unknown sort key {key!r}; one of {', '.join(SORT_KEYS)}")

    def value(r: BaseModel):
        match key:
            case "id":
                return getattr(r, "id", None)
            case "score":
                return getattr(r, "score", getattr(r, "chosen_score", None))
            case "tokens":
                if hasattr(r, "n_tokens"):
                    return r.n_tokens
                gid = (getattr(r, "generation_ids", None) or [getattr(r, "chosen_id", None)])[0]
                return (lengths or {}).get(gid)

    keyed = [(value(r), r) for r in records]
    present = sorted(((v, r) for v, r in keyed if v is not None), key=lambda vr: vr[0], reverse=descending)
    return [r for _, r in present] + [r for v, r in keyed if v is None]


def generation_lengths(run: Run, k: int) -> dict[str, int]:
    path = run.paths(k).generations
    return {g.id: g.n_tokens for g in read_records(path, Generation)} if path.exists() else {}


class CandidateView(BaseModel):
    generation: Generation
    judgements: list[Judgement]  # pointwise judgements of this candidate
    role: str | None  # "chosen" | "rejected" | None (not in the pair)


class PromptView(BaseModel):
    iteration: int
    prompt: Prompt
    candidates: list[CandidateView]
    pairwise: list[Judgement]  # judgements comparing two candidates, in presented order
    pair: Pair | None
    missing: list[str]  # stage files not (yet) written


def _stage_or_empty(run: Run, k: int, stage: str, missing: list[str]) -> list:
    stem, cls = STAGE_FILES[stage]
    path = run.paths(k).dir / f"{stem}.jsonl"
    if not path.exists():
        missing.append(stage)
        return []
    return read_records(path, cls)


def prompt_view(run: Run, k: int, ident: str) -> PromptView:
    """One prompt of iteration k with every candidate, each judgement (raw output and score) and its pair.
    `ident` is a prompt id, or a generation, judgement or pair id of that prompt."""
    missing: list[str] = []
    prompts = _stage_or_empty(run, k, "prompts", missing)
    if "prompts" in missing:
        raise ViewError(f"iteration {k} has no prompts ({run.paths(k).prompts} missing)")
    gens = _stage_or_empty(run, k, "generations", missing)
    judgements = _stage_or_empty(run, k, "judgements", missing)
    pairs = _stage_or_empty(run, k, "pairs", missing)
    by_id = {p.id: p for p in prompts}
    pid = ident if ident in by_id else next((r.prompt_id for r in [*gens, *judgements, *pairs] if r.id == ident), None)
    if pid is None:
        raise ViewError(f"iteration {k}: no prompt, generation, judgement or pair with id {ident!r}")
    pair = next((p for p in pairs if p.prompt_id == pid), None)
    roles = {pair.chosen_id: "chosen", pair.rejected_id: "rejected"} if pair else {}
    mine = [j for j in judgements if j.prompt_id == pid]
    candidates = [
        CandidateView(generation=g, role=roles.get(g.id), judgements=[j for j in mine if j.generation_ids == [g.id]])
        for g in gens
        if g.prompt_id == pid
    ]
    return PromptView(
        iteration=k,
        prompt=by_id[pid],
        candidates=candidates,
        pairwise=[j for j in mine if len(j.generation_ids) > 1],
        pair=pair,
        missing=missing,
    )


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in (text.splitlines() or [""]))


def _judgement_lines(j: Judgement) -> list[str]:
    lines = [
        f"  judgement {j.id}: score {_fmt(j.score, 2)}  ({j.status}, {j.judge}/{j.method}"
        + (f", {j.template}" if j.template else "")
        + ")"
    ]
    for i, (raw, s) in enumerate(zip(j.raw, j.sample_scores + [None] * (len(j.raw) - len(j.sample_scores)), strict=False)):
        lines.append(f"    raw {i + 1} (parsed {_fmt(s, 2)}):")
        lines.append(_indent(raw, "      "))
    return lines


def format_prompt_view(v: PromptView) -> str:
    """Plain text for a terminal (print with markup off: model text may contain [brackets])."""
    out = [f"iteration {v.iteration} · prompt {v.prompt.id} ({v.prompt.source})", _indent(v.prompt.text, "  "), ""]
    if v.missing:
        out += [f"(not written yet: {', '.join(v.missing)})", ""]
    for c in v.candidates:
        g = c.generation
        tag = f"  [{c.role.upper()}]" if c.role else ""
        out.append(f"── {g.id}: {g.n_tokens} tokens, {g.finish_reason}{tag}")
        out.append(_indent(g.text or "(empty)"))
        for j in c.judgements:
            out += _judgement_lines(j)
        out.append("")
    for j in v.pairwise:
        out.append(f"── pairwise {' vs '.join(j.generation_ids)} (first presented first)")
        out += _judgement_lines(j)
        out.append("")
    if v.pair:
        p = v.pair
        out.append(
            f"pair {p.id}: chosen {p.chosen_id} ({_fmt(p.chosen_score, 2)}) over rejected {p.rejected_id} "
            f"({_fmt(p.rejected_score, 2)}), margin {_fmt(p.margin, 2)}"
        )
        if all(c.generation.id != p.chosen_id for c in v.candidates):  # a revision: no generation holds its text
            out.append(f"── {p.chosen_id} [CHOSEN]")
            out.append(_indent(p.chosen or "(empty)"))
    elif "pairs" not in v.missing:
        out.append("pair: none (a tie, too few scores, or dropped by pairing)")
    return "\n".join(out).rstrip() + "\n"


class DiffRow(BaseModel):
    prompt_id: str
    prompt: str
    responses: dict[int, list[str]]  # iteration -> responses (one greedy eval response, or every sample)
    tokens: dict[int, list[int]]


class DiffView(BaseModel):
    iterations: tuple[int, int]
    source: str  # "eval" (greedy responses of each iteration's policy) | "train" (samples on shared training prompts)
    note: str  # one line saying which, for the reader
    rows: list[DiffRow]


def diff_view(run: Run, a: int, b: int) -> DiffView:
    """The same prompts' responses in iterations a and b. Prefers the eval responses (runs/R/eval/, same
    held-out prompts for every iteration, greedy; iteration k = the policy trained in k, 0 = base); else the
    training prompts both iterations drew (only when the pool wrapped; k = samples of the policy of k-1)."""
    ev = run.root / "eval"
    files = {k: ev / f"responses_iter_{k:03d}.jsonl" for k in (a, b)}
    if all(f.exists() for f in files.values()):
        texts = {p.id: p.text for p in read_records(ev / "prompts.jsonl", Prompt)} if (ev / "prompts.jsonl").exists() else {}
        answers = {k: {g.prompt_id: g for g in read_records(f, Generation)} for k, f in files.items()}
        common = sorted(answers[a].keys() & answers[b].keys())
        rows = [
            DiffRow(
                prompt_id=pid,
                prompt=texts.get(pid, ""),
                responses={k: [answers[k][pid].text] for k in (a, b)},
                tokens={k: [answers[k][pid].n_tokens] for k in (a, b)},
            )
            for pid in common
        ]
        note = (
            f"eval responses (greedy, held-out prompts) of the policies of iterations {a} and {b} "
            f"(0 = base model): {len(rows)} prompts in common"
        )
        return DiffView(iterations=(a, b), source="eval", note=note, rows=rows)
    for k in (a, b):
        if not run.paths(k).generations.exists():
            raise ViewError(
                f"iteration {k}: no eval responses ({files[k]}) and no generations "
                f"({run.paths(k).generations}); run `selfplay eval` first"
            )
    prompts = {k: {p.id: p for p in read_records(run.paths(k).prompts, Prompt)} for k in (a, b)}
    gens = {k: read_records(run.paths(k).generations, Generation) for k in (a, b)}
    common = sorted(prompts[a].keys() & prompts[b].keys())
    rows = []
    for pid in common:
        per = {k: sorted((g for g in gens[k] if g.prompt_id == pid), key=lambda g: g.id) for k in (a, b)}
        rows.append(
            DiffRow(
                prompt_id=pid,
                prompt=prompts[a][pid].text,
                responses={k: [g.text for g in per[k]] for k in (a, b)},
                tokens={k: [g.n_tokens for g in per[k]] for k in (a, b)},
            )
        )
    note = (
        f"training prompts drawn by both iterations {a} and {b} (samples of the policies of iterations {a - 1} and {b - 1}): "
        f"{len(rows)} in common"
        + (
            ""
            if rows
            else "; iterations draw fresh prompts until the pool wraps, "
            "so run `selfplay eval` to compare iterations on the same prompts"
        )
    )
    return DiffView(iterations=(a, b), source="train", note=note, rows=rows)


def format_diff_view(v: DiffView, width: int = 400) -> str:
    a, b = v.iterations
    out = [v.note, ""]
    for row in v.rows:
        out.append(f"═══ {row.prompt_id}: {_short(row.prompt, 100)}")
        for k in (a, b):
            for i, (text, n) in enumerate(zip(row.responses[k], row.tokens[k], strict=True)):
                label = f"iteration {k}" + (f" #{i}" if len(row.responses[k]) > 1 else "")
                body = text if len(text) <= width else text[: width - 1] + "…"
                out.append(f"── {label} ({n} tokens)")
                out.append(_indent(body or "(empty)"))
        out.append("")
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------- runs side by side


class CompareRow(BaseModel):
    run: str
    algo: str  # train.algo of the run
    judge: str  # judge.kind of the run
    iteration: int  # 0 = the base model
    trained_on: int | None  # pairs (dpo), or examples (rejection-sft, rest, revision-sft)
    loss_first: float | None
    loss_last: float | None
    prompt_strict: float | None  # held-out IFEval prompt-level strict accuracy, 0..1 (after `selfplay eval`)
    prompt_loose: float | None
    vs_base: PairedDiff | None  # prompt-level strict minus iteration 0's, paired over prompts
    verdict: str  # improved / worse / no measurable change (95% interval), "-" without an evaluation


def compare_runs(runs: Sequence[Run]) -> list[CompareRow]:
    """Every iteration of each run, side by side: what it trained on, its loss, and its held-out IFEval
    accuracy when `selfplay eval` has been run on it (eval/ifeval_summary.json)."""
    rows = []
    for run in runs:
        path = run.root / "eval" / "ifeval_summary.json"
        try:
            evals = (
                {it.iteration: it for it in IFEvalSummary.model_validate_json(path.read_text()).iterations}
                if path.exists()
                else {}
            )
        except ValidationError as err:
            raise ViewError(f"{path}: unreadable ({err.errors()[0]['msg']}); rerun selfplay eval {run.root.name}") from None
        summary = {m.iteration: IterationSummary.from_manifest(m) for m in run.manifests()}
        for k in sorted({0, *summary, *evals}):
            s, e = summary.get(k), evals.get(k)
            rows.append(
                CompareRow(
                    run=run.root.name,
                    algo=run.cfg.train.algo if k else "base",
                    judge=run.cfg.judge.kind,
                    iteration=k,
                    trained_on=(s.examples if s.examples is not None else s.pairs) if s else None,
                    loss_first=s.loss_first if s else None,
                    loss_last=s.loss_last if s else None,
                    prompt_strict=e.prompt_level_strict if e else None,
                    prompt_loose=e.prompt_level_loose if e else None,
                    vs_base=e.vs_base if e else None,
                    verdict=change_verdict(e.vs_base) if e and k else "-",
                )
            )
    return rows


def compare_table(rows: Sequence[CompareRow]) -> Table:
    table = Table(title="runs side by side (held-out IFEval from `selfplay eval`)")
    for col in (
        "run",
        "algo",
        "judge",
        "iter",
        "trained on",
        "loss",
        "prompt strict %",
        "prompt loose %",
        "Δ strict vs 0, points (95% CI)",
        "verdict",
    ):
        table.add_column(col, justify="left" if col in ("run", "algo", "judge", "verdict") else "right")
    for r in rows:
        loss = f"{_fmt(r.loss_first)}→{_fmt(r.loss_last)}" if r.loss_first is not None else "-"
        d = r.vs_base
        delta = (
            "-"
            if d is None or d.mean_diff is None or d.ci_low is None or d.ci_high is None
            else f"{100 * d.mean_diff:+.1f} ({100 * d.ci_low:+.1f}, {100 * d.ci_high:+.1f})"
        )
        cells = (
            r.run,
            r.algo,
            r.judge,
            str(r.iteration),
            "-" if r.trained_on is None else str(r.trained_on),
            loss,
            pct(r.prompt_strict),
            pct(r.prompt_loose),
            delta,
            r.verdict,
        )
        table.add_row(*map(Text, cells))  # a run directory's name is data, never markup
    return table
