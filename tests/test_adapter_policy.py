"""GPU-sized artefacts (train.lora.serve): an iteration keeps its LoRA adapter alone, the next one serves base +
adapter and trains the same adapter on, and the manifest records the lineage. Checked on the CPU with
SELFPLAY_FAKE_DEVICE=cuda, which makes serve=auto decide as on a GPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from safetensors.torch import load_file

from selfplay.config import load_config
from selfplay.generation import HFGenerator
from selfplay.loop import run_loop
from selfplay.policy import FAKE_DEVICE_ENV, PolicyError, adapter_base, is_adapter, keep_adapter
from selfplay.records import Generation, Prompt, read_records
from selfplay.rundir import Run
from selfplay.serving import check_serving

pytestmark = pytest.mark.slow


def tiny(model_dir: Path, *extra: str):
    return load_config(None, [
        f"model={model_dir}", "iterations=2", "prompts.per_iteration=3", "generation.backend=transformers",
        "generation.n=3", "generation.max_tokens=12", "train.batch_size=2", "train.max_length=96",
        "train.learning_rate=1e-3", "pairing.min_margin=0.0", "train.min_pairs=1", *extra,
    ])


@pytest.fixture(scope="module")
def two_runs(tiny_model_dir, tmp_path_factory):
    """The same two iterations, once keeping adapters (as on a GPU), once merging (as on a CPU)."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("serve")
    try:
        mp.setenv(FAKE_DEVICE_ENV, "cuda")
        adapter = Run.create(root / "adapter", tiny(tiny_model_dir))  # serve: auto
        run_loop(adapter, log=lambda _: None)
        mp.delenv(FAKE_DEVICE_ENV)
        merged = Run.create(root / "merged", tiny(tiny_model_dir))
        run_loop(merged, log=lambda _: None)
    finally:
        mp.undo()
    return adapter, merged


def test_auto_keeps_the_adapter_only_on_a_gpu(monkeypatch):
    monkeypatch.delenv(FAKE_DEVICE_ENV, raising=False)
    assert not keep_adapter("auto") and keep_adapter("adapter") and not keep_adapter("merged")
    monkeypatch.setenv(FAKE_DEVICE_ENV, "cuda")
    assert keep_adapter("auto") and not keep_adapter("merged")


def test_an_iteration_writes_its_adapter_not_a_merged_copy(two_runs, tiny_model_dir):
    adapter_run, merged_run = two_runs
    for k in (1, 2):
        policy_dir = adapter_run.paths(k).policy
        train = json.loads(adapter_run.paths(k).train.read_text())
        assert train["policy"] == train["adapter"] == str(policy_dir / "adapter")
        assert not (policy_dir / "merged").exists() and is_adapter(policy_dir / "adapter")
        assert adapter_base(policy_dir / "adapter") == tiny_model_dir  # the base stays the configured model
        assert (merged_run.paths(k).policy / "merged" / "model.safetensors").exists()
    size = lambda folder: sum(f.stat().st_size for f in folder.rglob("*.safetensors"))  # noqa: E731
    assert size(adapter_run.paths(1).policy) < size(merged_run.paths(1).policy) / 2


def test_the_next_iteration_serves_base_plus_adapter_and_records_the_lineage(two_runs, tiny_model_dir):
    adapter_run, _ = two_runs
    served = adapter_run.paths(1).policy / "adapter"
    assert {g.policy for g in read_records(adapter_run.paths(2).generations, Generation)} == {str(served)}
    manifest = json.loads(adapter_run.paths(2).manifest.read_text())
    assert manifest["lineage"] == {
        "policy": str(served), "form": "adapter", "base": str(tiny_model_dir), "adapter": str(served),
        "trained_from": str(tiny_model_dir),
    }
    first = json.loads(adapter_run.paths(1).manifest.read_text())["lineage"]
    assert first["form"] == "checkpoint" and first["trained_from"] is None
    serving = manifest["serving"]  # served in fp32: the adapter's update is kept exactly
    assert serving["changed_tensors"] > 0 and serving["rounding_error"] == 0.0
    rounded = check_serving(served, tiny_model_dir, "bfloat16")  # what bf16 serving of the adapter would lose
    assert 0 < rounded.rounding_error < 0.01  # the factors' rounding only: the base is untouched


def test_adapter_and_merged_policies_are_the_same_policy(two_runs):
    """Same training either way (the adapter weights match), and base + adapter generates what the merged model
    generates."""
    adapter_run, merged_run = two_runs
    a = load_file(adapter_run.paths(1).policy / "adapter" / "adapter_model.safetensors")
    b = load_file(merged_run.paths(1).policy / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(a[name].equal(b[name]) for name in a)
    prompts = read_records(adapter_run.paths(1).prompts, Prompt)
    cfg = adapter_run.cfg.generation.model_copy(update={"temperature": 0.0, "max_tokens": 10})
    texts = [[g.text for g in HFGenerator(merged_run.paths(1).policy / folder, cfg, 0).generate(prompts, 1)]
             for folder in ("merged",)]
    texts.append([g.text for g in HFGenerator(adapter_run.paths(1).policy / "adapter", cfg, 0).generate(prompts, 1)])
    assert texts[0] == texts[1]


def test_training_goes_on_in_the_same_adapter_against_the_previous_policy(two_runs):
    """Iteration 2 loads iteration 1's adapter trainable; TRL copies it as the frozen reference, so the first DPO
    step compares the policy with itself: loss ln 2, exactly as from a merged checkpoint."""
    adapter_run, merged_run = two_runs
    for run in (adapter_run, merged_run):
        train = json.loads(run.paths(2).train.read_text())
        assert train["steps"] <= 3  # history_mean's first window is then the first step alone
        assert train["loss_first"] == pytest.approx(math.log(2), abs=1e-4)
    first = load_file(adapter_run.paths(1).policy / "adapter" / "adapter_model.safetensors")
    second = load_file(adapter_run.paths(2).policy / "adapter" / "adapter_model.safetensors")
    assert first.keys() == second.keys() and not all(first[n].equal(second[n]) for n in first)  # trained on
    assert not any("ref" in name.split(".") for name in second)  # the reference copy is not saved


def test_an_adapter_whose_base_is_gone_is_one_line(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone"), "r": 8}))
    with pytest.raises(PolicyError, match="the adapter's base checkpoint .* is not a folder on this machine"):
        adapter_base(folder)
