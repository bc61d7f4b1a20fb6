"""`selfplay prompts ...` and `selfplay constitution ...`: view, edit, validate and render the judge's
templates and constitutions. A thin shell over templates.py, constitutions.py and judges.

Edits go to the user's project (./prompts, ./constitutions in the current directory), never the
installed package; a file there shadows the shipped one of the same name. `edit` validates when the
editor closes and puts the previous content back if the file is invalid.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from selfplay.cli.common import IterationOpt, RunOpt, fail, guard, open_run
from selfplay.config import PROJECT_ROOT
from selfplay.constitutions import ConstitutionError, constitution_path, load_constitution
from selfplay.errors import SelfplayError
from selfplay.external import open_external
from selfplay.judges import TEMPLATE_VARIABLES, check_template, judge_inputs
from selfplay.models import resolve_model
from selfplay.templates import TemplateError, load_template, template_path

prompts_app = typer.Typer(no_args_is_help=True, help="Judge prompt templates: list, show, edit, validate, render.")
constitution_app = typer.Typer(
    no_args_is_help=True, help="Constitutions (principles for critique, revision, comparison): list, show, new, edit, validate."
)

NameArg = Annotated[str, typer.Argument(help="a name (e.g. pairwise) or a path to a YAML file")]
NamesArg = Annotated[
    list[str] | None, typer.Argument(help="names or paths to check (default: every file in ./<dir> and the shipped ones)")
]


# --- shared: where files live, and editing one safely -------------------------------------------------------


def _files(folder: str) -> dict[str, tuple[Path, str]]:
    """name -> (path, "project" | "shipped"); a project file shadows the shipped one of the same name."""
    found: dict[str, tuple[Path, str]] = {}
    for root in (PROJECT_ROOT / folder, Path.cwd() / folder):
        for path in sorted(root.glob("*.yaml")) if root.is_dir() else []:
            found[path.stem] = (path, "project" if root.resolve() != (PROJECT_ROOT / folder).resolve() else "shipped")
    return dict(sorted(found.items()))


def _project_copy(folder: str, name: str) -> tuple[Path, bool]:
    """The user's copy ./<folder>/<name>.yaml, copied from the shipped file if it is not there yet."""
    if "/" in name or name.endswith((".yaml", ".yml")):
        path = Path(name)
        if not path.is_file():
            fail(f"{path}: no such file")
        return path, False
    dest = Path.cwd() / folder / f"{name}.yaml"
    if dest.exists():
        return dest, False
    shipped = PROJECT_ROOT / folder / f"{name}.yaml"
    if not shipped.is_file():
        kind = "template" if folder == "prompts" else "constitution"
        fail(f"no such {kind} {name!r} (selfplay {'prompts' if folder == 'prompts' else 'constitution'} list shows them)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shipped, dest)
    return dest, True


def _edit(path: Path, validate: Callable[[Path], str]) -> None:
    """Opens $EDITOR on `path`; keeps the edit only if `validate` accepts it, else restores the file."""
    editor = os.environ.get("EDITOR")
    if not editor:
        fail("$EDITOR is not set; e.g. export EDITOR=nano")
    before = path.read_bytes()
    try:
        code = subprocess.run([*shlex.split(editor), str(path)]).returncode
    except OSError as err:
        fail(f"cannot start $EDITOR {editor!r} ({err.strerror})")
    if code != 0:
        path.write_bytes(before)
        fail(f"the editor exited with status {code}; {path} left as it was")
    try:
        summary = validate(path)
    except SelfplayError as err:  # TemplateError, ConstitutionError
        path.write_bytes(before)
        fail(f"{err} -- edit refused, {path} restored to its previous content")
    typer.echo(f"saved {path}: {summary}")


def _same_name(path: Path, name: str) -> str | None:
    """Why the file cannot be found by its name, or None."""
    if name != path.stem:
        return f"name is {name!r} but the file is {path.name}; they must match, so the name finds the file"
    return None


# --- templates ---------------------------------------------------------------------------------------------


def validate_template_file(path: Path) -> str:
    """Loads and checks a template as its judge will; returns a one-line summary, raises TemplateError."""
    template = load_template(str(path))
    if template.kind not in TEMPLATE_VARIABLES:
        raise TemplateError(f"{path}: kind {template.kind!r} is read by no judge; one of {', '.join(TEMPLATE_VARIABLES)}")
    try:
        check_template(template, template.kind)
    except TemplateError as err:
        raise TemplateError(f"{path}: {str(err).removeprefix(f'template {template.ref}: ')}") from None
    if problem := _same_name(path, template.name):
        raise TemplateError(f"{path}: {problem}")
    return f"{template.ref} ({template.kind}), hash {template.hash}"


@prompts_app.command("list")
@guard
def prompts_list() -> None:
    """List judge templates: the shipped ones and your project's (./prompts), which shadow them.

    Example: selfplay prompts list
    """
    for name, (path, where) in _files("prompts").items():
        try:
            t = load_template(str(path))
            typer.echo(f"{name:24s} v{t.version:<3d} {t.kind:22s} {where:8s} {t.hash}  {t.description}")
        except TemplateError as err:
            typer.echo(f"{name:24s} INVALID  {where:8s} {err}")


@prompts_app.command("show")
@guard
def prompts_show(name: NameArg) -> None:
    """Print a template file as the judge loads it (your project's copy if you have one).

    Example: selfplay prompts show pairwise
    """
    path = template_path(name)
    if not path.is_file():
        raise TemplateError(f"{path}: no such template (selfplay prompts list shows them)")
    typer.echo(path.read_text(encoding="utf-8"), nl=False)


@prompts_app.command("edit")
@guard
def prompts_edit(name: NameArg) -> None:
    """Edit a template in $EDITOR: your project's copy (./prompts/NAME.yaml), made from the shipped one
    on first edit. Validated when the editor closes; an invalid file is refused and restored.

    Example: EDITOR=nano selfplay prompts edit self-rewarding
    """
    path, created = _project_copy("prompts", name)
    if created:
        typer.echo(f"copied the shipped template to {path}")
    _edit(path, validate_template_file)


@prompts_app.command("validate")
@guard
def prompts_validate(names: NamesArg = None) -> None:
    """Check templates: YAML, fields, parse regex, declared vs used variables, the variables their judge fills.

    Example: selfplay prompts validate            (all)   selfplay prompts validate ./prompts/mine.yaml
    """
    paths = [template_path(n) for n in names] if names else [p for p, _ in _files("prompts").values()]
    bad = 0
    for path in paths:
        try:
            typer.echo(f"ok    {path}: {validate_template_file(path)}")
        except TemplateError as err:
            typer.echo(f"error: {err}", err=True)
            bad += 1
    if bad:
        raise typer.Exit(1)


@prompts_app.command("render")
@guard
def prompts_render(
    run: RunOpt,
    iteration: IterationOpt,
    id_: Annotated[str, typer.Option("--id", help="a generation id (p/g0) or a comparison id (p/g0|p/g1)")],
    chat: Annotated[
        bool,
        typer.Option(
            "--chat",
            help="wrap in the judge model's chat template and forced prefix: the exact model input (loads its tokenizer)",
        ),
    ] = False,
) -> None:
    """Print the text the run's judge reads for one record, rendered with the current template files.

    Example: selfplay prompts render --run demo --iteration 1 --id pool-0042/g1
    """
    the_run = open_run(run)
    texts, notes = judge_inputs(the_run, iteration, id_)
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    if chat:
        tokenizer, prefix = _judge_tokenizer(the_run, iteration), _forced_prefix(the_run.cfg.judge)
        texts = {
            k: tokenizer.apply_chat_template([{"role": "user", "content": v}], tokenize=False, add_generation_prompt=True)
            + (prefix if not k.endswith(("/critique", "/revision")) else "")
            for k, v in texts.items()
        }
    for key, text in texts.items():
        if len(texts) > 1:
            typer.echo(f"### {key}")
        typer.echo(text)


def _forced_prefix(cfg) -> str:
    if cfg.method != "logprob" or cfg.kind not in ("pointwise", "pairwise", "constitution-pairwise"):
        return ""
    return load_template(cfg.template).score_prefix or ""


def _judge_tokenizer(run, k: int):
    cfg = run.cfg.judge
    if cfg.endpoint:
        return open_external(cfg).tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(cfg.model) if cfg.model else run.policy_for(k))


# --- constitutions -----------------------------------------------------------------------------------------


def validate_constitution_file(path: Path) -> str:
    c = load_constitution(str(path))
    if problem := _same_name(path, c.name):
        raise ConstitutionError(f"{path}: {problem}")
    return f"{c.ref}, {len(c.principles)} principles, hash {c.hash}"


@constitution_app.command("list")
@guard
def constitution_list() -> None:
    """List constitutions: the shipped ones and your project's (./constitutions), which shadow them.

    Example: selfplay constitution list
    """
    for name, (path, where) in _files("constitutions").items():
        try:
            c = load_constitution(str(path))
            typer.echo(f"{name:24s} v{c.version:<3d} {len(c.principles):3d} principles  {where:8s} {c.hash}  {c.description}")
        except ConstitutionError as err:
            typer.echo(f"{name:24s} INVALID  {where:8s} {err}")


@constitution_app.command("show")
@guard
def constitution_show(name: NameArg) -> None:
    """Print a constitution's principles (id, then critique, revision and comparison wording).

    Example: selfplay constitution show concise
    """
    c = load_constitution(name)
    typer.echo(f"{c.ref}  ({constitution_path(name)}, hash {c.hash})")
    if c.description:
        typer.echo(c.description)
    for p in c.principles:
        typer.echo(f"\n{p.id}\n  critique:   {p.critique}\n  revision:   {p.revision}\n  comparison: {p.comparison}")


SKELETON = """name: {name}
version: 1
description: "What these principles are for, in a sentence."
principles:
  # At least one. Each: a short id, a critique request, a revision request, a comparison question.
  - id: example
    critique: "Point out where the response fails to ..."
    revision: "Rewrite the response so that it ..."
    comparison: "Which of these responses better ...?"
"""


@constitution_app.command("new")
@guard
def constitution_new(
    name: Annotated[str, typer.Argument(help="name of the new constitution (letters, digits, - and _)")],
    from_: Annotated[
        str | None, typer.Option("--from", help="start from a copy of this constitution instead of a skeleton")
    ] = None,
) -> None:
    """Create ./constitutions/NAME.yaml in your project, from a skeleton or a copy; then edit it.

    Example: selfplay constitution new polite --from helpful-harmless
    """
    if not re.fullmatch(r"[A-Za-z0-9][\w-]*", name):
        fail(f"name {name!r}: use letters, digits, - and _")
    dest = Path.cwd() / "constitutions" / f"{name}.yaml"
    if dest.exists():
        fail(f"{dest} already exists; edit it with: selfplay constitution edit {name}")
    if from_:
        load_constitution(from_)  # the source must itself be valid
        text = constitution_path(from_).read_text(encoding="utf-8")
        text = re.sub(r"^name:.*$", f"name: {name}", text, count=1, flags=re.MULTILINE)
        text = re.sub(r"^version:.*$", "version: 1", text, count=1, flags=re.MULTILINE)
    else:
        text = SKELETON.format(name=name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text, encoding="utf-8")
    typer.echo(f"created {dest}: {validate_constitution_file(dest)}; edit it with: selfplay constitution edit {name}")


@constitution_app.command("edit")
@guard
def constitution_edit(name: NameArg) -> None:
    """Edit a constitution in $EDITOR: your project's copy (./constitutions/NAME.yaml), made from the shipped
    one on first edit. Validated when the editor closes; an invalid file is refused and restored.

    Example: EDITOR=nano selfplay constitution edit concise
    """
    path, created = _project_copy("constitutions", name)
    if created:
        typer.echo(f"copied the shipped constitution to {path}")
    _edit(path, validate_constitution_file)


@constitution_app.command("validate")
@guard
def constitution_validate(names: NamesArg = None) -> None:
    """Check constitutions: name, version, at least one principle, every principle complete, no unknown keys.

    Example: selfplay constitution validate          (all)   selfplay constitution validate ./constitutions/mine.yaml
    """
    paths = [constitution_path(n) for n in names] if names else [p for p, _ in _files("constitutions").values()]
    bad = 0
    for path in paths:
        try:
            typer.echo(f"ok    {path}: {validate_constitution_file(path)}")
        except ConstitutionError as err:
            typer.echo(f"error: {err}", err=True)
            bad += 1
    if bad:
        raise typer.Exit(1)
