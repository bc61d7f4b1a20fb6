"""Every `selfplay run` line of the README loads as a config: an example a user copies is never refused by the
config's own rules (a section of another algorithm, pairing.revise without the checkers, a misspelt key)."""

from __future__ import annotations

import re
import shlex

import pytest

from selfplay.config import PROJECT_ROOT, load_config


def readme_run_lines() -> list[str]:
    text = (PROJECT_ROOT / "README.md").read_text().replace("\\\n", " ")
    shell = dict(re.findall(r'^(\w+)="([^"]*)"$', text, flags=re.M))  # e.g. SR="-c configs/self-rewarding.yaml"
    lines = [line for line in text.splitlines() if re.match(r"^(\w+=\S+ )*selfplay run\b", line)]
    return [re.sub(r"\$(\w+)", lambda m: shell[m.group(1)], line.split("  #")[0]) for line in lines]


def test_the_readme_has_run_examples():
    assert len(readme_run_lines()) >= 20


@pytest.mark.parametrize("line", readme_run_lines())
def test_a_readme_run_line_loads(line):
    args = shlex.split(line)
    args = args[args.index("run") + 1 :]
    config, sets = PROJECT_ROOT / "configs" / "default.yaml", []
    for flag, value in zip(args, args[1:]):
        if flag in ("-c", "--config"):
            config = PROJECT_ROOT / value
        elif flag in ("-s", "--set"):
            sets.append(value)
    load_config(config, sets)
