"""Proof that it works: run the proof configs from the same base model, evaluate every iteration on
the held-out split and on the independent set (data/ifeval/independent.jsonl, phrased apart from every training
pool), and write docs/results.md with plots. Numbers come only from the runs on disk.

    python -m selfplay.proof                  # what `make proof` runs
    python -m selfplay.proof --quick          # CI's reduced pipeline check: one config, one iteration, few prompts

A change whose 95% paired-bootstrap interval (over held-out prompts) includes zero is reported as
"no measurable change", never as an improvement; a config is called improved only where its last iteration
improved on both sets (our own split partly measures our wording: data/ifeval/README.md).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel

from selfplay.config import PROJECT_ROOT, load_config, with_overrides
from selfplay.evaluate import (
    EvalError,
    EvalResult,
    EvalSet,
    IFEvalIteration,
    IFEvalSummary,
    eval_path,
    h2h_eval,
    ifeval_eval,
    load_eval_prompts,
    open_comparer,
)
from selfplay.loop import preflight, run_loop
from selfplay.models import resolve_model
from selfplay.program_judges import ifeval
from selfplay.records import (
    TEACHING_FILE,
    Generation,
    Judgement,
    JudgeQuality,
    JudgeTeaching,
    Pair,
    Prompt,
    read_record,
    read_records,
    write_json,
)
from selfplay.rundir import IterationSummary, Run
from selfplay.stats import change_verdict, pearson
from selfplay.views import pct

CONFIGS = ("self-rewarding", "verifiable", "constitution", "self-rewarding-taught")
SETS: tuple[EvalSet, ...] = ("main", "independent")  # eval.ifeval (the held-out split), eval.ifeval_independent
QUICK = [
    "iterations=1",
    "prompts.per_iteration=4",
    "generation.n=2",
    "generation.max_tokens=32",
    "train.min_pairs=1",
    "train.batch_size=2",
    "train.max_length=128",
    "eval.max_prompts=4",
    "eval.max_tokens=32",
]
# --quick for a config that teaches its judge (train.judge_data): a handful of labelled judgements, measured on few.
QUICK_TEACHING = [
    "train.judge.max_prompts=4",
    "train.judge.samples=2",
    "train.judge.max_examples=8",
    "train.judge.measure_prompts=4",
    "train.judge.max_length=256",
    "train.judge.contrast=false",  # the tiny test model's responses all score alike
]


def run_and_evaluate(
    name: str, runs_dir: Path, overrides: list[str], log, base_from: Run | None = None, quick: bool = False
) -> tuple[Run, EvalResult, float]:
    """Run one proof config and evaluate every iteration on both sets. `base_from`: an earlier proof run whose
    iteration-0 responses (of each set) are reused (same base model, greedy; eval_responses regenerates them if
    anything differs)."""
    started = time.monotonic()
    cfg = load_config(PROJECT_ROOT / "configs" / f"proof-{name}.yaml", overrides)
    if quick and cfg.train.judge_data:
        cfg = with_overrides(cfg, QUICK_TEACHING)
    preflight(cfg)
    if not cfg.eval.ifeval_independent:
        raise EvalError(f"proof config {name}: eval.ifeval_independent (the set phrased apart from the pools) is not set")
    root = runs_dir / f"proof-{name}"
    run = Run.open(root, cfg) if (root / "config.yaml").exists() else Run.create(root, cfg)
    rows = run_loop(run, log=log)
    last = rows[-1].iteration
    ks = list(range(0, last + 1))
    for which in SETS:
        mine = eval_path(run, "responses_iter_000.jsonl", which)
        theirs = None if base_from is None else eval_path(base_from, "responses_iter_000.jsonl", which)
        if theirs is not None and theirs.exists() and not mine.exists():
            mine.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(theirs, mine)
    result = EvalResult(
        ifeval=ifeval_eval(run, ks, cfg.eval.ifeval, cfg.eval, log),
        ifeval_independent=ifeval_eval(run, ks, cfg.eval.ifeval_independent, cfg.eval, log, which="independent"),
    )
    if not cfg.eval.prompts:
        raise EvalError(f"proof config {name}: eval.prompts (the held-out prompts for head-to-head) is not set")
    prompts = load_eval_prompts(cfg.eval.prompts)[: cfg.eval.max_prompts]
    with open_comparer(run, cfg.eval) as judge:
        result.h2h.append(h2h_eval(run, last, 0, prompts, judge, cfg.eval, prompts_file=cfg.eval.prompts, log=log))
    return run, result, time.monotonic() - started


def ifeval_of(result: EvalResult, which: EvalSet = "main") -> IFEvalSummary:
    """Every proof config is evaluated on both sets, so its result has both IFEval summaries."""
    summary = result.ifeval if which == "main" else result.ifeval_independent
    if summary is None:
        raise EvalError(f"a proof result without its IFEval summary ({which} set)")
    return summary


def improved_on_both(result: EvalResult) -> bool:
    """The last iteration against iteration 0, prompt-level strict: "improved" (change_verdict: the 95% interval above
    zero) on the held-out split and on the independent set alike. One set alone may be measuring our wording."""
    last = ifeval_of(result).iterations[-1].iteration
    verdicts = [
        next((change_verdict(it.vs_base) for it in ifeval_of(result, which).iterations if it.iteration == last), "-")
        for which in SETS
    ]
    return last > 0 and verdicts == ["improved", "improved"]


def _delta(it: IFEvalIteration) -> str:
    d = it.vs_base
    if d is None or d.mean_diff is None or d.ci_low is None or d.ci_high is None:
        return "-"
    return f"{100 * d.mean_diff:+.1f} ({100 * d.ci_low:+.1f}, {100 * d.ci_high:+.1f})"


def accuracy_table(results: dict[str, EvalResult], which: EvalSet) -> list[str]:
    """Markdown rows: per config and iteration, one set's accuracies and the change against iteration 0."""
    lines = [
        "| config | iteration | prompt strict % | prompt loose % | instr. strict % | instr. loose % "
        "| Δ prompt strict vs iter 0 (95% CI), points | verdict | mean tokens | cut at max |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        for it in ifeval_of(result, which).iterations:
            lines.append(
                f"| {name} | {it.iteration} | {pct(it.prompt_level_strict)} | {pct(it.prompt_level_loose)} | "
                f"{pct(it.instruction_level_strict)} | {pct(it.instruction_level_loose)} | {_delta(it)} | "
                f"{change_verdict(it.vs_base) if it.iteration else 'base'} | {it.mean_tokens} | {it.cut_at_max} |"
            )
    return lines


def _shown(path: str) -> str:
    """A data file as the configs name it: relative to the project root where it lies inside it."""
    p = Path(path)
    return str(p.relative_to(PROJECT_ROOT)) if p.is_absolute() and p.is_relative_to(PROJECT_ROOT) else path


def checked(prompt: Prompt, text: str) -> float:
    """The checkers' score of a response to one of the proof's IFEval prompts (every prompt of their pools is one)."""
    score = ifeval(prompt, text)
    if score is None:
        raise EvalError(f"{prompt.id}: not a checkable (IFEval) prompt")
    return score


def source_commit() -> str:
    """The commit being run, with "+changes" when tracked files differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=PROJECT_ROOT).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def taught_judges(runs: dict[str, Run]) -> dict[str, JudgeTeaching]:
    """The judge-teaching record of each config that taught its judge (train.judge_data)."""
    return {
        name: read_record(run.judge_teaching / TEACHING_FILE, JudgeTeaching)
        for name, run in runs.items()
        if run.cfg.train.judge_data
    }


def teaching_table(teaching: dict[str, JudgeTeaching]) -> list[str]:
    """Markdown lines: what each taught judge learned from, and how it judged before and after, by the checkers."""

    def row(name: str, when: str, q: JudgeQuality | None) -> str:
        if q is None:
            return f"| {name} | {when} | - | - | - | - |"
        a = q.checker_agreement
        pairs = "-" if a is None or a.accuracy is None else f"{pct(a.accuracy)}% (kappa {a.kappa:.2f}, n {a.n})"
        return f"| {name} | {when} | {_r(q.spearman_checkers)} | {pairs} | {_r(q.length_bias)} | {q.scored}/{q.responses} |"

    lines = [
        "Taught judges (`train.judge_data`): labelled judgements learned before iteration 1, and the judge's agreement "
        "with the instruction checkers on sampled responses to prompts it never learned from (`train.judge.measure`):",
        "",
        "| config | judge | rank r with the checkers | picks the checkers' better response (kappa, pairs) "
        "| length bias (rank r with length, beyond the checkers') | scored |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in teaching.items():
        lines.append(row(name, "before teaching", t.before))
        lines.append(row(name, "after teaching", t.after))
    lines += [""]
    for name, t in teaching.items():
        labels = ", ".join(f"{label}: {n}" for label, n in t.label_counts.items())
        lines.append(
            f"- {name}: taught {t.target} `{t.template}` on {t.from_checkers + t.from_seed} judgements "
            f"({t.from_checkers} labelled by the checkers from {t.checker_prompts} train-pool prompts, {t.from_seed} "
            f"from people; verdicts {labels}); {t.train.steps} steps, loss {_r(t.train.loss_first)} -> "
            f"{_r(t.train.loss_last)}, {t.seconds / 60:.0f} min. In the run it judged alone."
        )
    return [*lines, ""]


def _r(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def results_markdown(
    results: dict[str, EvalResult],
    wall_s: float,
    commit: str,
    quick: bool,
    diagnostics: Sequence[str] = (),
    teaching: dict[str, JudgeTeaching] | None = None,
) -> str:
    first = ifeval_of(next(iter(results.values())))
    other = ifeval_of(next(iter(results.values())), "independent")
    lines = [
        "# Results: does a selfplay run make the model better?",
        "",
        f"Measured by `{'python -m selfplay.proof --quick' if quick else 'make proof'}` at commit `{commit}`, "
        f"{datetime.now(timezone.utc):%Y-%m-%d}, on {'this machine' if quick else 'a 2-core CPU'} in {wall_s / 60:.0f} minutes. "
        "Embedded default model (SmolLM2-135M-Instruct), held-out split `data/ifeval/heldout.jsonl` "
        f"({first.iterations[0].n_prompts} prompts, never trained on), greedy responses of at most {first.max_tokens} tokens.",
        "",
        f'Echo baseline (the "response" repeats the prompt): prompt-level strict {pct(first.echo.prompt_level_strict)}%, '
        f"instruction-level strict {pct(first.echo.instruction_level_strict)}%.",
        "",
        *accuracy_table(results, "main"),
        "",
        f"The independent set `{_shown(other.file)}` ({other.iterations[0].n_prompts} prompts, never trained on): new tasks "
        "whose instructions are phrased apart from every training pool, where `heldout.jsonl` shares our wording "
        "(`data/ifeval/README.md`). Echo baseline: prompt-level strict "
        f"{pct(other.echo.prompt_level_strict)}%, instruction-level strict {pct(other.echo.instruction_level_strict)}%.",
        "",
        *accuracy_table(results, "independent"),
        "",
        "Improved, the last iteration against iteration 0 on both sets (prompt-level strict; each 95% interval above zero):",
        "",
    ]
    for name, result in results.items():
        last = [ifeval_of(result, which).iterations[-1] for which in SETS]
        verdict = "improved" if improved_on_both(result) else "not shown to improve on both sets"
        lines.append(
            f"- {name}, iteration {last[0].iteration}: {verdict} "
            f"(held-out {_delta(last[0])}, {change_verdict(last[0].vs_base)}; "
            f"independent {_delta(last[1])}, {change_verdict(last[1].vs_base)})"
        )
    compared = next((h.wins + h.losses + h.ties for r in results.values() for h in r.h2h), 0)
    lines += [
        "",
        f"Head-to-head, last iteration against iteration 0 on the first {compared} held-out prompts, judged in both orders by "
        "the base model with `prompts/pairwise.yaml` (a win needs both orders to agree; ties count half):",
        "",
        "| config | iteration vs 0 | wins | losses | ties | win rate (95% CI) | order-consistent | first-position rate "
        "| calibrated win rate (95% CI) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        for h in result.h2h:
            ci = "-" if h.ci_low is None else f"({pct(h.ci_low)}, {pct(h.ci_high)})"
            vote = f"{pct(h.win_rate)}% {ci}" if h.decides is not False else "cannot decide (first-position bias)"
            c = h.calibrated
            calibrated = (
                "-"
                if c is None
                else f"{pct(c.win_rate)}% " + ("-" if c.ci_low is None else f"({pct(c.ci_low)}, {pct(c.ci_high)})")
            )
            lines.append(
                f"| {name} | {h.iteration} | {h.wins} | {h.losses} | {h.ties} | {vote} | "
                f"{pct(h.consistent)}% | {pct(h.first_position_rate)}% | {calibrated} |"
            )
    lines += ["", "![prompt-level strict accuracy per iteration, held-out split and independent set](results.png)", ""]
    if teaching:
        lines += teaching_table(teaching)
    if diagnostics:
        lines += [
            "What the training pairs taught, by the instruction checkers (`python -m selfplay.proof --diagnostics`):",
            "",
            *diagnostics,
            "",
        ]
    lines += ["What was tried, attempt by attempt, and what each attempt did: `docs/method.md`.", ""]
    return "\n".join(lines)


def pair_diagnostics(runs: dict[str, Run]) -> list[str]:
    """Markdown lines: per config and iteration, what the pairs teach as the instruction checkers see it.
    Every training prompt carries checkable instructions, so each response has a checker score even when
    another judge made the pairs: do chosen responses follow more instructions than rejected ones? A chosen
    side that is a revision (pairing.revise) is no generation: it is checked, and its tokens counted, as text."""
    from transformers import AutoTokenizer

    lines = [
        "| config | iteration | pairs (revisions) | chosen follows more / fewer / same instructions "
        "| judge score ~ checker score, r | chosen − rejected length, tokens | mean checker score of samples |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        tokenizer = None
        for m in run.manifests():
            p = run.paths(m.iteration)
            prompts = {q.id: q for q in read_records(p.prompts, Prompt)}
            gens = {g.id: g for g in read_records(p.generations, Generation)}
            pairs = read_records(p.pairs, Pair)
            check = {gid: checked(prompts[g.prompt_id], g.text) for gid, g in gens.items()}
            revisions = [q for q in pairs if q.chosen_id not in gens]
            if revisions and tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(resolve_model(run.cfg.model))
            for q in revisions:
                check[q.chosen_id] = checked(prompts[q.prompt_id], q.chosen)

            def tokens(gid: str, text: str, gens=gens, tokenizer=tokenizer) -> int:  # this iteration's, bound now
                return gens[gid].n_tokens if gid in gens else len(tokenizer(text, add_special_tokens=False)["input_ids"])

            more = sum(check[q.chosen_id] > check[q.rejected_id] for q in pairs)
            fewer = sum(check[q.chosen_id] < check[q.rejected_id] for q in pairs)
            scored = [
                (j.score, check[j.generation_ids[0]])
                for j in read_records(p.judgements, Judgement)
                if len(j.generation_ids) == 1 and j.score is not None and check.get(j.generation_ids[0]) is not None
            ]
            r = pearson([a for a, _ in scored], [b for _, b in scored])
            gap = sum(tokens(q.chosen_id, q.chosen) - gens[q.rejected_id].n_tokens for q in pairs) / len(pairs) if pairs else None
            known = [v for gid, v in check.items() if gid in gens]
            lines.append(
                f"| {name} | {m.iteration} | {len(pairs)} ({len(revisions)}) | {more} / {fewer} / {len(pairs) - more - fewer} | "
                f"{'-' if r is None else f'{r:.2f}'} | {'-' if gap is None else f'{gap:+.0f}'} | "
                f"{sum(known) / len(known):.3f} |"
            )
    return lines


def plot(results: dict[str, EvalResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    titles = ("held-out split (heldout.jsonl)", "independent set (independent.jsonl)")
    for ax, which, title in zip(axes, SETS, titles, strict=True):
        for offset, (name, result) in enumerate(results.items()):
            its = ifeval_of(result, which).iterations
            xs = [it.iteration + 0.06 * (offset - 1) for it in its]
            ys = [100 * (it.prompt_level_strict or 0) for it in its]
            lo = [y - 100 * it.prompt_strict_ci[0] if it.prompt_strict_ci else 0 for y, it in zip(ys, its, strict=True)]
            hi = [100 * it.prompt_strict_ci[1] - y if it.prompt_strict_ci else 0 for y, it in zip(ys, its, strict=True)]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=name)
        echo = 100 * (ifeval_of(next(iter(results.values())), which).echo.prompt_level_strict or 0)
        ax.axhline(echo, color="grey", linestyle=":", label="echo baseline")
        ax.set_xticks(sorted({it.iteration for r in results.values() for it in ifeval_of(r, which).iterations}))
        ax.set_xlabel("iteration (0 = base model)")
        ax.set_title(title)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("prompt-level strict accuracy, %")
    fig.suptitle("Instruction following on prompts never trained on (95% Wilson intervals)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated proof configs to run")
    parser.add_argument("--quick", action="store_true", help="CI's reduced pipeline check (one iteration, a handful of prompts)")
    parser.add_argument(
        "--runs-dir", type=Path, default=Path("runs"), help="where the proof runs are written (resumed if present)"
    )
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs", help="where results.md and results.png go")
    parser.add_argument("--set", action="append", default=[], help="extra config override for every run (key=value)")
    parser.add_argument("--diagnostics", action="store_true", help="only print the pair diagnostics of the runs on disk")
    args = parser.parse_args(argv)
    names = args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    if args.diagnostics:
        found = {
            n: Run.open(args.runs_dir / f"proof-{n}") for n in names if (args.runs_dir / f"proof-{n}" / "config.yaml").exists()
        }
        print("\n".join(pair_diagnostics(found)))
        return
    overrides = (QUICK if args.quick else []) + args.set
    commit = source_commit()  # taken now: the code that runs, not whatever HEAD is when it ends
    started = time.monotonic()
    results, runs, first = {}, {}, None
    for name in names:
        run, result, seconds = run_and_evaluate(
            name,
            args.runs_dir,
            overrides,
            log=lambda m, n=name: print(f"[{n}] {m}", flush=True),
            base_from=first,
            quick=args.quick,
        )
        first = first or run
        results[name], runs[name] = result, run
        print(f"[{name}] done in {seconds / 60:.1f} min", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    wall_s = time.monotonic() - started
    plot(results, args.out / "results.png")
    (args.out / "results.md").write_text(
        results_markdown(results, wall_s, commit, args.quick, pair_diagnostics(runs), taught_judges(runs)), encoding="utf-8"
    )
    write_json(args.out / "results.json", results_record(results, runs, wall_s, commit, args.quick).model_dump(mode="json"))
    print(f"wrote {args.out / 'results.md'}, {args.out / 'results.json'} and {args.out / 'results.png'}")


class ProofConfigResult(BaseModel):
    """One proof config in results.json: its evaluation and the run's own per-iteration record."""

    evaluation: EvalResult  # IFEval accuracies of both sets with intervals and deltas, head-to-head (vote and calibrated)
    verdicts: dict[int, str]  # iteration -> change_verdict of its delta against iteration 0, held-out split
    verdicts_independent: dict[int, str]  # the same on the independent set
    improved: bool  # the last iteration improved on both sets (improved_on_both): results.md's per-config line
    judge_teaching: JudgeTeaching | None = None  # train.judge_data: what the judge learned from, its quality before/after
    iterations: list[IterationSummary]  # per iteration: pairs, ties, losses, judge agreement, monitors' warnings, seconds


class ProofResults(BaseModel):
    """docs/results.json: every figure of results.md, for machines, from the same run."""

    commit: str
    quick: bool
    wall_s: float
    configs: dict[str, ProofConfigResult]


def results_record(results: dict[str, EvalResult], runs: dict[str, Run], wall_s: float, commit: str, quick: bool) -> ProofResults:
    configs = {
        name: ProofConfigResult(
            evaluation=result,
            verdicts={it.iteration: change_verdict(it.vs_base) for it in ifeval_of(result).iterations if it.iteration},
            verdicts_independent={
                it.iteration: change_verdict(it.vs_base) for it in ifeval_of(result, "independent").iterations if it.iteration
            },
            improved=improved_on_both(result),
            iterations=[IterationSummary.from_manifest(m) for m in runs[name].manifests()],
            judge_teaching=taught_judges({name: runs[name]}).get(name),
        )
        for name, result in results.items()
    }
    return ProofResults(commit=commit, quick=quick, wall_s=round(wall_s, 1), configs=configs)


if __name__ == "__main__":
    main()
