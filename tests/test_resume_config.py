"""Resume means the run's own config: --resume without --config continues under the run's config.yaml; a change
needs --force, and a forced change is saved in config.yaml and recorded in run.json (and so in later manifests)."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from selfplay.cli import app
from selfplay.config import load_config
from selfplay.rundir import Run, RunError


@pytest.fixture
def run(tmp_path):
    return Run.create(tmp_path / "runs" / "small", load_config(None, ["prompts.per_iteration=4"]))


def saved_per_iteration(run) -> int:
    return yaml.safe_load((run.root / "config.yaml").read_text())["prompts"]["per_iteration"]


def test_resume_continues_under_the_runs_own_config(run):
    assert Run.resume(run.root).cfg.prompts.per_iteration == 4  # not configs/default.yaml's 64


def test_a_changed_config_needs_force_and_is_recorded_when_writing_starts(run):
    with pytest.raises(RunError, match=r"config differs from the saved one \(prompts.per_iteration: 4 -> 8\).*--force"):
        Run.resume(run.root, overrides=["prompts.per_iteration=8"])
    forced = Run.resume(run.root, overrides=["prompts.per_iteration=8"], force=True)
    assert forced.cfg.prompts.per_iteration == 8 and saved_per_iteration(run) == 4  # opening writes nothing
    with forced.writing():
        pass
    assert saved_per_iteration(run) == 8
    [change] = json.loads((run.root / "run.json").read_text())["changes"]
    assert change["diff"] == "prompts.per_iteration: 4 -> 8" and change["digest"] == forced.cfg.digest()
    assert forced.config_changes() == ["prompts.per_iteration: 4 -> 8"]
    assert Run.resume(run.root).cfg.prompts.per_iteration == 8  # the run's config from now on


def test_resume_with_an_explicit_config_file_is_checked_against_the_run(run, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("prompts:\n  per_iteration: 6\n")
    with pytest.raises(RunError, match=r"prompts.per_iteration: 4 -> 6"):
        Run.resume(run.root, other)


def test_the_cli_resumes_under_the_runs_config_and_refuses_a_change(run, monkeypatch):
    monkeypatch.setenv("SELFPLAY_RUNS_DIR", str(run.root.parent))
    result = CliRunner().invoke(app, ["run", "--name", "small", "--resume", "--set", "prompts.per_iteration=8"])
    assert result.exit_code == 1 and "prompts.per_iteration: 4 -> 8" in result.output and "--force" in result.output
    result = CliRunner().invoke(app, ["run", "--resume"])
    assert result.exit_code == 1 and "--resume needs --name" in result.output
