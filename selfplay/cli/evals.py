"""Measuring runs: `eval`, `compare`, `report`, and the best-of-N baseline (`best-of-n`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from selfplay.bestofn import best_of_n_file
from selfplay.cli.common import RunArg, guard, open_run, out_dir
from selfplay.config import ConfigError, EvalConfig, parse_overrides
from selfplay.evaluate import MAX_FIRST_POSITION, EvalResult, IFEvalSummary, run_eval
from selfplay.report import write_report
from selfplay.views import compare_runs, compare_table

app = typer.Typer()

JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object instead of text, for scripts")]


def _print_json(obj) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=None))


def parse_iterations(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        ks = [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise ConfigError(f"--iterations {text!r}: expected iteration numbers like 0,1,3") from None
    if any(k < 0 for k in ks):
        raise ConfigError(f"--iterations {text!r}: iterations are 0 (base model) or more")
    return ks


def eval_config(cfg: EvalConfig, overrides: list[str], max_tokens: int | None = None) -> EvalConfig:
    """The run's EvalConfig with `--set eval.KEY=VALUE` overrides (the `eval.` prefix may be left out)."""
    tree = cfg.model_dump()
    for key, value in parse_overrides(overrides):
        tree[key.removeprefix("eval.")] = value
    if max_tokens is not None:
        tree["max_tokens"] = max_tokens
    try:
        return EvalConfig.model_validate(tree)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ConfigError(
            f"--set eval.{where}: {'unknown key' if first['type'] == 'extra_forbidden' else first['msg']}"
        ) from None


@app.command(name="eval")
@guard
def eval_(
    run: RunArg,
    ifeval: Annotated[
        str | None, typer.Option("--ifeval", help="IFEval-format JSONL to score (default: eval.ifeval of the run config)")
    ] = None,
    independent: Annotated[
        str | None,
        typer.Option(
            "--independent",
            help="a second IFEval-format held-out set, phrased apart from the train pools, scored beside the first "
            "(default: eval.ifeval_independent of the run config)",
        ),
    ] = None,
    no_ifeval: Annotated[bool, typer.Option("--no-ifeval", help="skip the instruction-following evaluation (both sets)")] = False,
    prompts: Annotated[
        str | None,
        typer.Option(
            "--prompts", help="held-out prompts (pool or IFEval format) for head-to-head; never the run's training prompts"
        ),
    ] = None,
    seed: Annotated[
        str | None,
        typer.Option("--seed", help="human-labelled pairs {prompt, chosen, rejected} to measure the judge's agreement"),
    ] = None,
    iterations: Annotated[
        str | None,
        typer.Option(
            "--iterations", "-i", help="iterations to evaluate, e.g. 0,2,3 (0 = base model; default: 0 and every trained one)"
        ),
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", min=1, help="new tokens per greedy response (default: eval.max_tokens)")
    ] = None,
    best_of_n: Annotated[
        int | None,
        typer.Option(
            "--best-of-n", min=2, help="head-to-head also against best-of-N from the base model (default: eval.best_of_n)"
        ),
    ] = None,
    scorer: Annotated[
        str | None,
        typer.Option(
            "--scorer",
            help="best-of-N scorer: pointwise[:TEMPLATE], pairwise[:TEMPLATE], program:MODULE:FUNCTION, human:LABELS, rm:PATH",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", "-s", help="override an eval setting of the run's config, e.g. --set eval.judge_model=PATH (repeatable)"
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Evaluate iterations: IFEval accuracy (strict/loose, beside the echo baseline) on the held-out set and, where
    given, on the independent one; head-to-head win rates against the base and the previous iteration (both orders,
    95% intervals), judge agreement. Greedy responses are cached in runs/RUN/eval/ and reused.

    Example: selfplay eval demo --ifeval data/ifeval/heldout.jsonl --independent data/ifeval/independent.jsonl -i 0,1,2
    """
    the_run = open_run(run)
    ks = parse_iterations(iterations)
    cfg = eval_config(the_run.cfg.eval, set_ or [], max_tokens)
    cfg = cfg.model_copy(update={k: v for k, v in (("best_of_n", best_of_n), ("best_of_n_scorer", scorer)) if v is not None})
    result = run_eval(
        the_run,
        iterations=ks,
        ifeval_file=None if no_ifeval else (ifeval or cfg.ifeval),
        independent_file=None if no_ifeval else (independent or cfg.ifeval_independent),
        prompts_file=prompts or cfg.prompts,
        seed_file=seed,
        cfg=cfg,
        log=lambda msg: typer.echo(msg, err=True),
    )
    if json_:
        _print_json(result.model_dump(mode="json"))
        return
    console = Console(width=max(Console().width, 120))
    for table in eval_tables(result):
        console.print(table)
    console.print(f"files: {the_run.root / 'eval'}  report: selfplay report {run}", markup=False)


@app.command()
@guard
def compare(
    runs: Annotated[list[str], typer.Argument(help="two or more runs (names under the runs directory, or paths)")],
    json_: Annotated[bool, typer.Option("--json", help="print JSON lines instead of a table, for scripts")] = False,
) -> None:
    """Runs side by side, every iteration: algorithm, judge, pairs or examples trained on, loss, and held-out
    IFEval accuracy with its change against iteration 0 (run `selfplay eval` on each run first).

    Example: selfplay compare cmp-dpo cmp-rsft cmp-rest
    """
    rows = compare_runs([open_run(r) for r in runs])
    if json_:
        for row in rows:
            _print_json(row.model_dump(mode="json"))
        return
    Console(width=max(Console().width, 140)).print(compare_table(rows))
    if any(r.prompt_strict is None for r in rows):
        typer.echo("iterations without held-out accuracy have not been evaluated: selfplay eval RUN", err=True)


@app.command()
@guard
def report(
    run: RunArg,
    out: Annotated[Path | None, typer.Option("--out", help="output folder (default: runs/RUN/report)")] = None,
    json_: JsonOpt = False,
) -> None:
    """Write a self-contained HTML report with PNG plots: metrics across iterations, score and length
    distributions, monitors, win rates with intervals, IFEval accuracy, judge agreement.

    Example: selfplay report demo
    """
    files = write_report(open_run(run), out_dir(out) if out else None)
    if json_:
        _print_json(files.model_dump(mode="json"))
    else:
        typer.echo(f"report: {files.html}  ({len(files.pngs)} plots beside it)")


@app.command(name="best-of-n")
@guard
def best_of_n(
    prompts_file: Annotated[
        Path, typer.Argument(metavar="PROMPTS.jsonl", help="prompts: pool format {id, prompt} or IFEval format")
    ],
    scorer: Annotated[
        str,
        typer.Option(
            "--scorer",
            "-s",
            help="program:MODULE:FUNCTION | pointwise[:TEMPLATE] | pairwise[:TEMPLATE] | human:LABELS.jsonl | rm:PATH",
        ),
    ],
    model: Annotated[str, typer.Option("--model", "-m", help="'default' or a local checkpoint directory")] = "default",
    n: Annotated[int, typer.Option("--n", min=1, help="samples per prompt")] = 4,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="output JSONL (default: <PROMPTS>.best-of-<n>.jsonl here)")
    ] = None,
    backend: Annotated[str, typer.Option(help="vllm | transformers")] = "vllm",
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0, help="sampling temperature")] = 0.8,
    max_tokens: Annotated[int, typer.Option(min=1, help="new tokens per response")] = 192,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    limit: Annotated[int, typer.Option(min=0, help="use only the first this many prompts (0 = all)")] = 0,
    scorer_args: Annotated[
        str | None, typer.Option(help="program scorer: keyword arguments as JSON, e.g. '{\"min_words\": 20}'")
    ] = None,
) -> None:
    """Sample N responses per prompt and keep the one the scorer ranks highest; writes every candidate
    with its score, and the pick.

    Example:
      selfplay best-of-n --model default --scorer program:selfplay.program_judges:length_bounds data/instructions.jsonl --n 4
    """
    done = best_of_n_file(
        prompts_file,
        scorer,
        model=model,
        n=n,
        out=out,
        backend=backend,
        temperature=temperature,
        max_tokens=max_tokens,
        seed=seed,
        limit=limit,
        scorer_args=scorer_args,
    )
    s = done.stats
    typer.echo(json.dumps(s.model_dump()))
    typer.echo(f"{s.prompts} prompts x {n} samples -> {done.out} ({s.unscored} unscored, {s.no_pick} without a pick)")


def eval_tables(result: EvalResult) -> list:
    """Rich tables (and lines, as Text) for an EvalResult; file and model names are Text, never markup."""

    out: list = [
        ifeval_table(s, title)
        for s, title in (
            (result.ifeval, "IFEval-style instruction following"),
            (result.ifeval_independent, "The independent set (phrased apart from the train pools)"),
        )
        if s is not None
    ]
    if result.h2h:
        t = Table(title="Head-to-head on held-out prompts (both orders; a win needs both; ties count half)", box=box.SIMPLE_HEAD)
        for col in (
            "comparison",
            "n",
            "wins",
            "losses",
            "ties",
            "win rate",
            "95% bootstrap",
            "consistent",
            "first-pos",
            "no verdict",
            "calibrated",
            "95% bootstrap",
        ):
            t.add_column(col, justify="left" if col == "comparison" else "right", no_wrap=True)
        for r in result.h2h:
            c = r.calibrated
            t.add_row(
                Text(f"iter {r.iteration} vs {r.baseline or r.against}"),
                str(r.n),
                str(r.wins),
                str(r.losses),
                str(r.ties),
                _pct(r.win_rate) if r.decides is not False else "cannot decide",
                _ci((r.ci_low, r.ci_high) if r.ci_low is not None else None),
                _pct(r.consistent),
                _pct(r.first_position_rate),
                str(r.unparseable),
                _pct(c.win_rate) if c else "-",
                _ci((c.ci_low, c.ci_high) if c and c.ci_low is not None else None),
            )
        out.append(t)
        out.append(
            Text(
                f"'cannot decide': the judge picked the first-presented answer in over {MAX_FIRST_POSITION:.0%} of its "
                "verdicts. calibrated: P(win) averaged over both orders (balanced position calibration), > 50% a win."
            )
        )
    if result.agreement:
        a = result.agreement
        kappa = "undefined" if a.kappa is None else f"{a.kappa:.2f}"
        out.append(
            Text(
                f"judge vs human ({a.n} seed pairs, {a.judge}): agrees {a.agree}, disagrees {a.disagree}, "
                f"undecided {a.undecided}, unjudged {a.unjudged}; accuracy {_pct(a.accuracy)} {_ci(a.accuracy_ci)}; "
                f"Cohen's kappa {kappa}; first-position {_pct(a.first_position_rate)}; calibrated accuracy "
                f"{_pct(a.calibrated_accuracy)}"
            )
        )
    if not out:
        out.append("nothing evaluated: give --ifeval FILE, --prompts FILE or --seed FILE")
    return out


def ifeval_table(s: IFEvalSummary, title: str) -> Table:
    """One IFEval summary: the echo baseline, then each iteration with its change against the base."""
    t = Table(
        title=Text(f"{title}: {s.file} ({s.echo.n_prompts} prompts, greedy, max {s.max_tokens} tokens)"),
        box=box.SIMPLE_HEAD,
    )
    for col in (
        "",
        "prompt strict",
        "95% Wilson",
        "prompt loose",
        "instr strict",
        "instr loose",
        "tokens",
        "cut",
        "strict vs base, 95%",
    ):
        t.add_column(col, justify="left" if not col else "right", no_wrap=True)
    e = s.echo
    t.add_row(
        "echo baseline",
        _pct(e.prompt_level_strict),
        _ci(e.prompt_strict_ci),
        _pct(e.prompt_level_loose),
        _pct(e.instruction_level_strict),
        _pct(e.instruction_level_loose),
        "-",
        "-",
        "-",
    )
    for it in s.iterations:
        vs = it.vs_base
        t.add_row(
            f"iteration {it.iteration}" + (" (base)" if it.iteration == 0 else ""),
            _pct(it.prompt_level_strict),
            _ci(it.prompt_strict_ci),
            _pct(it.prompt_level_loose),
            _pct(it.instruction_level_strict),
            _pct(it.instruction_level_loose),
            "-" if it.mean_tokens is None else f"{it.mean_tokens:.0f}",
            _pct(it.cut_at_max),
            f"{vs.mean_diff:+.1%} [{vs.ci_low:+.0%}, {vs.ci_high:+.0%}]" if vs and vs.mean_diff is not None else "-",
        )
    return t


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1%}"


def _ci(ci) -> str:
    return "-" if not ci else f"[{ci[0]:.1%}, {ci[1]:.1%}]"
