"""The `selfplay` command: a thin shell over the library, one module per command group.

    run.py     run, generate, judge, pair, train, train rm
    data.py    inspect, show, diff, label, export, score, models
    evals.py   eval, compare, report, best-of-n
    judges.py  prompts ..., constitution ...
    common.py  the one error guard (a SelfplayError is one line and exit 1), where runs live

Heavy libraries (torch, transformers, vLLM, matplotlib) are imported inside the library functions that need
them, so `selfplay --help` stays instant.
"""

from __future__ import annotations

from typing import Annotated

import typer

from selfplay.cli import data, evals, judges, run
from selfplay.quiet import quiet_libraries, verbose_libraries

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="selfplay: make a language model better from AI feedback (generate, judge, pair, train, repeat).",
)


@app.callback()
def options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="show the libraries' own logs, warnings and progress bars (vLLM, transformers, TRL)"
        ),
    ] = False,
) -> None:
    """selfplay: make a language model better from AI feedback (generate, judge, pair, train, repeat)."""
    if verbose:
        verbose_libraries()
    else:
        quiet_libraries()


app.add_typer(run.app)
app.add_typer(data.app)
app.add_typer(evals.app)
app.add_typer(judges.prompts_app, name="prompts")
app.add_typer(judges.constitution_app, name="constitution")


def main() -> None:
    """`python -m selfplay`: the same as the `selfplay` script."""
    app(prog_name="selfplay")
