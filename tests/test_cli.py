"""The CLI as a user meets it: help without heavy imports, one-line errors, viewing commands."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from selfplay.cli import app
from selfplay.config import load_config
from selfplay.rundir import Manifest, Run, StageInfo
from selfplay.records import Judgement, Prompt, write_json, write_records

runner = CliRunner()


def test_help_imports_neither_torch_nor_vllm():
    code = ("import sys; from selfplay.cli import app; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'vllm', 'transformers', 'trl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_unknown_config_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("judge:\n  knd: pairwise\n")
    line = _error_line(runner.invoke(app, ["run", "--config", str(cfg), "--name", "x"]))
    assert line == f"error: {cfg}: judge.knd: unknown key"


def test_unknown_model_path(tmp_path):
    line = _error_line(runner.invoke(app, ["run", "--set", f"model={tmp_path}/nope", "--name", "x"]))
    assert "unknown model" in line and "nope" in line
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_malformed_pool_line(tmp_path, tiny_model_dir):
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"id": "a", "prompt": "Hi"}\n{"id": "b", "prompt": \n')
    line = _error_line(runner.invoke(app, ["run", "--set", f"model={tiny_model_dir}", "--set", f"prompts.pool={pool}", "--name", "y"]))
    assert line == f"error: {pool}:2: malformed JSON (Expecting value)"


def test_resume_of_missing_run(tmp_path):
    line = _error_line(runner.invoke(app, ["run", "--resume", "--name", "never"]))
    assert "not a selfplay run directory" in line


def _small_run(tmp_path) -> Run:
    run = Run.create(tmp_path / "runs" / "view", load_config(None))
    p = run.paths(1)
    write_records(p.prompts, [Prompt(id="a", text="Say hi")])
    judgements = [
        Judgement(id=f"a/g{j}/j", prompt_id="a", generation_ids=[f"a/g{j}"], judge="pointwise", method="text",
                  raw=[raw], sample_scores=[score], score=score, status="ok" if score else "unparseable")
        for j, (raw, score) in enumerate([("Score: 4", 4.0), ("no verdict", None), ("Score: 2", 2.0)])
    ]
    write_records(p.judgements, judgements)
    manifest = Manifest(iteration=1, policy="m", stages={"prompts": StageInfo(status="done", seconds=0.0, count=1)},
                        generation={"count": 3, "mean_tokens": 10.0, "cut_at_max": 0.0},
                        judge={"parse_rate": 0.667, "mean_score": 3.0})
    write_json(p.manifest, manifest.model_dump(mode="json"))
    return run


def test_inspect_summary_and_filters(tmp_path):
    _small_run(tmp_path)
    result = runner.invoke(app, ["inspect", "view", "--json"])
    assert result.exit_code == 0, result.output
    [row] = [json.loads(line) for line in result.output.splitlines()]
    assert (row["iteration"], row["prompts"], row["generations"], row["parse_rate"]) == (1, 1, 3, 0.667)

    result = runner.invoke(app, ["inspect", "view", "-k", "1", "--stage", "judgements", "--min-score", "3", "--json"])
    assert [json.loads(line)["id"] for line in result.output.splitlines()] == ["a/g0/j"]
    result = runner.invoke(app, ["inspect", "view", "-k", "1", "--status", "unparseable", "--json"])
    assert [json.loads(line)["raw"] for line in result.output.splitlines()] == [["no verdict"]]

    table = runner.invoke(app, ["inspect", "view", "-k", "1"])
    assert table.exit_code == 0 and "a/g0/j" in table.output and "unparseable" in table.output
    assert "0.67" in runner.invoke(app, ["inspect", "view"]).output


def test_inspect_missing_stage_file(tmp_path):
    _small_run(tmp_path)
    line = _error_line(runner.invoke(app, ["inspect", "view", "-k", "1", "--stage", "pairs"]))
    assert "pairs.jsonl: no such file" in line


def test_train_launcher_flags_are_validated_before_anything_runs(tmp_path):
    Run.create(tmp_path / "r", load_config(None, []))
    line = _error_line(runner.invoke(app, ["train", "--run", str(tmp_path / "r"), "-k", "1", "--launcher", "mpi"]))
    assert line.startswith("error: override: launch.launcher: Input should be 'none' or 'accelerate'")
    line = _error_line(runner.invoke(app, ["train", "--run", str(tmp_path / "r"), "-k", "1", "--launcher", "accelerate",
                                           "--accelerate-config", str(tmp_path / "none.yaml")]))
    assert line == f"error: launch.accelerate_config: no such file {tmp_path / 'none.yaml'}"
    assert "launcher: none" in (tmp_path / "r" / "config.yaml").read_text()  # the run's config is not rewritten
