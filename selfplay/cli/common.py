"""What every command group shares: the one error guard, where runs live, and the common arguments."""

from __future__ import annotations

import errno
import functools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer

from selfplay.errors import SelfplayError
from selfplay.records import RecordError
from selfplay.rundir import Run, RunError

F = TypeVar("F", bound=Callable)

RunArg = Annotated[str, typer.Argument(help="run name under the runs directory, or a path to a run directory")]
RunOpt = Annotated[str, typer.Option("--run", "-r", help="run name or directory")]
IterationOpt = Annotated[int, typer.Option("--iteration", "-k", min=1, help="iteration number, from 1")]

# A run directory's own name: it becomes part of paths, table titles and commands we print.
RUN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def one_line(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def guard(fn: F) -> F:
    """A user's mistake (any SelfplayError) becomes `error: <message>` on one line and exit 1; Ctrl-C exits 130.
    Everything else is a bug in selfplay and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SelfplayError as err:
            fail(one_line(str(err)) or type(err).__name__)
        except KeyboardInterrupt:
            fail("interrupted; what finished is on disk (selfplay run --resume continues a run)", code=130)
        except Exception as err:
            if not disk_full(err):
                raise
            fail(
                "no space left on the device while writing; what finished is on disk (every record file is written "
                "whole or not at all): free space, then `selfplay run --name NAME --resume` continues"
            )

    return wrapper  # type: ignore[return-value]


def disk_full(err: BaseException | None) -> bool:
    """A full disk (or quota) anywhere in the exception's chain: Python's OSError, or a library that wraps it in its
    own error (safetensors' Rust writer says "No space left on device (os error 28)")."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(err) or "os error 28" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def runs_dir() -> Path:
    return Path(os.environ.get("SELFPLAY_RUNS_DIR", "runs"))


def run_path(run: str) -> Path:
    path = Path(run)
    return path if path.exists() or os.sep in run else runs_dir() / run


def open_run(run: str) -> Run:
    return Run.open(run_path(run))


def new_run_path(name: str) -> Path:
    """Where `selfplay run --name NAME` puts a run. The directories it would create must have safe names
    (letters, digits, . _ -, not starting with .); an absolute path's existing parents are the user's business."""
    path = Path(name)
    parts = path.parts[-1:] if path.is_absolute() else [p for p in path.parts if p not in (".", "..")]
    bad = next((p for p in parts if not RUN_NAME.fullmatch(p)), None) if parts else name
    if bad is not None:
        raise RunError(
            f"--name {name!r}: {bad!r} is not a run name; use letters, digits, '.', '_' and '-', not starting with '.'"
        )
    return run_path(name)


def out_file(path: Path) -> Path:
    """An output file option, checked before any work that would be lost if it cannot be written."""
    if path.is_dir():
        raise RecordError(f"{path}: is a directory; give a file name to write")
    return path


def out_dir(path: Path) -> Path:
    """An output folder option, checked before any work."""
    if path.exists() and not path.is_dir():
        raise RecordError(f"{path}: is a file; give a folder to write into")
    return path
