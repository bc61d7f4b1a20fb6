"""`selfplay run`, one stage at a time (`generate`, `judge`, `pair`, `train`), and `train rm`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from selfplay.cli.common import IterationOpt, RunOpt, fail, guard, new_run_path, open_run, out_dir, runs_dir
from selfplay.config import PROJECT_ROOT, load_config, with_overrides
from selfplay.evaluate import eval_dir, evaluate_after_run
from selfplay.loop import preflight, run_loop, run_stage
from selfplay.models import resolve_model
from selfplay.rundir import Run
from selfplay.scale import check_launcher
from selfplay.scoring import train_run_reward_model
from selfplay.seed import LabelStudioKeys, load_seed
from selfplay.teaching import teach_judge
from selfplay.views import before_after_line, summary_table

app = typer.Typer()
train_app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
    help="Run the training stage of one iteration, train a reward model (train rm), or teach a judge (train judge).",
)
app.add_typer(train_app, name="train")


@app.command()
@guard
def run(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="run config YAML (default: configs/default.yaml)")] = None,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="run directory name under the runs directory (default: <config>-<time>)")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue an existing run; finished stages are reused")] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="with --resume: accept a config or version that differs from the run's "
            "(a config change is saved in config.yaml and recorded in run.json and later manifests)",
        ),
    ] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="override a config key, e.g. --set generation.n=2 (repeatable)")
    ] = None,
) -> None:
    """Run the self-improvement loop: generate -> judge -> pair -> train (train.algo), for each iteration.

    Example: selfplay run --config configs/default.yaml --name demo
    """
    root = new_run_path(name) if name else None  # a bad name is refused before anything is read or written
    if resume:
        if root is None:
            fail("--resume needs --name, the run to continue")
        # The run's own config.yaml unless --config is given; a change needs --force and is then recorded.
        the_run = Run.resume(root, config, set_ or [], force=force)
        cfg = the_run.cfg
        preflight(cfg)
    else:
        if config is None and (PROJECT_ROOT / "configs" / "default.yaml").exists():
            config = PROJECT_ROOT / "configs" / "default.yaml"
        cfg = load_config(config, set_ or [])
        root = root or runs_dir() / f"{config.stem if config else 'run'}-{datetime.now():%Y%m%d-%H%M%S}"
        preflight(cfg)  # before the run directory exists: a bad input leaves nothing behind
        the_run = Run.create(root, cfg)
    console = Console(width=max(Console().width, 130))
    # Paths, model names and the loop's messages are data: markup=False, so a '[' in them is printed, not parsed;
    # soft_wrap: a line longer than the terminal stays one line (a log or a pasted output keeps it whole).
    say = lambda msg: console.print(msg, markup=False, soft_wrap=True)  # noqa: E731
    judge = cfg.judge.kind if cfg.judge.kind in ("program", "human") else f"{cfg.judge.kind}/{cfg.judge.method}"
    say(f"run: {root}  (model {cfg.model}, {cfg.iterations} iterations, judge {judge}, train {cfg.train.algo})")
    rows = run_loop(the_run, log=say)
    console.print(summary_table(rows, title=f"selfplay run {root.name}"))
    say(f"records: {root}/iter_*/  summary: {root}/summary.jsonl  inspect: selfplay inspect {root}")
    if cfg.eval.after_run:
        _before_after(the_run, say)


def _before_after(the_run: Run, say: Callable[[str], None]) -> None:
    """eval.after_run: iteration 0 against the last iteration on the held-out sets, one line each."""
    say("evaluating iteration 0 and the last iteration on held-out prompts (greedy; eval.after_run)")
    result = evaluate_after_run(the_run, log=say)
    if result is None:
        say("nothing to compare: no iteration trained a policy")
        return
    for summary, label in ((result.ifeval, "held-out"), (result.ifeval_independent, "independent held-out")):
        line = before_after_line(summary, label) if summary else None
        if line:
            say(line)
    say(f"per-prompt results: {eval_dir(the_run)}  (selfplay eval {the_run.root} for more)")


def _one_stage(run: str, iteration: int, name: str, overrides: Sequence[str] = ()) -> None:
    """`overrides`: key=value config changes for this invocation only (config.yaml is not rewritten)."""
    the_run = open_run(run)
    if overrides:
        the_run.cfg = with_overrides(the_run.cfg, list(overrides))
        check_launcher(the_run.cfg)
    info = run_stage(the_run, iteration, name)
    typer.echo(f"{name}: {info.status} ({info.count} records, {info.seconds:.0f} s) in {the_run.paths(iteration).dir}")


@app.command()
@guard
def generate(run: RunOpt, iteration: IterationOpt) -> None:
    """Run only the generation stage of one iteration (the prompts stage must exist).

    Example: selfplay generate --run demo --iteration 1
    """
    _one_stage(run, iteration, "generate")


@app.command()
@guard
def judge(run: RunOpt, iteration: IterationOpt) -> None:
    """Run only the judging stage of one iteration.

    Example: selfplay judge --run demo --iteration 1
    """
    _one_stage(run, iteration, "judge")


@app.command()
@guard
def pair(run: RunOpt, iteration: IterationOpt) -> None:
    """Run only the pairing stage of one iteration.

    Example: selfplay pair --run demo --iteration 1
    """
    _one_stage(run, iteration, "pair")


@train_app.callback()
@guard
def train(
    ctx: typer.Context,
    run: Annotated[str | None, typer.Option("--run", "-r", help="run name or directory")] = None,
    iteration: Annotated[int | None, typer.Option("--iteration", "-k", min=1, help="iteration number, from 1")] = None,
    launcher: Annotated[
        str | None,
        typer.Option(
            "--launcher", help="accelerate: data-parallel over --num-processes processes (default: the run's launch.launcher)"
        ),
    ] = None,
    num_processes: Annotated[int | None, typer.Option("--num-processes", min=1, help="with --launcher accelerate")] = None,
    accelerate_config: Annotated[
        Path | None, typer.Option("--accelerate-config", help="an accelerate config file (configs/accelerate/*.yaml)")
    ] = None,
) -> None:
    """Run only the training stage of one iteration (the configured train.algo).

    Example: selfplay train --run demo --iteration 1
    Example: selfplay train --run demo --iteration 1 --launcher accelerate --num-processes 2
    """
    if ctx.invoked_subcommand is not None:
        return
    if run is None or iteration is None:
        fail("selfplay train needs --run and --iteration (or a subcommand: selfplay train rm --help)")
    given = {"launcher": launcher, "num_processes": num_processes, "accelerate_config": accelerate_config}
    _one_stage(run, iteration, "train", [f"launch.{key}={value}" for key, value in given.items() if value is not None])


@train_app.command("rm")
@guard
def train_rm(
    run: Annotated[str, typer.Option("--run", "-r", help="run whose pairs (all iterations so far) train the reward model")],
    out: Annotated[Path, typer.Option("--out", "-o", help="directory for the reward model")],
    seed_set: Annotated[
        Path | None,
        typer.Option(
            "--seed-set",
            help="human labels to add: JSONL pairs or scored responses, or a Label Studio export (JSON, JSON_MIN, CSV)",
        ),
    ] = None,
    keys: Annotated[
        str | None,
        typer.Option(
            "--keys",
            help="the Label Studio export's data keys PROMPT,LEFT,RIGHT, e.g. prompt,answer1,answer2 "
            "(default: recognised from Label Studio's stock templates)",
        ),
    ] = None,
    base: Annotated[str | None, typer.Option("--base", help="checkpoint to start from (default: the run's model)")] = None,
) -> None:
    """Train a reward model (TRL RewardTrainer) on a run's pairs plus an optional seed set; report held-out accuracy.

    Example: selfplay train rm --run demo --out rm-demo --seed-set data/seed_example.jsonl
    """
    if keys and not seed_set:
        fail("--keys names the data keys of a --seed-set Label Studio export; give --seed-set too")
    the_run, out = open_run(run), out_dir(out)
    seed = load_seed(seed_set, LabelStudioKeys.parse(keys) if keys else None) if seed_set else None
    if seed:
        typer.echo(f"seed set: {seed.summary()}")
    result = train_run_reward_model(the_run, out, seed, base)
    typer.echo(
        f"reward model: {result.model_dir}  pairs {result.pairs} (held out {result.heldout}), "
        f"held-out accuracy {result.heldout_accuracy}, loss {result.loss_first} -> {result.loss_last}"
    )


@train_app.command("judge")
@guard
def train_judge(
    config: Annotated[Path, typer.Option("--config", "-c", help="run config whose judge and train.judge section are used")],
    out: Annotated[Path, typer.Option("--out", "-o", help="directory for the taught judge and its teaching.json")],
    data: Annotated[
        str | None, typer.Option("--data", help="what to teach from, comma-separated: checkers, seed (default: train.judge_data)")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="override a config key (repeatable)")] = None,
) -> None:
    """Teach a judge (evaluation fine-tuning): fine-tune the config's judge.model, or its model when the policy judges
    itself, on labelled judgements (the instruction checkers' verdicts on train-pool responses, and/or the human
    seed set), and measure it before and after on train.judge.measure's responses. Use the result as judge.model.

    Example: selfplay train judge --config configs/proof-taught-judge.yaml --out runs/judge --data checkers
    """
    overrides = list(set_ or []) + ([f"train.judge_data=[{data}]"] if data else [])
    cfg = load_config(config, overrides)
    if not cfg.train.judge_data:
        fail("selfplay train judge: nothing to teach from; give --data checkers,seed or set train.judge_data")
    preflight(cfg)
    policy = resolve_model(cfg.model)
    base = resolve_model(cfg.judge.model) if cfg.judge.model else policy
    console = Console(width=max(Console().width, 130))
    record = teach_judge(cfg, base, policy, out_dir(out), log=lambda msg: console.print(msg, markup=False))
    console.print(
        f"taught judge: {record.taught}  ({record.from_checkers} judgements from the checkers, {record.from_seed} from "
        f"the seed set; record {out / 'teaching.json'})",
        markup=False,
    )
