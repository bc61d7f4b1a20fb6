"""The `selfplay` command: a thin shell over the library. Errors are one line and a non-zero exit.

Heavy libraries (torch, transformers, vLLM) are imported inside the commands that need them, so
`selfplay --help` stays instant.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="selfplay: make a language model better from AI feedback (generate, judge, pair, train, repeat).")

RunArg = Annotated[str, typer.Argument(help="run name under the runs directory, or a path to a run directory")]
IterationOpt = Annotated[int, typer.Option("--iteration", "-k", min=1, help="iteration number, from 1")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON lines instead of a table, for scripts")]


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def runs_dir() -> Path:
    return Path(os.environ.get("SELFPLAY_RUNS_DIR", "runs"))


def run_path(run: str) -> Path:
    path = Path(run)
    return path if path.exists() or os.sep in run else runs_dir() / run


def _guard(fn, extra: tuple[type[Exception], ...] = ()):
    """Turns our library's expected errors (and `extra` ones) into one line and exit 1, never a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from selfplay.errors import SelfplayError

        try:
            return fn(*args, **kwargs)
        except (SelfplayError, *extra) as err:
            _fail(str(err).splitlines()[0] if str(err) else err.__class__.__name__)
        except KeyboardInterrupt:
            _fail("interrupted; everything finished so far is on disk: rerun with --resume to continue")
    return wrapper


def _open_run(run: str):
    from selfplay.loop import Run

    return Run.open(run_path(run))


@app.command()
@_guard
def run(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="run config YAML (default: configs/default.yaml)")] = None,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="run directory name under the runs directory (default: <config>-<time>)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue an existing run; finished stages are reused")] = False,
    force: Annotated[bool, typer.Option("--force", help="with --resume: accept a config or version that differs from the run's")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="override a config key, e.g. --set generation.n=2 (repeatable)")] = None,
) -> None:
    """Run the self-improvement loop: generate -> judge -> pair -> DPO, for each iteration.

    Example: selfplay run --config configs/default.yaml --name demo
    """
    from selfplay.config import PROJECT_ROOT, load_config
    from selfplay.inspect import summary_table
    from rich.console import Console

    from selfplay.loop import Run, preflight, run_loop

    if config is None and (PROJECT_ROOT / "configs" / "default.yaml").exists():
        config = PROJECT_ROOT / "configs" / "default.yaml"
    cfg = load_config(config, set_ or [])
    stem = config.stem if config else "run"
    root = run_path(name) if name else runs_dir() / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"
    console = Console(width=max(Console().width, 130))
    preflight(cfg)
    if resume:
        the_run = Run.open(root, cfg if (config or set_) else None, force=force, resume=True)
    else:
        the_run = Run.create(root, cfg)
    console.print(f"run: {root}  (model {cfg.model}, {cfg.iterations} iterations, judge {cfg.judge.kind}/{cfg.judge.method})")
    rows = run_loop(the_run, log=lambda msg: console.print(msg))
    console.print(summary_table(rows, title=f"selfplay run {root.name}"))
    console.print(f"records: {root}/iter_*/  summary: {root}/summary.jsonl  inspect: selfplay inspect {root}")


def _one_stage(run: str, iteration: int, name: str, overrides: list[str] = ()) -> None:
    """`overrides`: key=value config changes for this invocation only (config.yaml is not rewritten)."""
    from selfplay.loop import run_stage

    the_run = _open_run(run)
    if overrides:
        from selfplay.config import with_overrides
        from selfplay.scale import check_launcher

        the_run.cfg = with_overrides(the_run.cfg, list(overrides))
        check_launcher(the_run.cfg)
    p = the_run.paths(iteration)
    info = run_stage(the_run, iteration, name)
    typer.echo(f"{name}: {info.status} ({info.count} records, {info.seconds:.0f} s) in {p.dir}")


@app.command()
@_guard
def generate(run: Annotated[str, typer.Option("--run", "-r", help="run name or directory")], iteration: IterationOpt) -> None:
    """Run only the generation stage of one iteration (the prompts stage must exist).

    Example: selfplay generate --run demo --iteration 1
    """
    _one_stage(run, iteration, "generate")


@app.command()
@_guard
def judge(run: Annotated[str, typer.Option("--run", "-r", help="run name or directory")], iteration: IterationOpt) -> None:
    """Run only the judging stage of one iteration.

    Example: selfplay judge --run demo --iteration 1
    """
    _one_stage(run, iteration, "judge")


@app.command()
@_guard
def pair(run: Annotated[str, typer.Option("--run", "-r", help="run name or directory")], iteration: IterationOpt) -> None:
    """Run only the pairing stage of one iteration.

    Example: selfplay pair --run demo --iteration 1
    """
    _one_stage(run, iteration, "pair")


train_app = typer.Typer(invoke_without_command=True, no_args_is_help=False,
                        help="Run the training stage of one iteration, or train a reward model (train rm).")
app.add_typer(train_app, name="train")


@train_app.callback()
@_guard
def train(
    ctx: typer.Context,
    run: Annotated[Optional[str], typer.Option("--run", "-r", help="run name or directory")] = None,
    iteration: Annotated[Optional[int], typer.Option("--iteration", "-k", min=1, help="iteration number, from 1")] = None,
    launcher: Annotated[Optional[str], typer.Option("--launcher", help="accelerate: data-parallel over --num-processes "
                                                    "processes (default: the run's train.launcher)")] = None,
    num_processes: Annotated[Optional[int], typer.Option("--num-processes", min=1, help="with --launcher accelerate")] = None,
    accelerate_config: Annotated[Optional[Path], typer.Option("--accelerate-config", help="an accelerate config file "
                                                              "(configs/accelerate/*.yaml)")] = None,
) -> None:
    """Run only the training stage of one iteration (the configured train.algo).

    Example: selfplay train --run demo --iteration 1
    Example: selfplay train --run demo --iteration 1 --launcher accelerate --num-processes 2
    """
    if ctx.invoked_subcommand is not None:
        return
    if run is None or iteration is None:
        _fail("selfplay train needs --run and --iteration (or a subcommand: selfplay train rm --help)")
    given = {"launcher": launcher, "num_processes": num_processes, "accelerate_config": accelerate_config}
    _one_stage(run, iteration, "train", [f"launch.{key}={value}" for key, value in given.items() if value is not None])


@train_app.command("rm")
@_guard
def train_rm(
    run: Annotated[str, typer.Option("--run", "-r", help="run whose pairs (all iterations so far) train the reward model")],
    out: Annotated[Path, typer.Option("--out", "-o", help="directory for the reward model")],
    seed_set: Annotated[Optional[Path], typer.Option("--seed-set", help="human-labelled pairs to add (JSONL or Label Studio export)")] = None,
    base: Annotated[Optional[str], typer.Option("--base", help="checkpoint to start from (default: the run's model)")] = None,
) -> None:
    """Train a reward model (TRL RewardTrainer) on a run's pairs plus an optional seed set; report held-out accuracy.

    Example: selfplay train rm --run demo --out rm-demo --seed-set data/seed_example.jsonl
    """
    from selfplay.models import resolve_model
    from selfplay.records import Pair, read_records
    from selfplay.train.reward import train_reward_model

    the_run = _open_run(run)
    pairs = [p for path in sorted(the_run.root.glob("iter_*/pairs.jsonl")) for p in read_records(path, Pair)]
    if seed_set:
        from selfplay.seed import load_seed

        pairs += load_seed(seed_set).pairs
    result = train_reward_model(pairs, resolve_model(base or the_run.cfg.model), out, the_run.cfg.train, the_run.cfg.seed)
    if result.model_dir is None:
        _fail(f"reward model not trained: {result.skipped}")
    typer.echo(f"reward model: {result.model_dir}  pairs {result.pairs} (held out {result.heldout}), "
               f"held-out accuracy {result.heldout_accuracy}, loss {result.loss_first} -> {result.loss_last}")


@app.command()
@_guard
def score(
    model: Annotated[Path, typer.Option("--model", "-m", help="a trained reward-model directory")],
    records: Annotated[Path, typer.Argument(help="JSONL with prompt and response fields")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="write the scored lines here (default: stdout)")] = None,
) -> None:
    """Score prompt/response pairs with a trained reward model; adds a "reward" field to each line.

    Example: selfplay score --model rm-demo responses.jsonl --out scored.jsonl
    """
    import json

    from selfplay.records import RecordError
    from selfplay.train.reward import RewardModel

    rows = []
    for lineno, line in enumerate(records.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append((row, str(row["prompt"]), str(row["response"])))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise RecordError(f"{records}:{lineno}: expected a JSON object with prompt and response") from None
    rewards = RewardModel.load(model).score([r[1] for r in rows], [r[2] for r in rows])
    text = "\n".join(json.dumps({**row, "reward": reward}, ensure_ascii=False) for (row, _, _), reward in zip(rows, rewards))
    if out:
        from selfplay.records import write_text

        write_text(out, text + "\n")
        typer.echo(f"scored {len(rows)} lines -> {out}")
    else:
        typer.echo(text)


@app.command()
@_guard
def label(
    run: RunArg,
    iteration: IterationOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="seed file to append labels to (resumable)")] = Path("seed.jsonl"),
    labeler: Annotated[Optional[str], typer.Option(help="your name, recorded with each label")] = None,
) -> None:
    """Label an iteration's pairs in the terminal: a / b / t(ie) / s(kip) / q(uit); writes a seed set.

    Example: selfplay label demo -k 1 --out seed.jsonl
    """
    from selfplay.records import Pair, read_records
    from selfplay.seed import label_pairs

    the_run = _open_run(run)
    session = label_pairs(read_records(the_run.paths(iteration).pairs, Pair), out, labeler=labeler, seed=the_run.cfg.seed)
    typer.echo(f"labelled {session.labelled}, already {session.already}, remaining {session.remaining}: {out}")


@app.command()
@_guard
def inspect(
    run: RunArg,
    iteration: Annotated[Optional[int], typer.Option("--iteration", "-k", min=1, help="show one iteration's records")] = None,
    stage: Annotated[str, typer.Option("--stage", help="prompts | generations | judgements | pairs")] = "judgements",
    min_score: Annotated[Optional[float], typer.Option(help="keep records with score >= this")] = None,
    max_score: Annotated[Optional[float], typer.Option(help="keep records with score <= this")] = None,
    status: Annotated[Optional[str], typer.Option(help="judgements: ok | unparseable | error")] = None,
    sort: Annotated[Optional[str], typer.Option(help="sort by score | tokens | id (records without it last)")] = None,
    desc: Annotated[bool, typer.Option("--desc", help="with --sort: descending")] = False,
    limit: Annotated[int, typer.Option(help="show at most this many records (0 = all)")] = 50,
    json_: JsonOpt = False,
) -> None:
    """Show a run's per-iteration summary, or one iteration's records with filters.

    Example: selfplay inspect demo --iteration 1 --stage judgements --status unparseable
    """
    from rich.console import Console

    from selfplay.inspect import filter_records, load_stage, print_json, records_table, summary_table

    the_run = _open_run(run)
    console = Console(width=max(Console().width, 120))
    if iteration is None:
        rows = [r for r in the_run.rebuild_summary()] if the_run.manifests() else []
        if json_:
            print_json(rows, console)
        else:
            console.print(summary_table(rows, title=f"selfplay run {the_run.root.name}") if rows else "no finished iterations yet")
        return
    try:
        records = load_stage(the_run, iteration, stage)
    except ValueError as err:
        _fail(str(err))
    records = filter_records(records, min_score=min_score, max_score=max_score, status=status)
    if sort:
        from selfplay.inspect import generation_lengths, sort_records

        try:
            records = sort_records(records, sort, descending=desc,
                                   lengths=generation_lengths(the_run, iteration) if sort == "tokens" else None)
        except ValueError as err:
            _fail(str(err))
    if limit:
        records = records[:limit]
    if json_:
        print_json(records, console)
    else:
        console.print(records_table(records, stage))


@app.command()
@_guard
def models(prepare: Annotated[bool, typer.Option("--prepare", help="convert the embedded default model now (once; ~40 s)")] = False) -> None:
    """List models in the cache and prepare the embedded default (SmolLM2-135M-Instruct).

    Example: selfplay models --prepare
    """
    from selfplay.models import ensure_default_model, list_models, selfplay_home

    if prepare:
        ensure_default_model()
    typer.echo(f"cache: {selfplay_home() / 'models'}")
    for name, path, ready in list_models():
        typer.echo(f"{name:10s} {'ready' if ready else 'not prepared (selfplay models --prepare)'}  {path}")


from selfplay import cli_eval  # noqa: E402  (its commands use the helpers above)
from selfplay.cli_judges import constitution_app, prompts_app  # noqa: E402

from selfplay import bestofn  # noqa: E402

cli_eval.register(app)
bestofn.register(app)
app.add_typer(prompts_app, name="prompts")
app.add_typer(constitution_app, name="constitution")


def main() -> None:  # pragma: no cover - python -m selfplay
    app(prog_name="selfplay")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
