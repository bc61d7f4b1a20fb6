"""Did an iteration make the model better? Verifiable checks (IFEval) and head-to-head judging.

Iteration 0 is the base model; iteration k is the policy trained in iteration k (its train.json names it).
Every evaluation answers with greedy decoding (temperature 0), so a difference between iterations is the
policy's, not the sampler's. Responses are cached per iteration in runs/<name>/eval/ and reused by every
evaluation (and by `selfplay diff`):

    eval/prompts.jsonl                 every evaluated prompt (id -> text), so a cached response is never
                                       reused for a different prompt under the same id
    eval/responses_iter_<k>.jsonl      greedy Generation records of iteration k's policy
    eval/ifeval_iter_<k>.jsonl         per IFEval prompt: response and per-instruction results
    eval/ifeval_summary.json           accuracies per iteration, with the echo baseline beside them
    eval/h2h_iter_<k>_vs_<j>.jsonl     per held-out prompt: both verdicts and the outcome for k
    eval/h2h_summary.json              win rates with 95% intervals
    eval/agreement.json                the judge against human-labelled seed pairs (selfplay.agreement)

The second held-out set, eval.ifeval_independent (data/ifeval/independent.jsonl, phrased apart from every training
pool), has files of its own beside these: prompts_independent.jsonl, responses_independent_iter_<k>.jsonl,
ifeval_independent_iter_<k>.jsonl and ifeval_independent_summary.json (eval_path), so neither set overwrites the
other's responses or accuracies, even where both files use the same keys.

Head-to-head (Zheng et al. 2023, MT-Bench): each prompt is judged twice, iteration k's response first and
then second; k wins only if both orders prefer it, loses only if both prefer the other, and anything else
(disagreement, no verdict, identical responses) is a tie. The judge is the loop's pairwise judge
(selfplay.judges.make_judge, kind pairwise), greedy, one verdict per comparison. Held-out prompts must not
be training prompts of the run: an id or text found in any iter_*/prompts.jsonl is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel

from selfplay.agreement import Agreement, agreement
from selfplay.bestofn import BestOfN, best_of_n, make_scorer, scorer_needs_generator
from selfplay.config import EvalConfig, JudgeConfig, resolve_data_path
from selfplay.errors import SelfplayError
from selfplay.generation import open_generator
from selfplay.ifeval import evaluate, read_ifeval
from selfplay.judges import PairwiseJudge, Verdict, make_judge
from selfplay.models import resolve_model
from selfplay.pool import load_pool
from selfplay.records import (
    Generation,
    Prompt,
    Record,
    TrainResult,
    derive_seed,
    file_hash,
    read_records,
    write_json,
    write_records,
)
from selfplay.rundir import Run
from selfplay.seed import load_seed
from selfplay.stats import PairedDiff, WinRate, paired_bootstrap_diff, wilson_interval, win_rate
from selfplay.templates import Template, TemplateError, load_template

Log = Callable[[str], None]
EvalSet = Literal["main", "independent"]  # eval.ifeval (and head-to-head), or eval.ifeval_independent


class EvalError(SelfplayError, ValueError):
    """An evaluation that cannot run as asked; one line saying why."""


class Comparer(Protocol):
    """Any pairwise judge: which of two responses to `prompt` is better, as presented (None = no verdict)."""

    def compare(self, prompt: str, first: str, second: str) -> Verdict: ...


# ----------------------------------------------------------------------------------------------- records


class IFEvalRow(Record):
    key: int | str
    prompt_id: str  # "ifeval-<key>", the id in its set's responses_iter_<k>.jsonl
    response: str
    n_tokens: int
    finish_reason: str
    instruction_id_list: list[str]
    strict: list[bool | None]  # per instruction; None = cannot check
    loose: list[bool | None]


class IFEvalScores(BaseModel):
    n_prompts: int
    prompt_level_strict: float | None  # 0..1
    instruction_level_strict: float | None
    prompt_level_loose: float | None
    instruction_level_loose: float | None
    prompt_strict_ci: tuple[float, float] | None  # Wilson 95% over prompts whose instructions are all checkable


class IFEvalIteration(IFEvalScores):
    iteration: int
    policy: str
    mean_tokens: float | None
    cut_at_max: float | None  # fraction of responses that hit max_tokens (rambling shows here)
    vs_base: PairedDiff | None = None  # prompt-level strict minus iteration 0's, paired over prompts


class IFEvalSummary(BaseModel):
    file: str
    file_hash: str
    max_tokens: int
    echo: IFEvalScores  # "response" = the prompt itself; a model must beat this to be following instructions
    iterations: list[IFEvalIteration]


class H2HRow(Record):
    prompt_id: str
    k_first: Verdict  # verdict with iteration k's response presented first
    k_second: Verdict  # verdict with iteration k's response presented second
    outcome: Literal["win", "loss", "tie"]  # for iteration k, by the vote: a win needs both orders to agree
    reason: Literal["agree", "inconsistent", "unparseable", "identical"]
    raw: list[str] = []  # judge outputs, both orders, when the judge exposes them
    # Balanced position calibration (Wang et al. 2023, "Large Language Models are not Fair Evaluators"): P(k wins)
    # averaged over both presentations, so a constant pull toward the first (or second) position cancels.
    k_first_p: float | None = None  # P(first-presented wins), k's response first
    k_second_p: float | None = None  # P(first-presented wins), k's response second
    calibrated: float | None = None  # (k_first_p + 1 - k_second_p) / 2: P(k wins); None = an order without a verdict
    calibrated_outcome: Literal["win", "loss", "tie"] | None = None  # by `calibrated` (> 0.5 a win); None = identical


class H2HReport(WinRate):
    iteration: int
    against: int
    prompts_file: str
    judge: str
    consistent: float | None  # judged prompts whose two verdicts agree on content, 0..1
    first_position_rate: float | None  # parsed verdicts that picked the first-presented response, 0..1
    unparseable: int  # verdicts without a parse, of 2 per judged prompt
    identical: int  # prompts where both iterations answered identically (ties, not judged)
    baseline: str | None = None  # set when `against` is not a policy's greedy responses, e.g. "best-of-4 (pointwise)" from 0
    # After calibration: the win rate by each prompt's calibrated preference, and what is left of the position bias
    # once the judge's mean pull (mean P(first wins) - 0.5) is taken out of every comparison.
    calibrated: WinRate | None = None  # it decides where its interval excludes 0.5
    first_position_rate_calibrated: float | None = None  # 0..1, comparisons still picking the first-presented
    consistent_calibrated: float | None = None  # judged prompts whose two calibrated orders name the same winner
    decides: bool | None = None  # the vote: False when the judge picked the first-presented answer in more than
    #                              MAX_FIRST_POSITION of its verdicts: its ties are its bias, not a draw


MAX_FIRST_POSITION = 0.7  # above this share of first-presented picks, the both-orders vote cannot decide


# ----------------------------------------------------------------------------------------- prompts & policy


def eval_dir(run: Run) -> Path:
    return run.root / "eval"


def eval_path(run: Run, name: str, which: EvalSet = "main") -> Path:
    """eval/<name> for the main set; the independent set's files carry "_independent" after their first word
    (responses_independent_iter_001.jsonl, ifeval_independent_summary.json). The main set keeps the names that
    earlier runs, `selfplay diff` and the proof's reuse of iteration-0 responses read."""
    return eval_dir(run) / (name if which == "main" else re.sub(r"^[a-z]+", rf"\g<0>_{which}", name))


def policy_dir(run: Run, k: int) -> Path:
    """Iteration 0 = the run's base model; k = the policy trained in iteration k."""

    if k == 0:
        return resolve_model(run.cfg.model)
    train = run.paths(k).train
    if not train.exists():
        raise EvalError(f"iteration {k} has no trained policy ({train} missing); evaluate finished iterations")
    return Path(TrainResult.model_validate_json(train.read_text()).policy)


def trained_iterations(run: Run) -> list[int]:
    """0 and every iteration with a trained (or carried-over) policy, ascending."""
    return [0] + sorted(int(p.parent.parent.name.removeprefix("iter_")) for p in run.root.glob("iter_*/policy/train.json"))


def training_prompts(run: Run) -> dict[str, str]:
    """id -> text of every prompt any iteration of the run trained on."""
    out: dict[str, str] = {}
    for path in sorted(run.root.glob("iter_*/prompts.jsonl")):
        out.update({p.id: p.text for p in read_records(path, Prompt)})
    return out


def check_held_out(run: Run, prompts: Sequence[Prompt], source: str) -> None:
    """Refuses prompts that the run trained on (same id or same text): they would flatter the policy."""
    seen = training_prompts(run)
    texts = {" ".join(t.split()) for t in seen.values()}
    clash = [p.id for p in prompts if p.id in seen or " ".join(p.text.split()) in texts]
    if clash:
        raise EvalError(
            f"{source}: {len(clash)} of {len(prompts)} prompts are training prompts of run {run.root.name} "
            f"(e.g. {', '.join(clash[:3])}); evaluate on held-out prompts"
        )


def load_eval_prompts(path: str | Path) -> list[Prompt]:
    """Held-out prompts in our pool format or IFEval's (ids 'ifeval-<key>', as in the loop)."""

    return load_pool(path)


def ifeval_prompts(path: str | Path, log: Log = lambda _: None):
    """An IFEval-format file read leniently (it may be a user's or IFEval's own): a line that cannot be checked is
    skipped, and one log line says how many and why."""
    path = resolve_data_path(str(path))
    try:
        read = read_ifeval(path, strict=False)
    except ValueError as err:
        raise EvalError(str(err)) from None
    if read.skipped:
        shown = "; ".join("line " + s.removeprefix(f"{path}:") for s in read.skipped[:3])
        more = f"; and {len(read.skipped) - 3} more" if len(read.skipped) > 3 else ""
        log(f"eval: {path}: skipped {len(read.skipped)} of {read.n_lines} lines that cannot be checked ({shown}{more})")
    items = read.prompts
    prompts = [
        Prompt(
            id=f"ifeval-{p.key}",
            text=p.prompt,
            source="ifeval",
            meta={"instruction_id_list": p.instruction_id_list, "kwargs": p.kwargs},
        )
        for p in items
    ]
    return path, items, prompts


# -------------------------------------------------------------------------------------------- responses


def greedy_config(run: Run, cfg: EvalConfig):
    return run.cfg.generation.model_copy(update={"temperature": 0.0, "max_tokens": cfg.max_tokens})


def _register_prompts(run: Run, prompts: Sequence[Prompt], which: EvalSet) -> None:
    path = eval_path(run, "prompts.jsonl", which)
    known = {p.id: p for p in read_records(path, Prompt)} if path.exists() else {}
    for p in prompts:
        if p.id in known and known[p.id].text != p.text:
            raise EvalError(
                f"prompt id {p.id!r} was evaluated before with other text ({path}); "
                "give your prompts distinct ids, or delete that run's eval/ folder"
            )
    new = [p for p in prompts if p.id not in known]
    if new:
        write_records(path, [*known.values(), *new])


def eval_responses(
    run: Run, k: int, prompts: Sequence[Prompt], cfg: EvalConfig, log: Log = lambda _: None, which: EvalSet = "main"
) -> dict[str, Generation]:
    """Greedy responses of iteration k's policy to `prompts`, by prompt id; cached in `which` set's file, generated
    only when missing or stale (other policy or max_tokens)."""
    _register_prompts(run, prompts, which)
    path = eval_path(run, f"responses_iter_{k:03d}.jsonl", which)
    cached = {g.prompt_id: g for g in read_records(path, Generation)} if path.exists() else {}
    model = policy_dir(run, k)
    fresh = {
        pid: g for pid, g in cached.items() if g.policy == str(model) and g.max_tokens == cfg.max_tokens and g.temperature == 0.0
    }
    todo = [p for p in prompts if p.id not in fresh]
    if todo:
        log(f"eval: iteration {k}{'' if which == 'main' else f' ({which} set)'}: {len(todo)} greedy responses from {model}")
        with open_generator(greedy_config(run, cfg), model, derive_seed(run.cfg.seed, "eval", k)) as gen:
            for g in gen.generate(todo, n=1):
                fresh[g.prompt_id] = g
        keep = sorted({**cached, **fresh}.values(), key=lambda g: g.prompt_id)
        write_records(path, keep)
    return {p.id: fresh[p.id] for p in prompts}


# ---------------------------------------------------------------------------------------------- IFEval


def _scores(report, n_prompts: int) -> IFEvalScores:
    checkable = [r for r in report.results if None not in r.strict]
    ci = wilson_interval(sum(all(r.strict) for r in checkable), len(checkable)) if checkable else None
    return IFEvalScores(
        n_prompts=n_prompts,
        prompt_level_strict=report.prompt_level_strict,
        instruction_level_strict=report.instruction_level_strict,
        prompt_level_loose=report.prompt_level_loose,
        instruction_level_loose=report.instruction_level_loose,
        prompt_strict_ci=ci,
    )


def _prompt_pass(report) -> list[float]:
    """Per prompt: 1 if every instruction followed strictly (an uncheckable one counts as not followed)."""
    return [1.0 if all(x is True for x in r.strict) else 0.0 for r in report.results]


def ifeval_eval(
    run: Run,
    iterations: Sequence[int],
    ifeval_file: str | Path,
    cfg: EvalConfig,
    log: Log = lambda _: None,
    which: EvalSet = "main",
) -> IFEvalSummary:
    """Prompt- and instruction-level accuracy, strict and loose, of each iteration's greedy responses to an
    IFEval-format file, beside the echo baseline (response = the prompt; docs/design.md: it passes ~25%).
    `which`: the set whose files in eval/ hold the responses, rows and summary (eval_path)."""

    path, items, prompts = ifeval_prompts(ifeval_file, log)
    check_held_out(run, prompts, str(path))
    echo = _scores(evaluate(items, {p.key: p.prompt for p in items}), len(items))
    summary_path = eval_path(run, "ifeval_summary.json", which)
    digest = file_hash(path)
    earlier: dict[int, IFEvalIteration] = {}
    if summary_path.exists():
        old = IFEvalSummary.model_validate_json(summary_path.read_text())
        if old.file_hash == digest and old.max_tokens == cfg.max_tokens:
            earlier = {it.iteration: it for it in old.iterations}
    base_pass: list[float] | None = None
    base_rows = eval_path(run, f"ifeval_iter_{0:03d}.jsonl", which)
    for k in sorted(set(iterations)):
        responses = eval_responses(run, k, prompts, cfg, log, which)
        report = evaluate(items, {p.key: responses[q.id].text for p, q in zip(items, prompts, strict=True)})
        rows = [
            IFEvalRow(
                key=p.key,
                prompt_id=q.id,
                response=responses[q.id].text,
                n_tokens=responses[q.id].n_tokens,
                finish_reason=responses[q.id].finish_reason,
                instruction_id_list=p.instruction_id_list,
                strict=r.strict,
                loose=r.loose,
            )
            for p, q, r in zip(items, prompts, report.results, strict=True)
        ]
        write_records(eval_path(run, f"ifeval_iter_{k:03d}.jsonl", which), rows)
        passes = _prompt_pass(report)
        if k == 0:
            base_pass = passes
        elif base_pass is None and 0 in earlier and base_rows.exists():
            base_pass = [1.0 if all(x is True for x in r.strict) else 0.0 for r in read_records(base_rows, IFEvalRow)]
        gens = [responses[q.id] for q in prompts]
        earlier[k] = IFEvalIteration(
            **_scores(report, len(items)).model_dump(),
            iteration=k,
            policy=gens[0].policy,
            mean_tokens=round(sum(g.n_tokens for g in gens) / len(gens), 1),
            cut_at_max=round(sum(g.finish_reason == "length" for g in gens) / len(gens), 3),
            vs_base=paired_bootstrap_diff(passes, base_pass, n_boot=cfg.bootstrap, seed=derive_seed(run.cfg.seed, "ifeval", k))
            if k > 0 and base_pass is not None and len(base_pass) == len(passes)
            else None,
        )
    summary = IFEvalSummary(
        file=str(path), file_hash=digest, max_tokens=cfg.max_tokens, echo=echo, iterations=[earlier[k] for k in sorted(earlier)]
    )
    write_json(summary_path, summary.model_dump(mode="json"))
    return summary


# ----------------------------------------------------------------------------------------- head-to-head


def load_pairwise_template(name: str) -> Template:
    """The head-to-head judge's template, refused with an evaluation error unless it is a pairwise one."""
    try:
        template = load_template(name)
    except TemplateError as err:
        raise EvalError(f"head-to-head judge: {err}") from None
    if template.kind != "pairwise":
        raise EvalError(f"template {template.ref} is a {template.kind} template; head-to-head needs a pairwise one")
    return template


def _compare_all(judge: Comparer, items: list[tuple[str, str, str]]) -> list[tuple[Verdict, str | None, float | None]]:
    """(verdict, raw output, P(first wins)) per comparison: batched where the judge can (an engine batches), else
    one call a comparison; P(first wins) from the judge's preferences where it gives them, else 1 or 0."""
    if not items:
        return []
    preferences = getattr(judge, "preferences", None)
    if preferences is not None:
        return [(_verdict(p), raw, p) for p, raw in preferences(items)]
    many = getattr(judge, "compare_many", None)
    pairs = list(many(items)) if many is not None else [(judge.compare(*item), None) for item in items]
    return [(v, raw, None if v is None else 1.0 if v == "first" else 0.0) for v, raw in pairs]


def _verdict(p_first: float | None) -> Verdict:
    return None if p_first is None or p_first == 0.5 else "first" if p_first > 0.5 else "second"


def _by_preference(p_k: float | None) -> Literal["win", "loss", "tie"]:
    return "tie" if p_k is None or p_k == 0.5 else "win" if p_k > 0.5 else "loss"


def _outcome(k_first: Verdict, k_second: Verdict) -> tuple[str, str]:
    if k_first is None or k_second is None:
        return "tie", "unparseable"
    if k_first == "first" and k_second == "second":
        return "win", "agree"
    if k_first == "second" and k_second == "first":
        return "loss", "agree"
    return "tie", "inconsistent"


def judge_name(judge: Comparer) -> str:
    return getattr(judge, "name", type(judge).__name__)


def h2h_eval(
    run: Run,
    k: int,
    against: int,
    prompts: Sequence[Prompt],
    judge: Comparer,
    cfg: EvalConfig | None = None,
    prompts_file: str = "",
    log: Log = lambda _: None,
    baseline: tuple[str, dict[str, Generation]] | None = None,
) -> H2HReport:
    """Iteration k against iteration `against` (0 = base) on held-out prompts, judged in both orders.

    Responses come from the eval cache; missing ones are generated here. To keep one engine at a time,
    generate them before opening the judge's engine (run_eval does). `baseline`: (name, responses by prompt
    id) to compare with instead of iteration `against`'s greedy responses, e.g. best-of-N from the base.
    """
    cfg = cfg or run.cfg.eval
    if not prompts:
        raise EvalError("head-to-head: no prompts")
    check_held_out(run, prompts, prompts_file or "held-out prompts")
    mine = eval_responses(run, k, prompts, cfg, log)
    theirs = baseline[1] if baseline else eval_responses(run, against, prompts, cfg, log)
    missing = [p.id for p in prompts if p.id not in theirs]
    if missing:
        raise EvalError(f"head-to-head: the baseline has no response to {len(missing)} prompt(s), e.g. {missing[0]}")
    to_judge = [p for p in prompts if mine[p.id].text != theirs[p.id].text]
    items = [(p.text, mine[p.id].text, theirs[p.id].text) for p in to_judge] + [
        (p.text, theirs[p.id].text, mine[p.id].text) for p in to_judge
    ]
    log(
        f"eval: iteration {k} vs {against}: judging {len(to_judge)} prompts in both orders "
        f"({len(prompts) - len(to_judge)} identical)"
    )
    verdicts = _compare_all(judge, items)
    n = len(to_judge)
    judged = {p.id: (verdicts[i], verdicts[n + i]) for i, p in enumerate(to_judge)}
    rows = []
    for p in prompts:
        if p.id not in judged:
            rows.append(H2HRow(prompt_id=p.id, k_first=None, k_second=None, outcome="tie", reason="identical"))
            continue
        (v1, raw1, p1), (v2, raw2, p2) = judged[p.id]
        # Verdicts are positional; in the second order k's response is "second".
        outcome, reason = _outcome(v1, v2)
        calibrated = None if p1 is None or p2 is None else (p1 + 1.0 - p2) / 2
        rows.append(
            H2HRow(
                prompt_id=p.id,
                k_first=v1,
                k_second=v2,
                outcome=outcome,
                reason=reason,
                raw=[r for r in (raw1, raw2) if r is not None],
                k_first_p=p1,
                k_second_p=p2,
                calibrated=calibrated,
                calibrated_outcome=_by_preference(calibrated),
            )
        )
    tag = f"{against:03d}" + (f"_{_slug(baseline[0])}" if baseline else "")
    write_records(eval_dir(run) / f"h2h_iter_{k:03d}_vs_{tag}.jsonl", rows)
    parsed = [v for v, _, _ in verdicts if v is not None]
    both = [r for r in rows if r.reason != "identical"]
    seed = derive_seed(run.cfg.seed, "h2h", k, against)
    wr = win_rate([r.outcome for r in rows], n_boot=cfg.bootstrap, seed=seed)
    calibrated_wr = win_rate([r.calibrated_outcome or "tie" for r in rows], n_boot=cfg.bootstrap, seed=seed)
    first_rate = sum(v == "first" for v in parsed) / len(parsed) if parsed else None
    first_after, consistent_after = position_after_calibration(both)
    report = H2HReport(
        **wr.model_dump(),
        iteration=k,
        against=against,
        prompts_file=prompts_file,
        judge=judge_name(judge),
        consistent=sum(r.reason == "agree" for r in both) / len(both) if both else None,
        first_position_rate=first_rate,
        unparseable=len(verdicts) - len(parsed),
        identical=len(rows) - len(both),
        baseline=baseline[0] if baseline else None,
        calibrated=calibrated_wr,
        first_position_rate_calibrated=first_after,
        consistent_calibrated=consistent_after,
        decides=None if first_rate is None else first_rate <= MAX_FIRST_POSITION,
    )
    _update_h2h_summary(run, report)
    return report


def position_after_calibration(rows: Sequence[H2HRow]) -> tuple[float | None, float | None]:
    """(first-position rate, order agreement) of judged prompts once the judge's mean pull toward the first position
    (mean P(first wins) over every comparison, less 0.5) is taken out of each comparison. A judge whose preferences
    are one constant pull plus content comes out near 0.5 and near full agreement; one that reads only position
    stays far from both. Pure."""
    ps = [p for r in rows for p in (r.k_first_p, r.k_second_p) if p is not None]
    if not ps:
        return None, None
    shift = sum(ps) / len(ps) - 0.5
    decided = [p - shift for p in ps if p - shift != 0.5]
    first = sum(p > 0.5 for p in decided) / len(decided) if decided else None
    pairs = [(r.k_first_p - shift, r.k_second_p - shift) for r in rows if r.k_first_p is not None and r.k_second_p is not None]
    # k wins the first order when its (first-presented) preference is above 0.5, the second when the other's is below.
    agree = [(a > 0.5) == (b < 0.5) for a, b in pairs if a != 0.5 and b != 0.5]
    return first, (sum(agree) / len(agree) if agree else None)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def bestofn_baseline(
    run: Run, prompts: Sequence[Prompt], cfg: EvalConfig, log: Log = lambda _: None
) -> tuple[str, dict[str, Generation]]:
    """Best-of-N from the base model on held-out prompts: cfg.best_of_n samples each with the run's sampling
    settings, the scorer's pick. Every candidate and the pick go to eval/bestofn.jsonl (reused when the
    prompts, N and scorer match). A prompt with no scored candidate answers with its first sample."""

    n, spec = cfg.best_of_n, cfg.best_of_n_scorer
    if n is None:
        raise EvalError("best-of-N needs eval.best_of_n, the number of samples per prompt")
    name = f"best-of-{n} ({spec}) from 0"
    path = eval_dir(run) / "bestofn.jsonl"
    records = read_records(path, BestOfN) if path.exists() else []
    if [r.prompt_id for r in records] != [p.id for p in prompts] or any(
        r.scorer != spec or len(r.candidates) != n for r in records
    ):
        log(f"eval: {name}: {n} samples for each of {len(prompts)} prompts, scored by {spec}")
        with open_generator(run.cfg.generation, policy_dir(run, 0), derive_seed(run.cfg.seed, "eval-best-of-n")) as gen:
            score = make_scorer(spec, gen if scorer_needs_generator(spec) else None)
            records, _ = best_of_n(gen, prompts, n, score, spec)
        write_records(path, records)
    out = {}
    for r in records:
        c = next((c for c in r.candidates if c.id == r.pick), r.candidates[0] if r.candidates else None)
        if c is not None:
            out[r.prompt_id] = Generation(
                id=c.id,
                prompt_id=r.prompt_id,
                text=c.text,
                n_prompt_tokens=0,
                n_tokens=c.n_tokens,
                finish_reason=c.finish_reason,
                temperature=run.cfg.generation.temperature,
                top_p=run.cfg.generation.top_p,
                max_tokens=run.cfg.generation.max_tokens,
                seed=0,
                policy=name,
                backend=run.cfg.generation.backend,
            )
    return name, out


def _update_h2h_summary(run: Run, report: H2HReport) -> None:
    path = eval_dir(run) / "h2h_summary.json"
    table = json.loads(path.read_text()) if path.exists() else {}
    key = f"{report.iteration}_vs_{report.against}" + (f"_{_slug(report.baseline)}" if report.baseline else "")
    table[key] = report.model_dump(mode="json")
    write_json(path, table)


def read_h2h_summary(run: Run) -> list[H2HReport]:
    path = eval_dir(run) / "h2h_summary.json"
    if not path.exists():
        return []
    reports = [H2HReport.model_validate(v) for v in json.loads(path.read_text()).values()]
    return sorted(reports, key=lambda r: (r.iteration, r.against))


def read_ifeval_summary(run: Run, which: EvalSet = "main") -> IFEvalSummary | None:
    path = eval_path(run, "ifeval_summary.json", which)
    return IFEvalSummary.model_validate_json(path.read_text()) if path.exists() else None


def read_agreement(run: Run) -> Agreement | None:
    path = eval_dir(run) / "agreement.json"
    return Agreement.model_validate_json(path.read_text()) if path.exists() else None


# ------------------------------------------------------------------------------------ judge vs humans


def agreement_eval(run: Run, seed_file: str | Path, judge: Comparer, cfg: EvalConfig | None = None) -> Agreement:
    """How often the judge prefers the human's choice, each pair in both orders (so the person's choice is
    first half the time and kappa's chance agreement is near 1/2, not the trivial 1); selfplay.agreement."""

    cfg = cfg or run.cfg.eval
    path = resolve_data_path(str(seed_file))
    pairs = load_seed(path).pairs  # JSONL or a Label Studio export, checked line by line (selfplay.seed)
    if not pairs:
        raise EvalError(f"{path}: no seed pairs")
    items = [(s.prompt, s.chosen, s.rejected) for s in pairs] + [(s.prompt, s.rejected, s.chosen) for s in pairs]
    compared = _compare_all(judge, items)
    verdicts = [v for v, _, _ in compared]
    n = len(pairs)
    # Calibrated: P(the person's choice wins) averaged over both orders; in the second order it is presented second.
    both = [(compared[i][2], compared[n + i][2]) for i in range(n)]
    calibrated = [(p1 + 1.0 - p2) / 2 for p1, p2 in both if p1 is not None and p2 is not None]
    parsed = [v for v in verdicts if v is not None]
    report = agreement(
        verdicts,
        ["first"] * n + ["second"] * n,
        list(range(n)) * 2,
        n_boot=cfg.bootstrap,
        seed=derive_seed(run.cfg.seed, "agreement"),
        file=str(seed_file),
        judge=judge_name(judge),
    ).model_copy(
        update={
            "first_position_rate": sum(v == "first" for v in parsed) / len(parsed) if parsed else None,
            "calibrated_accuracy": sum(1.0 if c > 0.5 else 0.5 if c == 0.5 else 0.0 for c in calibrated) / len(calibrated)
            if calibrated
            else None,
        }
    )
    write_json(eval_dir(run) / "agreement.json", report.model_dump(mode="json"))
    return report


# ------------------------------------------------------------------------------------------ orchestration


def judge_model_dir(run: Run, cfg: EvalConfig) -> Path:
    """The evaluation judge: eval.judge_model, else the run's judge model, else the run's base model —
    never a policy under comparison judging itself."""

    return resolve_model(cfg.judge_model or run.cfg.judge.model or run.cfg.model)


def h2h_judge(gen, cfg: EvalConfig) -> PairwiseJudge:
    """The head-to-head judge: the loop's pairwise judge (make_judge) on `gen` (a Generator), greedy, one
    verdict per comparison, with eval.judge_template and eval.judge_method."""
    load_pairwise_template(cfg.judge_template)  # a wrong kind or a missing file, said as an evaluation error
    judge_cfg = JudgeConfig(
        kind="pairwise",
        template=cfg.judge_template,
        method=cfg.judge_method,
        samples=1,
        temperature=0.0,
        max_tokens=cfg.judge_max_tokens,
    )
    try:
        judge = make_judge(judge_cfg, gen)
    except TemplateError as err:
        raise EvalError(f"head-to-head judge: {err}") from None
    assert isinstance(judge, PairwiseJudge)  # judge.kind=pairwise
    return judge


@contextmanager
def open_comparer(run: Run, cfg: EvalConfig) -> Iterator[PairwiseJudge]:

    h2h_judge(None, cfg)  # a bad template fails before an engine starts
    gen_cfg = run.cfg.generation.model_copy(update={"temperature": 0.0, "max_tokens": cfg.judge_max_tokens})
    with open_generator(gen_cfg, judge_model_dir(run, cfg), derive_seed(run.cfg.seed, "eval-judge")) as gen:
        yield h2h_judge(gen, cfg)


def h2h_plan(iterations: Sequence[int]) -> list[tuple[int, int]]:
    """Each k > 0 against the base (0) and against k-1 when that is not the base."""
    ks = sorted(set(iterations))
    plan = [(k, 0) for k in ks if k > 0]
    plan += [(k, k - 1) for k in ks if k > 1]
    return plan


class EvalResult(BaseModel):
    ifeval: IFEvalSummary | None = None
    ifeval_independent: IFEvalSummary | None = None  # eval.ifeval_independent, the set phrased apart from the pools
    h2h: list[H2HReport] = []
    agreement: Agreement | None = None


def run_eval(
    run: Run,
    *,
    iterations: Sequence[int] | None = None,
    ifeval_file: str | None = None,
    independent_file: str | None = None,
    prompts_file: str | None = None,
    seed_file: str | None = None,
    cfg: EvalConfig | None = None,
    log: Log = lambda _: None,
) -> EvalResult:
    """What `selfplay eval` does: IFEval on the main set and on the independent one, then head-to-head and judge
    agreement (one engine at a time: every policy's responses first, then the judge)."""
    cfg = cfg or run.cfg.eval
    available = trained_iterations(run)
    ks = sorted(set(iterations)) if iterations else available
    missing = [k for k in ks if k not in available]
    if missing:
        raise EvalError(
            f"iteration(s) {', '.join(map(str, missing))} have no trained policy; available: {', '.join(map(str, available))}"
        )
    result = EvalResult()
    if ifeval_file:
        result.ifeval = ifeval_eval(run, ks, ifeval_file, cfg, log)
    if independent_file:
        result.ifeval_independent = ifeval_eval(run, ks, independent_file, cfg, log, which="independent")
    plan = h2h_plan(ks) if prompts_file else []
    if prompts_file and not plan:
        raise EvalError("head-to-head needs at least one trained iteration besides 0")
    prompts: list[Prompt] = []
    baseline = None
    if plan and prompts_file:  # plan is empty without a prompts file
        prompts = load_eval_prompts(prompts_file)[: cfg.max_prompts]
        check_held_out(run, prompts, prompts_file)
        for k in sorted({k for pair in plan for k in pair}):
            eval_responses(run, k, prompts, cfg, log)
        if cfg.best_of_n:
            baseline = bestofn_baseline(run, prompts, cfg, log)
    if plan or seed_file:
        with open_comparer(run, cfg) as judge:
            for k, against in plan:
                result.h2h.append(h2h_eval(run, k, against, prompts, judge, cfg, prompts_file=str(prompts_file), log=log))
            for k in sorted({k for k, _ in plan}) if baseline else []:
                result.h2h.append(
                    h2h_eval(run, k, 0, prompts, judge, cfg, prompts_file=str(prompts_file), log=log, baseline=baseline)
                )
            if seed_file:
                result.agreement = agreement_eval(run, seed_file, judge, cfg)
    return result


def evaluate_after_run(run: Run, log: Log = lambda _: None) -> EvalResult | None:
    """The run's closing evaluation (eval.after_run): iteration 0 against the last trained iteration on the
    held-out IFEval set and, when configured, the independent one. None when no iteration trained a policy."""
    ks = trained_iterations(run)
    if len(ks) < 2:
        return None
    cfg = run.cfg.eval
    return run_eval(
        run, iterations=[0, ks[-1]], ifeval_file=cfg.ifeval, independent_file=cfg.ifeval_independent, cfg=cfg, log=log
    )
