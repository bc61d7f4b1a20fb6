"""Looking at a run's records and labelling them: `inspect`, `show`, `diff`, `label`; `export` for other tools;
`score` with a reward model; `models` in the cache. Record text is data: tables hold Text, plain output goes out
with markup off."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from selfplay.cli.common import IterationOpt, RunArg, guard, open_run, out_file
from selfplay.export import FORMATS, export_run
from selfplay.models import ensure_default_model, list_models, selfplay_home
from selfplay.records import Pair, read_records, write_text
from selfplay.scoring import read_score_lines, score_lines
from selfplay.seed import label_pairs
from selfplay.views import (
    diff_view,
    format_diff_view,
    format_prompt_view,
    print_json,
    prompt_view,
    records_table,
    select_records,
    summary_table,
)

app = typer.Typer()

JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object instead of text, for scripts")]
JsonLinesOpt = Annotated[bool, typer.Option("--json", help="print JSON lines instead of a table, for scripts")]


def _print_json(obj) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=None))


@app.command()
@guard
def inspect(
    run: RunArg,
    iteration: Annotated[int | None, typer.Option("--iteration", "-k", min=1, help="show one iteration's records")] = None,
    stage: Annotated[str, typer.Option("--stage", help="prompts | generations | judgements | pairs")] = "judgements",
    min_score: Annotated[float | None, typer.Option(help="keep records with score >= this")] = None,
    max_score: Annotated[float | None, typer.Option(help="keep records with score <= this")] = None,
    status: Annotated[str | None, typer.Option(help="judgements: ok | unparseable | error")] = None,
    sort: Annotated[str | None, typer.Option(help="sort by score | tokens | id (records without it last)")] = None,
    desc: Annotated[bool, typer.Option("--desc", help="with --sort: descending")] = False,
    limit: Annotated[int, typer.Option(help="show at most this many records (0 = all)")] = 50,
    json_: JsonLinesOpt = False,
) -> None:
    """Show a run's per-iteration summary, or one iteration's records with filters.

    Example: selfplay inspect demo --iteration 1 --stage judgements --status unparseable
    """
    the_run = open_run(run)
    console = Console(width=max(Console().width, 120))
    if iteration is None:
        rows = the_run.rebuild_summary() if the_run.manifests() else []
        if json_:
            print_json(rows, console)
        else:
            console.print(
                summary_table(rows, title=f"selfplay run {the_run.root.name}") if rows else "no finished iterations yet"
            )
        return
    records = select_records(
        the_run,
        iteration,
        stage,
        min_score=min_score,
        max_score=max_score,
        status=status,
        sort=sort,
        descending=desc,
        limit=limit,
    )
    if json_:
        print_json(records, console)
    else:
        console.print(records_table(records, stage))


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
    view = prompt_view(open_run(run), iteration, ident)
    if json_:
        _print_json(view.model_dump(mode="json"))
    else:
        typer.echo(format_prompt_view(view), nl=False)


@app.command()
@guard
def diff(
    run: RunArg,
    iterations: Annotated[
        tuple[int, int],
        typer.Option(
            "--iterations", "-i", help="two iterations to compare, e.g. --iterations 1 3 (0 = base model, eval responses only)"
        ),
    ],
    limit: Annotated[int, typer.Option(help="show at most this many prompts (0 = all)")] = 20,
    width: Annotated[int, typer.Option(help="cut each response at this many characters in text output")] = 400,
    json_: JsonOpt = False,
) -> None:
    """Show the same prompts' responses in two iterations: the eval responses (greedy, held-out prompts)
    when `selfplay eval` has written them, else the training prompts both iterations drew.

    Example: selfplay diff demo --iterations 1 3
    """
    view = diff_view(open_run(run), *iterations)
    if limit:
        view = view.model_copy(update={"rows": view.rows[:limit]})
    if json_:
        _print_json(view.model_dump(mode="json"))
    else:
        typer.echo(format_diff_view(view, width=width), nl=False)


@app.command()
@guard
def label(
    run: RunArg,
    iteration: IterationOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="seed file to append labels to (resumable)")] = Path("seed.jsonl"),
    labeler: Annotated[str | None, typer.Option(help="your name, recorded with each label")] = None,
) -> None:
    """Label an iteration's pairs in the terminal: a / b / t(ie) / s(kip) / q(uit); writes a seed set.

    Example: selfplay label demo -k 1 --out seed.jsonl
    """
    the_run = open_run(run)
    out = out_file(out)
    session = label_pairs(read_records(the_run.paths(iteration).pairs, Pair), out, labeler=labeler, seed=the_run.cfg.seed)
    typer.echo(f"labelled {session.labelled}, already {session.already}, remaining {session.remaining}: {out}")


@app.command()
@guard
def export(
    run: RunArg,
    fmt: Annotated[str, typer.Option("--format", "-f", help=f"{' | '.join(FORMATS)}")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="folder to write into (default: RUN/export/FORMAT)")] = None,
    iteration: Annotated[
        int | None, typer.Option("--iteration", "-k", min=1, help="one iteration's records (default: every iteration with pairs)")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="write into a non-empty --out, replacing an earlier export's files")
    ] = False,
) -> None:
    """Export a run's pairs for other tools; trl, hf and parquet also export its prompts and generations.

    trl: pairs.jsonl in TRL's conversational preference format (prompt, chosen, rejected), prompts.jsonl, generations.jsonl

    hf: the same rows as datasets folders (save_to_disk): pairs/, prompts/, generations/

    parquet: the same rows as pairs.parquet, prompts.parquet, generations.parquet

    label-studio: pairs only, as tasks.json (data prompt, answer1, answer2) and its labelling config config.xml

    Label Studio's export of the labelled tasks is a seed set: selfplay train rm --seed-set FILE.

    Example: selfplay export demo --format trl --out demo-trl
    """
    result = export_run(open_run(run), fmt, out, iteration, force)
    written = ", ".join(f"{name} ({rows} {'tasks' if fmt == 'label-studio' else 'rows'})" for name, rows in result.rows.items())
    iterations = ", ".join(map(str, result.iterations))
    typer.echo(f"exported iteration{'s' if len(result.iterations) > 1 else ''} {iterations} as {fmt}: {written} -> {result.out}")


@app.command()
@guard
def score(
    model: Annotated[Path, typer.Option("--model", "-m", help="a trained reward-model directory")],
    records: Annotated[Path, typer.Argument(help="JSONL with prompt and response fields")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write the scored lines here (default: stdout)")] = None,
) -> None:
    """Score prompt/response pairs with a trained reward model; adds a "reward" field to each line.

    Example: selfplay score --model rm-demo responses.jsonl --out scored.jsonl
    """
    if out:
        out_file(out)
    scored = score_lines(model, read_score_lines(records))
    text = "\n".join(json.dumps(row, ensure_ascii=False) for row in scored)
    if out:
        write_text(out, text + "\n")
        typer.echo(f"scored {len(scored)} lines -> {out}")
    else:
        typer.echo(text)


@app.command()
@guard
def models(
    prepare: Annotated[bool, typer.Option("--prepare", help="convert the embedded default model now (once; ~40 s)")] = False,
) -> None:
    """List models in the cache and prepare the embedded default (SmolLM2-135M-Instruct).

    Example: selfplay models --prepare
    """
    if prepare:
        ensure_default_model()
    typer.echo(f"cache: {selfplay_home() / 'models'}")
    for name, path, ready in list_models():
        typer.echo(f"{name:10s} {'ready' if ready else 'not prepared (selfplay models --prepare)'}  {path}")
