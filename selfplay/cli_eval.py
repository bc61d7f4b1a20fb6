"""Evaluation and viewing commands: `selfplay show`, `diff`, `eval`, `compare`, `report`.

Added to the main app by `cli_eval.register(app)` (at the end of cli.py). A thin shell over
selfplay.views, selfplay.evaluate and selfplay.report, imported inside each command, so importing this
module imports neither torch nor matplotlib.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

RunArg = Annotated[str, typer.Argument(help="run name under the runs directory, or a path to a run directory")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object instead of text, for scripts")]


def _print_json(obj) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=None))


def _parse_iterations(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        ks = [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected iteration numbers like 0,1,3") from None
    if any(k < 0 for k in ks):
        raise typer.BadParameter(f"{text!r}: iterations are 0 (base model) or more")
    return ks


def register(app: typer.Typer) -> None:
    """Adds show, diff, eval, compare and report to `app` (the main selfplay app)."""
    from selfplay import cli as base

    from selfplay.evaluate import EvalError

    def guard(fn):  # ours, and the viewers' "no such id" ValueErrors: one line
        return base._guard(fn, extra=(EvalError, ValueError))

    @app.command()
    @guard
    def show(
        run: RunArg,
        iteration: Annotated[int, typer.Argument(min=1, help="iteration number, from 1")],
        ident: Annotated[str, typer.Argument(metavar="ID", help="prompt id (or a generation, judgement or pair id of it)")],
        json_: JsonOpt = False,
    ) -> None:
        """Show one prompt with all its candidates, every judgement's raw output and score, and its pair.

        Example: selfplay show demo 1 pool-0042
        """
        from selfplay.views import format_prompt_view, prompt_view

        view = prompt_view(base._open_run(run), iteration, ident)
        if json_:
            _print_json(view.model_dump(mode="json"))
        else:
            typer.echo(format_prompt_view(view), nl=False)

    @app.command()
    @guard
    def diff(
        run: RunArg,
        iterations: Annotated[tuple[int, int], typer.Option("--iterations", "-i", help="two iterations to compare, e.g. --iterations 1 3 (0 = base model, eval responses only)")],
        limit: Annotated[int, typer.Option(help="show at most this many prompts (0 = all)")] = 20,
        width: Annotated[int, typer.Option(help="cut each response at this many characters in text output")] = 400,
        json_: JsonOpt = False,
    ) -> None:
        """Show the same prompts' responses in two iterations: the eval responses (greedy, held-out prompts)
        when `selfplay eval` has written them, else the training prompts both iterations drew.

        Example: selfplay diff demo --iterations 1 3
        """
        from selfplay.views import diff_view, format_diff_view

        view = diff_view(base._open_run(run), *iterations)
        if limit:
            view = view.model_copy(update={"rows": view.rows[:limit]})
        if json_:
            _print_json(view.model_dump(mode="json"))
        else:
            typer.echo(format_diff_view(view, width=width), nl=False)

    @app.command(name="eval")
    @guard
    def eval_(
        run: RunArg,
        ifeval: Annotated[Optional[str], typer.Option("--ifeval", help="IFEval-format JSONL to score (default: eval.ifeval of the run config)")] = None,
        no_ifeval: Annotated[bool, typer.Option("--no-ifeval", help="skip the instruction-following evaluation")] = False,
        prompts: Annotated[Optional[str], typer.Option("--prompts", help="held-out prompts (pool or IFEval format) for head-to-head; never the run's training prompts")] = None,
        seed: Annotated[Optional[str], typer.Option("--seed", help="human-labelled pairs {prompt, chosen, rejected} to measure the judge's agreement")] = None,
        iterations: Annotated[Optional[str], typer.Option("--iterations", "-i", help="iterations to evaluate, e.g. 0,2,3 (0 = base model; default: 0 and every trained one)")] = None,
        max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", min=1, help="new tokens per greedy response (default: eval.max_tokens)")] = None,
        best_of_n: Annotated[Optional[int], typer.Option("--best-of-n", min=2, help="head-to-head also against best-of-N from the base model (default: eval.best_of_n)")] = None,
        scorer: Annotated[Optional[str], typer.Option("--scorer", help="best-of-N scorer: pointwise[:TEMPLATE], pairwise[:TEMPLATE], program:MODULE:FUNCTION, human:LABELS, rm:PATH")] = None,
        set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="override an eval setting of the run's config, e.g. --set eval.judge_model=PATH (repeatable)")] = None,
        json_: JsonOpt = False,
    ) -> None:
        """Evaluate iterations: IFEval accuracy (strict/loose, beside the echo baseline), head-to-head win
        rates against the base and the previous iteration (both orders, 95% intervals), judge agreement.
        Greedy responses are cached in runs/RUN/eval/ and reused.

        Example: selfplay eval demo --prompts data/heldout.jsonl --iterations 0,1,2
        """
        from rich.console import Console

        from selfplay.evaluate import run_eval

        the_run = base._open_run(run)
        cfg = eval_config(the_run.cfg.eval, set_ or [], max_tokens)
        cfg = cfg.model_copy(update={k: v for k, v in (("best_of_n", best_of_n), ("best_of_n_scorer", scorer)) if v is not None})
        result = run_eval(the_run, iterations=_parse_iterations(iterations),
                          ifeval_file=None if no_ifeval else (ifeval or cfg.ifeval), prompts_file=prompts or cfg.prompts,
                          seed_file=seed, cfg=cfg, log=lambda msg: typer.echo(msg, err=True))
        if json_:
            _print_json(result.model_dump(mode="json"))
            return
        console = Console(width=max(Console().width, 120))
        for table in eval_tables(result):
            console.print(table)
        console.print(f"files: {the_run.root / 'eval'}  report: selfplay report {run}")

    @app.command()
    @guard
    def compare(
        runs: Annotated[list[str], typer.Argument(help="two or more runs (names under the runs directory, or paths)")],
        json_: JsonOpt = False,
    ) -> None:
        """Runs side by side, every iteration: algorithm, judge, pairs or examples trained on, loss, and held-out
        IFEval accuracy with its change against iteration 0 (run `selfplay eval` on each run first).

        Example: selfplay compare cmp-dpo cmp-rsft cmp-rest
        """
        from rich.console import Console

        from selfplay.views import compare_runs, compare_table

        rows = compare_runs([base._open_run(r) for r in runs])
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
        out: Annotated[Optional[Path], typer.Option("--out", help="output folder (default: runs/RUN/report)")] = None,
        json_: JsonOpt = False,
    ) -> None:
        """Write a self-contained HTML report with PNG plots: metrics across iterations, score and length
        distributions, monitors, win rates with intervals, IFEval accuracy, judge agreement.

        Example: selfplay report demo
        """
        from selfplay.report import write_report

        files = write_report(base._open_run(run), out)
        if json_:
            _print_json(files.model_dump(mode="json"))
        else:
            typer.echo(f"report: {files.html}  ({len(files.pngs)} plots beside it)")


def eval_config(cfg, overrides: list[str], max_tokens: int | None = None):
    """The run's EvalConfig with `--set eval.KEY=VALUE` overrides (the `eval.` prefix may be left out)."""
    from pydantic import ValidationError

    from selfplay.config import ConfigError, EvalConfig, parse_overrides

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
        raise ConfigError(f"--set eval.{where}: {'unknown key' if first['type'] == 'extra_forbidden' else first['msg']}") from None


def eval_tables(result) -> list:
    """Rich tables (and lines) for an EvalResult."""
    from rich import box
    from rich.table import Table

    def pct(v):
        return "-" if v is None else f"{v:.1%}"

    out: list = []
    if result.ifeval:
        s = result.ifeval
        t = Table(title=f"IFEval-style instruction following: {s.file} ({s.echo.n_prompts} prompts, greedy, max {s.max_tokens} tokens)",
                  box=box.SIMPLE_HEAD)
        for col in ("", "prompt strict", "95% Wilson", "prompt loose", "instr strict", "instr loose", "tokens", "cut", "strict vs base, 95%"):
            t.add_column(col, justify="left" if not col else "right", no_wrap=True)
        e = s.echo
        t.add_row("echo baseline", pct(e.prompt_level_strict), _ci(e.prompt_strict_ci), pct(e.prompt_level_loose),
                  pct(e.instruction_level_strict), pct(e.instruction_level_loose), "-", "-", "-")
        for it in s.iterations:
            vs = it.vs_base
            t.add_row(f"iteration {it.iteration}" + (" (base)" if it.iteration == 0 else ""), pct(it.prompt_level_strict),
                      _ci(it.prompt_strict_ci), pct(it.prompt_level_loose), pct(it.instruction_level_strict),
                      pct(it.instruction_level_loose), "-" if it.mean_tokens is None else f"{it.mean_tokens:.0f}", pct(it.cut_at_max),
                      f"{vs.mean_diff:+.1%} [{vs.ci_low:+.0%}, {vs.ci_high:+.0%}]" if vs and vs.mean_diff is not None else "-")
        out.append(t)
    if result.h2h:
        t = Table(title="Head-to-head on held-out prompts (both orders; a win needs both; ties count half)", box=box.SIMPLE_HEAD)
        for col in ("comparison", "n", "wins", "losses", "ties", "win rate", "95% bootstrap", "consistent", "first-pos", "no verdict"):
            t.add_column(col, justify="left" if col == "comparison" else "right", no_wrap=True)
        for r in result.h2h:
            t.add_row(f"iter {r.iteration} vs {r.baseline or r.against}", str(r.n), str(r.wins), str(r.losses), str(r.ties), pct(r.win_rate),
                      _ci((r.ci_low, r.ci_high) if r.ci_low is not None else None), pct(r.consistent), pct(r.first_position_rate),
                      str(r.unparseable))
        out.append(t)
    if result.agreement:
        a = result.agreement
        kappa = "undefined" if a.kappa is None else f"{a.kappa:.2f}"
        out.append(f"judge vs human ({a.n} seed pairs, {a.judge}): agrees {a.agree}, disagrees {a.disagree}, "
                   f"inconsistent {a.inconsistent}; accuracy {pct(a.accuracy.win_rate)} "
                   f"{_ci((a.accuracy.ci_low, a.accuracy.ci_high) if a.accuracy.ci_low is not None else None)}; Cohen's kappa {kappa}")
    if not out:
        out.append("nothing evaluated: give --ifeval FILE, --prompts FILE or --seed FILE")
    return out


def _ci(ci) -> str:
    return "-" if not ci else f"[{ci[0]:.1%}, {ci[1]:.1%}]"
