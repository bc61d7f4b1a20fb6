"""Judge prompt templates: YAML files in prompts/ that declare their variables and how to parse output.

A template is validated on load: the `{name}` fields in its body must be exactly its declared
variables. Values are delimited on render so a response cannot close its own field and pose as the
rubric (prompt injection): any tag that looks like one of the template's delimiters is escaped.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from selfplay.config import resolve_data_path
from selfplay.errors import SelfplayError
from selfplay.records import file_hash


class TemplateError(SelfplayError, ValueError):
    """A template that cannot be used; one line naming the file and the problem."""


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: int = Field(ge=1)
    kind: str  # which judge reads it: pointwise | pairwise | ...
    description: str = ""
    variables: list[str]  # exactly the {fields} in `template`
    output_format: str  # what the judge is asked to end with, shown in docs and errors
    parse: str  # regex; group 1 is the verdict (a number for pointwise, "A"/"B" for pairwise)
    score_prefix: str | None = None  # forced answer prefix for log-probability scoring, e.g. "Score:"
    scale: tuple[float, float] | None = None  # pointwise score range, inclusive
    operations: dict[str, str] = {}  # kind evol: operation name -> the text it fills {operation} with (selfplay.evol)
    template: str
    hash: str = ""  # sha256 of the file, first 12 hex; filled on load

    @field_validator("parse")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            if re.compile(value).groups < 1:
                raise ValueError("parse regex needs one capture group (the verdict)")
        except re.error as err:
            raise ValueError(f"parse is not a valid regex: {err}") from None
        return value

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def fields(self) -> set[str]:
        try:
            return {name for _, name, _, _ in string.Formatter().parse(self.template) if name is not None}
        except ValueError as err:  # a stray { or }: str.format could never fill the template
            raise TemplateError(f"template {self.ref}: {err} (write a literal brace as {{{{ or }}}})") from None

    def render(self, **values: str) -> str:
        missing = set(self.variables) - values.keys()
        if missing:
            raise TemplateError(f"template {self.ref}: missing variable(s) {', '.join(sorted(missing))}")
        unknown = values.keys() - set(self.variables)
        if unknown:
            raise TemplateError(f"template {self.ref}: unknown variable(s) {', '.join(sorted(unknown))}")
        return self.template.format_map({k: escape_delimiters(v) for k, v in values.items()})

    def parse_verdict(self, text: str) -> str | None:
        """The last match's group 1 (judges often restate the format before answering), or None."""
        matches = re.findall(self.parse, text)
        if not matches:
            return None
        last = matches[-1]
        return last[0] if isinstance(last, tuple) else last


_TAG = re.compile(r"<(/?)([A-Za-z_][\w-]*)>")


def escape_delimiters(value: str) -> str:
    """'<response>' inside a value becomes '&lt;response&gt;', so it cannot end or open a field."""
    return _TAG.sub(lambda m: f"&lt;{m.group(1)}{m.group(2)}&gt;", value)


def template_path(name: str) -> Path:
    """A template name ('self-rewarding') in prompts/, or a path to a YAML file."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return resolve_data_path(name)
    return resolve_data_path(f"prompts/{name}.yaml")


def load_template(name: str) -> Template:
    path = template_path(name)
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TemplateError(f"{path}: no such template (selfplay prompts list shows them)") from None
    except OSError as err:  # a directory, no permission
        raise TemplateError(f"{path}: cannot read the template ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise TemplateError(f"{path}: not valid YAML ({err.__class__.__name__})") from None
    if not isinstance(tree, dict):
        raise TemplateError(f"{path}: expected a mapping with name, version, variables, template, ...")
    try:
        template = Template.model_validate({**tree, "hash": file_hash(path)})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "template"
        raise TemplateError(f"{path}: {where}: {first['msg']}") from None
    try:
        used, declared = template.fields(), set(template.variables)
    except TemplateError as err:
        raise TemplateError(f"{path}: {str(err).removeprefix(f'template {template.ref}: ')}") from None
    if used - declared:
        raise TemplateError(f"{path}: variable(s) {', '.join(sorted(used - declared))} used in the template but not declared")
    if declared - used:
        raise TemplateError(f"{path}: variable(s) {', '.join(sorted(declared - used))} declared but not used in the template")
    return template
