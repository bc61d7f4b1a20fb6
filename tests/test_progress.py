"""Our progress bars (counts, rate, time left, training's loss) and the libraries' output turned off unless --verbose."""

from __future__ import annotations

import io
import logging
import os
from types import SimpleNamespace

import pytest
from rich.console import Console
from typer.testing import CliRunner

import selfplay.progress as progress_module
from selfplay.cli import app
from selfplay.progress import Bar, progress
from selfplay.quiet import QUIET_ENV, quiet_libraries


@pytest.fixture
def terminal(monkeypatch):
    """Bars on, drawn into a string as a terminal would get them."""
    out = io.StringIO()
    monkeypatch.setattr(progress_module, "bars_enabled", lambda: True)
    monkeypatch.setattr(progress_module, "Console", lambda stderr: Console(file=out, force_terminal=True, width=150))
    return out


def test_bars_are_off_without_a_terminal(monkeypatch, capsys):
    monkeypatch.delenv("SELFPLAY_QUIET", raising=False)
    assert list(progress(range(3), "generate")) == [0, 1, 2]  # pytest's stderr is not a terminal
    assert capsys.readouterr().err == ""
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    monkeypatch.setenv("SELFPLAY_QUIET", "1")
    assert not progress_module.bars_enabled()


def test_a_bar_counts_chunks_by_their_size_and_shows_rate_and_time_left(terminal):
    chunks = [["a", "b"], ["c", "d"], ["e"]]
    assert list(progress(chunks, "generate", unit="prompt", size=len)) == chunks
    drawn = terminal.getvalue()
    assert "generate" in drawn and "5/5" in drawn and "prompt" in drawn and "eta" in drawn


def test_the_training_bar_follows_the_optimizer_steps_and_shows_the_loss(terminal):
    from selfplay.train.guard import StepBar

    bar = StepBar()
    state = SimpleNamespace(max_steps=4, global_step=1)  # resumed at step 1
    bar.on_train_begin(None, state, None)
    for step, loss in ((2, 0.6931), (3, 0.5), (4, 0.25)):
        state.global_step = step
        bar.on_step_end(None, state, None)
        bar.on_log(None, state, None, logs={"loss": loss})
    task = bar.bar._progress.tasks[0]
    assert (task.completed, task.total, task.fields["info"]) == (4, 4, "loss 0.250")
    bar.on_train_end(None, state, None)
    assert bar.bar is None and "loss 0.250" in terminal.getvalue()


def test_an_empty_bar_is_a_no_op(terminal):
    with Bar("judge", total=0) as bar:
        bar.advance(3, loss=1.0)
    assert terminal.getvalue() == ""


def test_quiet_keeps_what_the_user_set(monkeypatch):
    for key in QUIET_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    level = logging.getLogger("vllm").level
    try:
        quiet_libraries()
        assert os.environ["TRANSFORMERS_VERBOSITY"] == "info"
        assert all(os.environ[key] == value for key, value in QUIET_ENV.items() if key != "TRANSFORMERS_VERBOSITY")
        assert logging.getLogger("vllm").level == logging.ERROR
    finally:
        logging.getLogger("vllm").setLevel(level)


def test_verbose_is_a_global_option():
    out = CliRunner().invoke(app, ["--help"])
    assert out.exit_code == 0 and "--verbose" in out.output
