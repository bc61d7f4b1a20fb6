"""`selfplay prompts ...` and `selfplay constitution ...`: edits land in the project, invalid edits are
refused and restored, render prints what the judge reads. The sub-apps are tested on their own."""

import sys

import pytest
import typer
from typer.testing import CliRunner

from selfplay.cli.judges import constitution_app, prompts_app
from selfplay.config import PROJECT_ROOT, load_config
from selfplay.rundir import Run
from selfplay.records import Judgement, derive_seed, write_records
from selfplay.templates import load_template

from conftest import make_generation, make_prompt

runner = CliRunner()
app = typer.Typer()
app.add_typer(prompts_app, name="prompts")
app.add_typer(constitution_app, name="constitution")


def error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def editor(tmp_path, monkeypatch, old: str, new: str) -> None:
    """$EDITOR = a script replacing `old` by `new` in the file it is given."""
    script = tmp_path / "fake_editor.py"
    script.write_text("import sys, pathlib\np = pathlib.Path(sys.argv[1])\n"
                      f"p.write_text(p.read_text().replace({old!r}, {new!r}))\n")
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")


def test_prompts_list_show_validate(project):
    result = runner.invoke(app, ["prompts", "list"])
    assert result.exit_code == 0, result.output
    for name in ("self-rewarding", "pairwise", "constitution-pairwise", "constitution-critique", "constitution-revision"):
        assert name in result.output
    result = runner.invoke(app, ["prompts", "show", "pairwise"])
    assert result.output == (PROJECT_ROOT / "prompts" / "pairwise.yaml").read_text()
    result = runner.invoke(app, ["prompts", "validate"])
    shipped = len(list((PROJECT_ROOT / "prompts").glob("*.yaml")))
    assert result.exit_code == 0 and result.output.count("ok ") == shipped >= 5, result.output
    assert "error: " in error_line(runner.invoke(app, ["prompts", "show", "nope"]))


def test_prompts_edit_copies_into_the_project_and_validates(project, monkeypatch):
    shipped = (PROJECT_ROOT / "prompts" / "self-rewarding.yaml").read_text()
    editor(project, monkeypatch, "version: 1", "version: 2")
    result = runner.invoke(app, ["prompts", "edit", "self-rewarding"])
    assert result.exit_code == 0, result.output
    mine = project / "prompts" / "self-rewarding.yaml"
    assert "version: 2" in mine.read_text() and "saved" in result.output and "self-rewarding@2" in result.output
    assert (PROJECT_ROOT / "prompts" / "self-rewarding.yaml").read_text() == shipped  # the package is untouched
    assert load_template("self-rewarding").version == 2  # the project's copy now shadows the shipped one
    assert "project" in runner.invoke(app, ["prompts", "list"]).output

    editor(project, monkeypatch, "{response}", "{answer}")  # a variable that no judge fills
    line = error_line(runner.invoke(app, ["prompts", "edit", "self-rewarding"]))
    assert "answer used in the template but not declared" in line and "edit refused" in line
    assert "version: 2" in mine.read_text() and "{response}" in mine.read_text()  # restored


def test_prompts_edit_refuses_a_kind_mismatch_and_a_missing_editor(project, monkeypatch):
    editor(project, monkeypatch, "kind: pairwise", "kind: pointwise")
    line = error_line(runner.invoke(app, ["prompts", "edit", "pairwise"]))
    assert "variables ['prompt', 'response_a', 'response_b'], but a pointwise judge fills ['prompt', 'response']" in line
    assert (project / "prompts" / "pairwise.yaml").read_text() == (PROJECT_ROOT / "prompts" / "pairwise.yaml").read_text()
    monkeypatch.delenv("EDITOR")
    assert "$EDITOR is not set" in error_line(runner.invoke(app, ["prompts", "edit", "pairwise"]))
    assert "no such template 'nope'" in error_line(runner.invoke(app, ["prompts", "edit", "nope"]))


def test_prompts_validate_reports_bad_files(project):
    (project / "prompts").mkdir()
    (project / "prompts" / "broken.yaml").write_text("name: broken\nversion: 1\nkind: pointwise\nvariables: [prompt]\n"
                                                     "output_format: x\nparse: 'Score: ([1-5])'\ntemplate: 'Q {prompt}'\n")
    line = error_line(runner.invoke(app, ["prompts", "validate"]))
    assert "broken.yaml" in line and "a pointwise judge fills ['prompt', 'response']" in line


def test_constitution_commands(project, monkeypatch):
    result = runner.invoke(app, ["constitution", "list"])
    assert result.exit_code == 0 and "helpful-harmless" in result.output and "concise" in result.output
    result = runner.invoke(app, ["constitution", "show", "concise"])
    assert result.exit_code == 0 and "no-filler" in result.output and "comparison:" in result.output
    assert runner.invoke(app, ["constitution", "validate"]).exit_code == 0

    result = runner.invoke(app, ["constitution", "new", "polite"])
    assert result.exit_code == 0, result.output
    assert "polite@1, 1 principles" in result.output and (project / "constitutions" / "polite.yaml").exists()
    result = runner.invoke(app, ["constitution", "new", "mine", "--from", "concise"])
    assert result.exit_code == 0 and "mine@1, 8 principles" in result.output
    assert "already exists" in error_line(runner.invoke(app, ["constitution", "new", "mine"]))

    editor(project, monkeypatch, "    critique: \"Point out", "    critiq: \"Point out")
    line = error_line(runner.invoke(app, ["constitution", "edit", "polite"]))
    assert "principles.0.critiq: unknown key" in line and "restored" in line
    editor(project, monkeypatch, "principles:", "principles: []\nold_principles:")
    line = error_line(runner.invoke(app, ["constitution", "edit", "concise"]))
    assert "no principles" in line
    assert (project / "constitutions" / "concise.yaml").read_text() == (PROJECT_ROOT / "constitutions" / "concise.yaml").read_text()
    editor(project, monkeypatch, "name: concise", "name: brief")
    assert "name is 'brief' but the file is concise.yaml" in error_line(runner.invoke(app, ["constitution", "edit", "concise"]))


def make_run(root, overrides, judgements=()):
    cfg = load_config(None, overrides)
    run = Run.create(root, cfg)
    p = run.paths(1)
    prompts = [make_prompt("a", "Name a colour.")]
    gens = [make_generation("a", 0, "Blue."), make_generation("a", 1, "I like <b>red</b>.")]
    write_records(p.prompts, prompts)
    write_records(p.generations, gens)
    if judgements:
        write_records(p.judgements, judgements)
    return run, prompts, gens


def test_render_pointwise_and_pairwise(project):
    run, prompts, gens = make_run(project / "r1", [])
    result = runner.invoke(app, ["prompts", "render", "--run", str(run.root), "-k", "1", "--id", "a/g1"])
    assert result.exit_code == 0, result.output
    assert result.output == load_template("self-rewarding").render(prompt="Name a colour.", response="I like <b>red</b>.") + "\n"
    assert "&lt;b&gt;red&lt;/b&gt;" in result.output  # delimited as the judge sees it

    run, _, _ = make_run(project / "r2", ["judge.kind=pairwise"])
    result = runner.invoke(app, ["prompts", "render", "--run", str(run.root), "-k", "1", "--id", "a/g1|a/g0"])
    assert result.exit_code == 0, result.output
    assert result.output == load_template("pairwise").render(prompt="Name a colour.", response_a="I like <b>red</b>.",
                                                             response_b="Blue.") + "\n"
    result = runner.invoke(app, ["prompts", "render", "--run", str(run.root), "-k", "1", "--id", "a/g0"])
    assert result.output.count("### ") == 2 and "### a/g0|a/g1" in result.output  # both orders
    line = error_line(runner.invoke(app, ["prompts", "render", "--run", str(run.root), "-k", "1", "--id", "zz/g9"]))
    assert line == "error: iteration 1: no judge input for 'zz/g9' (ids look like a/g0|a/g1)"


def test_render_chat_is_the_exact_model_input(project, tiny_chat_model_dir):
    from transformers import AutoTokenizer

    run, _, _ = make_run(project / "chat", [f"model={tiny_chat_model_dir}"])
    result = runner.invoke(app, ["prompts", "render", "--run", str(run.root), "-k", "1", "--id", "a/g1", "--chat"])
    assert result.exit_code == 0, result.output
    user = load_template("self-rewarding").render(prompt="Name a colour.", response="I like <b>red</b>.")
    chat = AutoTokenizer.from_pretrained(tiny_chat_model_dir).apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
    # The chat template around the judge prompt, then the forced score prefix the log-probability is read after.
    assert result.output == chat + load_template("self-rewarding").score_prefix + "\n"
    assert result.output.startswith("<|im_start|>user\n")

    run, _, _ = make_run(project / "chat-text", [f"model={tiny_chat_model_dir}", "judge.method=text"])
    result = runner.invoke(app, ["prompts", "render", "--run", str(run.root), "-k", "1", "--id", "a/g1", "--chat"])
    assert result.output == chat + "\n"  # sampled text: no forced prefix


def test_render_constitution_revision_uses_the_recorded_critique(project):
    from selfplay.constitutions import load_constitution

    critique = Judgement(id="a/g0/j", prompt_id="a", generation_ids=["a/g0"], judge="constitution-revision", method="revision",
                         raw=["Too terse.", "Blue, like the sky.", "Blue, like the sky."], sample_scores=[], score=None,
                         status="ok", template_hash="old+hash")
    run, _, _ = make_run(project / "r", ["judge.kind=constitution-revision", "judge.constitution=concise"], [critique])
    result = runner.invoke(app, ["prompts", "render", "--run", str(run.root), "-k", "1", "--id", "a/g0"])
    assert result.exit_code == 0, result.output
    principle = load_constitution("concise").sample(derive_seed(derive_seed(0, 1, "judge"), "a/g0"))
    assert "### a/g0/critique" in result.output and "### a/g0/revision" in result.output
    assert principle.critique in result.output and principle.revision in result.output
    assert "<critique>\nToo terse.\n</critique>" in result.output
    assert "note: the template changed since iteration 1 was judged" in result.output

    run, _, _ = make_run(project / "r3", ["judge.kind=program", "judge.program=selfplay.program_judges:length_bounds"])
    line = error_line(runner.invoke(app, ["prompts", "render", "--run", str(run.root), "-k", "1", "--id", "a/g0"]))
    assert "reads no prompt" in line
