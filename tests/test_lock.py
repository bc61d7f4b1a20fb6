"""One writer per run: a second is refused with one line, a dead writer's lock is taken over, and only the lock's
holder removes what killed writers left; opening a run to read it deletes nothing."""

import os
import signal
import subprocess
import sys
import time

import pytest

from selfplay.config import load_config
from selfplay.rundir import Run, RunError


@pytest.fixture
def run(tmp_path):
    return Run.create(tmp_path / "r", load_config(None, []))


def leftovers(run):
    """What killed writes leave: one of our temp files, and a safetensors temp file inside a merged policy."""
    ours = run.root / "iter_001" / ".generations.jsonl.abc123.tmp"
    rust = run.root / "iter_001" / "policy" / "merged" / ".tmpA1b2C3"
    for path in (ours, rust):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")
    return ours, rust


def test_a_second_writer_is_refused(run):
    with run.writing():
        assert f"pid {os.getpid()}" in (run.root / ".writer").read_text()
        with pytest.raises(RunError, match=rf"pid {os.getpid()} on .* is writing this run; wait for it"):
            with Run.open(run.root).writing():
                pass
    with Run.open(run.root).writing():  # released: the next writer gets it
        pass
    assert not (run.root / ".writer").exists()


def test_readers_delete_nothing_and_the_writer_cleans_up(run):
    ours, rust = leftovers(run)
    Run.open(run.root)  # inspect, show, report and eval open runs to read them
    assert ours.exists() and rust.exists()
    with Run.open(run.root).writing():
        assert not ours.exists() and not rust.exists()
    assert (run.root / "config.yaml").exists() and (run.root / "run.json").exists()


def test_a_killed_writers_lock_is_taken_over(run):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom selfplay.rundir import Run\n"
        f"with Run.open({str(run.root)!r}).writing():\n    print('locked', flush=True)\n    time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunError, match=rf"pid {holder.pid} on"):
            with Run.open(run.root).writing():
                pass
        ours, rust = leftovers(run)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        deadline = time.monotonic() + 10
        while True:  # the kernel drops a dead process's lock when it reaps it
            try:
                with Run.open(run.root).writing():
                    assert not ours.exists() and not rust.exists()
                break
            except RunError:
                assert time.monotonic() < deadline, "the dead writer's lock was never released"
                time.sleep(0.05)
    finally:
        holder.kill()
