"""The preference-loss family: train.dpo.loss (TRL 1.16's DPO losses, alone or added with weights), KTO on single
judged responses (and the seed set's pointwise lines), ORPO and SimPO. Config validation and the TRL config
objects are fast; one slow test per trainer trains the tiny local model."""

import inspect
import json
import math
import re
from pathlib import Path

import pytest
import yaml

from selfplay.config import DPO_LOSSES, ConfigError, KTOSection, TrainConfig, load_config
from selfplay.records import Judgement, KTOStats, Pair, TrainInputs, TrainResult, read_records
from selfplay.seed import ScoredResponse
from selfplay.train import make_trainer
from selfplay.train.dpo import DPOTrainer
from selfplay.train.kto import KTOExample, KTOTrainer, even_cut, interleave, kto_examples, kto_weights, seed_examples, too_few
from selfplay.train.orpo import ORPOTrainer, SimPOTrainer

from conftest import make_generation, make_prompt


def error(*overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(None, list(overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


# --- train.dpo.loss ----------------------------------------------------------------------------------------------


def test_the_listed_losses_are_exactly_the_ones_trl_computes():
    from trl.trainer import dpo_trainer

    computed = set(re.findall(r'loss_type == "(\w+)"', inspect.getsource(dpo_trainer.DPOTrainer)))
    assert computed == set(DPO_LOSSES) and len(DPO_LOSSES) == 15


@pytest.mark.parametrize("loss", list(DPO_LOSSES))
def test_every_dpo_loss_is_accepted_alone(loss):
    extra = ["train.dpo.label_smoothing=0.001"] if loss == "exo_pair" else []
    dpo = load_config(None, [f"train.dpo.loss={loss}", *extra]).train.dpo
    assert dpo.loss == loss and dpo.loss_terms() == {loss: 1.0}


def test_losses_add_with_weights_and_sft_weight_is_the_sft_term():
    dpo = load_config(None, ["train.dpo.loss={sigmoid: 1, sft: 0.5}"]).train.dpo
    assert dpo.loss == {"sigmoid": 1.0, "sft": 0.5} and dpo.loss_terms() == {"sigmoid": 1.0, "sft": 0.5}
    assert load_config(None, ["train.dpo.sft_weight=0.5"]).train.dpo.loss_terms() == {"sigmoid": 1.0, "sft": 0.5}
    rpo = load_config(None, ["train.dpo.loss={ipo: 2.0, hinge: 0.25}", "train.dpo.sft_weight=1.0"]).train.dpo
    assert rpo.loss_terms() == {"ipo": 2.0, "hinge": 0.25, "sft": 1.0}
    assert load_config(None, []).train.dpo.loss_terms() == {"sigmoid": 1.0}


@pytest.mark.parametrize("overrides, message", [
    (["train.dpo.loss=dpo"], "config: train.dpo.loss: unknown loss 'dpo'; TRL 1.16's DPO losses are " + ", ".join(DPO_LOSSES)),
    (["train.dpo.loss={sigmoid: 1.0, simpo: 1.0}"], "config: train.dpo.loss: unknown loss 'simpo'; TRL 1.16's DPO losses are "
     + ", ".join(DPO_LOSSES)),
    (["train.dpo.loss={sigmoid: 0}"], "config: train.dpo.loss: the weight of sigmoid must be a number in (0, 100], got 0"),
    (["train.dpo.loss={sigmoid: -1.0}"], "config: train.dpo.loss: the weight of sigmoid must be a number in (0, 100], got -1.0"),
    (["train.dpo.loss={sigmoid: 101}"], "config: train.dpo.loss: the weight of sigmoid must be a number in (0, 100], got 101"),
    (["train.dpo.loss={sft: yes}"], "config: train.dpo.loss: the weight of sft must be a number in (0, 100], got True"),
    (["train.dpo.loss={ipo: heavy}"], "config: train.dpo.loss: the weight of ipo must be a number in (0, 100], got 'heavy'"),
    (["train.dpo.loss={}"], "config: train.dpo.loss: a TRL DPO loss name, or a mapping of names to weights "
     "(e.g. ipo or {sigmoid: 1.0, sft: 0.5}); got {}"),
    (["train.dpo.loss=[sigmoid, sft]"], "config: train.dpo.loss: a TRL DPO loss name, or a mapping of names to weights "
     "(e.g. ipo or {sigmoid: 1.0, sft: 0.5}); got ['sigmoid', 'sft']"),
    (["train.dpo.loss={sigmoid: 1.0, sft: 0.5}", "train.dpo.sft_weight=1.0"],
     "config: train.dpo.sft_weight: adds the sft term, which train.dpo.loss already has; set one of them"),
    (["train.dpo.loss=sft", "train.dpo.sft_weight=1.0"],
     "config: train.dpo.sft_weight: adds the sft term, which train.dpo.loss already has; set one of them"),
    (["train.dpo.loss=exo_pair"], "config: train.dpo.loss: exo_pair needs train.dpo.label_smoothing > 0 (the EXO paper used 1e-3)"),
    (["train.dpo.label_smoothing=0.1"], "config: train.dpo.label_smoothing: read only by the robust, exo_pair, aot or "
     "aot_unpaired losses, and train.dpo.loss has none of them (sigmoid)"),
    (["train.dpo.loss={ipo: 1.0}", "train.dpo.sft_weight=0.5", "train.dpo.label_smoothing=0.1"],
     "config: train.dpo.label_smoothing: read only by the robust, exo_pair, aot or aot_unpaired losses, and "
     "train.dpo.loss has none of them (ipo, sft)"),
    (["train.dpo.loss=robust", "train.dpo.label_smoothing=0.5"], "config: train.dpo.label_smoothing: Input should be less than 0.5"),
])
def test_bad_losses_are_one_line_errors(overrides, message):
    assert error(*overrides) == message


def test_label_smoothing_reaches_the_losses_that_read_it():
    for loss in ("robust", "exo_pair", "aot", "aot_unpaired"):
        assert load_config(None, [f"train.dpo.loss={loss}", "train.dpo.label_smoothing=0.1"]).train.dpo.label_smoothing == 0.1
    combo = load_config(None, ["train.dpo.loss={sigmoid: 1.0, robust: 0.5}", "train.dpo.label_smoothing=0.2"]).train.dpo
    assert combo.loss_terms() == {"sigmoid": 1.0, "robust": 0.5}


# --- the sections of the new algorithms ------------------------------------------------------------------------------


def test_new_algorithms_get_their_sections_and_refuse_the_others():
    kto = load_config(None, ["train.algo=kto"]).train
    assert kto.kto == KTOSection() and kto.dpo is None and kto.orpo is None
    assert load_config(None, ["train.algo=orpo"]).train.orpo.beta == 0.1
    simpo = load_config(None, ["train.algo=simpo"]).train.simpo
    assert (simpo.beta, simpo.gamma, simpo.sft_weight) == (2.0, 0.5, 0.0)
    assert error("train.algo=orpo", "train.dpo.loss=ipo") == \
        "config: train.dpo.loss: belongs to train.algo=dpo or human.seed_warmup=dpo (this run has train.algo=orpo)"
    assert error("train.algo=dpo", "train.kto.threshold=3") == \
        "config: train.kto.threshold: belongs to train.algo=kto or human.seed_warmup=kto (this run has train.algo=dpo)"
    assert error("train.algo=kto", "train.simpo.gamma=1.0") == \
        "config: train.simpo.gamma: belongs to train.algo=simpo (this run has train.algo=kto)"


def test_kto_needs_two_responses_per_batch_unless_its_loss_needs_no_kl():
    message = ("config: train.batch_size: kto needs at least 2 responses per batch (its KL estimate pairs each prompt "
               "with another's response), got 1")
    assert error("train.algo=kto", "train.batch_size=1") == message
    assert error("train.algo=dpo", "human.seed_set=s.jsonl", "human.seed_warmup=kto", "train.batch_size=1") == message
    assert load_config(None, ["train.algo=kto", "train.batch_size=1", "train.kto.loss=apo_zero_unpaired"]).train.batch_size == 1
    assert error("train.algo=kto", "train.kto.loss=bco").startswith("config: train.kto.loss: Input should be 'kto' or")


def test_the_kto_seed_warmup_uses_the_kto_section_whatever_the_algorithm():
    cfg = load_config(None, ["train.algo=ppo", "human.seed_set=seed.jsonl", "human.seed_warmup=kto", "train.kto.threshold=3"])
    assert cfg.train.kto.threshold == 3.0 and cfg.train.dpo is None
    assert load_config(None, ["human.seed_set=seed.jsonl", "human.seed_warmup=kto"]).train.kto == KTOSection()
    assert error("human.seed_warmup=kto") == "config: human.seed_warmup=kto needs human.seed_set, a human-labelled seed file"


def test_the_kto_warmup_needs_scored_lines_in_the_seed_set(tmp_path):
    from selfplay.loop import preflight
    from selfplay.seed import SeedError

    pairs, scores = tmp_path / "pairs.jsonl", tmp_path / "scores.jsonl"
    pairs.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    scores.write_text(json.dumps({"prompt": "p", "response": "a", "score": 4}) + "\n")
    with pytest.raises(SeedError) as info:
        preflight(load_config(None, [f"human.seed_set={pairs}", "human.seed_warmup=kto"]))
    assert str(info.value) == f"human.seed_warmup=kto: {pairs} holds no scored lines (prompt, response, score)"
    preflight(load_config(None, [f"human.seed_set={scores}", "human.seed_warmup=kto"]))


@pytest.mark.parametrize("algo, overrides", [
    ("dpo", ["train.dpo.loss={sigmoid: 1.0, robust: 0.5}", "train.dpo.label_smoothing=0.1"]),
    ("dpo", ["train.dpo.loss=ipo", "train.dpo.sft_weight=0.5"]),
    ("kto", ["train.kto.threshold=3.5", "train.kto.desirable_weight=1.2"]),
    ("orpo", ["train.orpo.beta=0.25"]),
    ("simpo", ["train.simpo.gamma=1.0", "train.simpo.sft_weight=1.0"]),
    ("grpo", ["human.seed_set=seed.jsonl", "human.seed_warmup=kto", "train.kto.beta=0.2"]),
])
def test_saved_config_of_the_new_settings_loads_back_the_same(algo, overrides, tmp_path):
    from selfplay.rundir import Run

    cfg = load_config(None, [f"train.algo={algo}", *overrides])
    run = Run.create(tmp_path / "run", cfg)
    assert yaml.safe_load((run.root / "config.yaml").read_text())["train"]["algo"] == algo
    back = load_config(run.root / "config.yaml")
    assert back == cfg and back.digest() == cfg.digest()


def test_make_trainer_picks_the_new_trainers():
    for algo, cls in (("kto", KTOTrainer), ("orpo", ORPOTrainer), ("simpo", SimPOTrainer), ("dpo", DPOTrainer)):
        trainer = make_trainer(load_config(None, [f"train.algo={algo}"]).train, seed=1, reward=lambda: None)
        assert type(trainer) is cls and trainer.seed == 1


# --- the TRL config objects ------------------------------------------------------------------------------------------


def test_dpo_losses_weights_beta_and_smoothing_reach_trls_dpo_config(tmp_path):
    cfg = load_config(None, ["train.dpo.loss={robust: 1.0, sft: 0.5}", "train.dpo.label_smoothing=0.1", "train.dpo.beta=0.2",
                             "train.learning_rate=1e-4", "train.max_length=256", "train.batch_size=4"]).train
    args = DPOTrainer(cfg, seed=7).trl_config(tmp_path, use_bf16=False)
    assert type(args).__name__ == "DPOConfig"
    assert (args.loss_type, args.loss_weights, args.beta, args.label_smoothing) == (["robust", "sft"], [1.0, 0.5], 0.2, 0.1)
    assert (args.learning_rate, args.max_length, args.per_device_train_batch_size, args.seed) == (1e-4, 256, 4, 7)
    assert args.output_dir == str(tmp_path / "checkpoints")
    rpo = DPOTrainer(load_config(None, ["train.dpo.sft_weight=1.0"]).train, seed=0).trl_config(tmp_path, use_bf16=False)
    assert (rpo.loss_type, rpo.loss_weights) == (["sigmoid", "sft"], [1.0, 1.0])  # the RPO sugar, as before
    plain = DPOTrainer(load_config(None, []).train, seed=0).trl_config(tmp_path, use_bf16=False)
    assert (plain.loss_type, plain.loss_weights, plain.label_smoothing) == (["sigmoid"], [1.0], 0.0)


def test_kto_settings_reach_trls_kto_config(tmp_path):
    cfg = load_config(None, ["train.algo=kto", "train.kto.beta=0.3", "train.kto.loss=apo_zero_unpaired"]).train
    args = KTOTrainer(cfg, seed=2).trl_config(tmp_path, use_bf16=False, weights=(4.0, 1.0))
    assert type(args).__name__ == "KTOConfig"
    assert (args.loss_type, args.beta, args.desirable_weight, args.undesirable_weight) == ("apo_zero_unpaired", 0.3, 4.0, 1.0)
    assert args.train_sampling_strategy == "sequential"  # the KL estimate's mismatched pairs rely on the order


def test_orpo_and_simpo_settings_reach_trls_configs(tmp_path):
    orpo = ORPOTrainer(load_config(None, ["train.algo=orpo", "train.orpo.beta=0.25"]).train, seed=0).trl_config(tmp_path, False)
    assert type(orpo).__name__ == "ORPOConfig" and orpo.beta == 0.25 and orpo.max_length == 448
    cfg = load_config(None, ["train.algo=simpo", "train.simpo.beta=2.5", "train.simpo.gamma=1.25"]).train
    simpo = SimPOTrainer(cfg, seed=0).trl_config(tmp_path, False)
    assert type(simpo).__name__ == "CPOConfig"
    assert (simpo.loss_type, simpo.beta, simpo.simpo_gamma, simpo.cpo_alpha) == ("simpo", 2.5, 1.25, 0.0)  # SimPO: no NLL
    cpo_simpo = SimPOTrainer(load_config(None, ["train.algo=simpo", "train.simpo.sft_weight=1.0"]).train, 0).trl_config(tmp_path, False)
    assert cpo_simpo.cpo_alpha == 1.0


# --- KTO's examples --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scores, cut", [
    ([1, 2, 3, 4], 3),
    ([1, 2, 3], 2),
    ([0, 0, 0, 1, 1], 1),
    ([1, 1, 2, 5, 5, 5, 5], 5),
    ([3.2, 3.9, 3.4, 3.6], 3.6),
    ([5, 5], 5),
    ([], None),
])
def test_even_cut_is_the_median_cut(scores, cut):
    assert even_cut(scores) == cut


@pytest.mark.parametrize("desirable, undesirable, weights", [(2, 8, (4.0, 1.0)), (6, 3, (1.0, 2.0)), (5, 5, (1.0, 1.0)),
                                                             (0, 4, (1.0, 1.0))])
def test_weights_balance_the_counts_when_not_set(desirable, undesirable, weights):
    assert kto_weights(KTOSection(), desirable, undesirable) == weights
    assert kto_weights(KTOSection(desirable_weight=1.5), desirable, undesirable) == (1.5, 1.0)
    assert kto_weights(KTOSection(undesirable_weight=0.5), desirable, undesirable) == (1.0, 0.5)


def judgement(gen_id: str, score: float | None) -> Judgement:
    return Judgement(id=f"{gen_id}/j", prompt_id=gen_id.split("/")[0], generation_ids=[gen_id], judge="pointwise",
                     method="logprob", raw=["..."], sample_scores=[score], score=score,
                     status="ok" if score is not None else "unparseable")


def judged(table: dict[str, list[tuple[str, float | None]]]) -> TrainInputs:
    prompts = [make_prompt(pid, f"Question {pid}?") for pid in table]
    gens = [make_generation(pid, j, text) for pid, rows in table.items() for j, (text, _) in enumerate(rows)]
    js = [judgement(f"{pid}/g{j}", s) for pid, rows in table.items() for j, (text, s) in enumerate(rows) if text]
    return TrainInputs(prompts=prompts, generations=gens, judgements=js)


TABLE = {"a": [("good a", 4.0), ("fine a", 3.0), ("bad a", 1.0)], "b": [("good b", 5.0), ("", None), ("lost b", None)],
         "c": [("bad c", 2.0)]}


def test_judged_responses_become_labelled_examples_interleaved_across_prompts():
    inputs = judged(TABLE)
    examples, stats = kto_examples(inputs.prompts, inputs.generations, inputs.judgements, threshold=None)
    # scores 4, 3, 1, 5, 2: the median cut is 3 (3 desirable, 2 undesirable)
    assert stats == KTOStats(examples=5, desirable=3, undesirable=2, threshold=3.0, unscored=1, empty=1)
    assert [(e.id, e.desirable) for e in examples] == [("a/g0", True), ("b/g0", True), ("c/g0", False), ("a/g1", True),
                                                       ("a/g2", False)]
    assert examples[0].to_trl() == {"prompt": [{"role": "user", "content": "Question a?"}],
                                    "completion": [{"role": "assistant", "content": "good a"}], "label": True}
    fixed, stats = kto_examples(inputs.prompts, inputs.generations, inputs.judgements, threshold=4.5)
    assert [e.id for e in fixed if e.desirable] == ["b/g0"] and (stats.desirable, stats.undesirable, stats.threshold) == (1, 4, 4.5)


def test_interleave_alternates_prompts_while_it_can():
    rows = [KTOExample(id=f"{p}{i}", prompt_id=p, prompt=p, completion="x", score=1.0, desirable=True)
            for p, n in (("a", 3), ("b", 1), ("c", 2)) for i in range(n)]
    assert [e.id for e in interleave(rows)] == ["a0", "b0", "c0", "a1", "c1", "a2"]


def test_seed_lines_are_labelled_on_their_own_scale():
    scored = [ScoredResponse(id=f"s{i}", prompt_id=f"p{i % 2}", prompt=f"Q{i % 2}", response=f"r{i}", score=s)
              for i, s in enumerate([1, 0, 1, 1, 0])]
    examples, stats = seed_examples(scored, threshold=None)
    assert (stats.desirable, stats.undesirable, stats.threshold) == (3, 2, 1.0)
    assert [(e.id, e.desirable) for e in examples] == [("s0", True), ("s1", False), ("s2", True), ("s3", True), ("s4", False)]


def test_too_few_or_one_kind_only_is_a_recorded_skip(tmp_path):
    same = judged({"a": [("one", 3.0), ("two", 3.0)], "b": [("three", 3.0)]})
    policy = tmp_path / "never-loaded"  # training would fail to load it: the skip must come first
    result = KTOTrainer(TrainConfig(algo="kto"), seed=0).train(same, policy, tmp_path / "out")
    assert result.skipped == ("3 labelled responses (3 desirable, 0 undesirable at score >= 3; 0 without a score, 0 empty): "
                              "KTO needs both desirable and undesirable responses; policy carried over")
    assert (result.algo, result.policy, result.steps, result.kto.examples) == ("kto", str(policy), 0, 3)
    assert len(read_records(tmp_path / "out" / "examples.jsonl", KTOExample)) == 3
    TrainResult.model_validate_json(result.model_dump_json())
    few = KTOTrainer(TrainConfig(algo="kto", min_examples=10), seed=0).train(judged(TABLE), policy, tmp_path / "few")
    assert few.skipped == ("5 labelled responses (3 desirable, 2 undesirable at score >= 3; 1 without a score, 1 empty) < "
                           "train.min_examples=10: KTO skipped, policy carried over") and few.count == 5
    nothing = too_few(KTOStats(examples=0, desirable=0, undesirable=0, threshold=None, unscored=2), 1)
    assert nothing == "0 labelled responses (0 desirable, 0 undesirable; 2 without a score, 0 empty) < train.min_examples=1: " \
                      "KTO skipped, policy carried over"


def test_orpo_and_simpo_skip_too_few_pairs(tmp_path):
    pair = Pair(id="a/p", prompt_id="a", prompt="Q?", chosen="yes", rejected="no", chosen_id="a/g0", rejected_id="a/g1",
                chosen_score=2.0, rejected_score=1.0, margin=1.0, judge="pointwise")
    for cls, algo in ((ORPOTrainer, "orpo"), (SimPOTrainer, "simpo")):
        result = cls(TrainConfig(algo=algo), seed=0).train(TrainInputs(pairs=[pair]), tmp_path / "p", tmp_path / algo)
        assert result.skipped == "1 pairs < train.min_pairs=2; policy carried over"
        assert (result.algo, result.dpo.pairs, result.policy) == (algo, 1, str(tmp_path / "p"))


# --- on the tiny model -----------------------------------------------------------------------------------------------


def tiny_cfg(algo: str, **extra) -> TrainConfig:
    return TrainConfig(**{"algo": algo, "batch_size": 2, "max_length": 64, "learning_rate": 1e-3, "lora": {"r": 4},
                          "precision": "fp32", "min_pairs": 1, "save_steps": 0, **extra})


PAIRS = [Pair(id=f"p{i}/p", prompt_id=f"p{i}", prompt=q, chosen=c, rejected=r, chosen_id=f"p{i}/g0", rejected_id=f"p{i}/g1",
              chosen_score=5.0, rejected_score=1.0, margin=4.0, judge="pointwise")
         for i, (q, c, r) in enumerate([("What is 2 + 2?", "4.", "5."), ("Capital of France?", "Paris.", "Lyon."),
                                        ("Is the sun a star?", "Yes.", "No."), ("Say hi.", "Hi!", "Bye.")])]


def changed(before_dir: Path, after_dir: Path) -> bool:
    from safetensors.torch import load_file

    before, after = load_file(before_dir / "model.safetensors"), load_file(after_dir / "model.safetensors")
    return any(not before[k].to(after[k].dtype).equal(after[k]) for k in before)


def finite(*values: float | None) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


@pytest.mark.slow
@pytest.mark.parametrize("algo, extra, loss", [
    ("dpo", {"dpo": {"loss": "ipo"}}, {"ipo": 1.0}),
    ("orpo", {}, None),
    ("simpo", {}, None),
])
def test_a_pair_trainer_changes_the_policy(tiny_model_dir, tmp_path, algo, extra, loss):
    cfg = tiny_cfg(algo, **extra)
    result = make_trainer(cfg, seed=0, reward=lambda: None).train(TrainInputs(pairs=PAIRS), tiny_model_dir, tmp_path)
    assert result.skipped is None and result.algo == algo and result.steps == 2 and result.nan_steps == 0
    assert finite(result.loss_first, result.loss_last) and result.dpo.pairs == 4 and result.dpo.loss == loss
    assert result.dpo.reward_accuracy is not None and 0.0 <= result.dpo.reward_accuracy <= 1.0
    assert result.policy == str(tmp_path / "merged") and changed(tiny_model_dir, tmp_path / "merged")
    json.loads(result.model_dump_json())


@pytest.mark.slow
def test_kto_trains_from_judged_responses(tiny_model_dir, tmp_path):
    table = {f"q{i}": [(f"A good answer {i}.", 5.0), (f"meh {i}", 3.0), (f"no {i}", 1.0)] for i in range(3)}
    result = KTOTrainer(tiny_cfg("kto"), seed=0).train(judged(table), tiny_model_dir, tmp_path)
    assert result.skipped is None and result.algo == "kto" and result.steps == 5 and result.nan_steps == 0
    assert finite(result.loss_first, result.loss_last, result.kto.kl_last)
    assert (result.kto.examples, result.kto.desirable, result.kto.undesirable, result.kto.threshold) == (9, 6, 3, 3.0)
    assert (result.kto.desirable_weight, result.kto.undesirable_weight) == (1.0, 2.0) and result.count == 9
    assert [e.prompt_id for e in read_records(tmp_path / "examples.jsonl", KTOExample)][:3] == ["q0", "q1", "q2"]
    assert changed(tiny_model_dir, tmp_path / "merged") and (tmp_path / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_kto_seed_warmup_trains_on_the_pointwise_lines(tiny_model_dir, tmp_path):
    scored = [ScoredResponse(id=f"s{i}", prompt_id=f"p{i % 3}", prompt=f"Question {i % 3}?", response=f"Answer {i}.",
                             score=float(i % 2)) for i in range(6)]
    result = KTOTrainer(tiny_cfg("kto"), seed=0).train_scored(scored, tiny_model_dir, tmp_path)
    assert result.skipped is None and result.steps == 3 and finite(result.loss_first, result.loss_last)
    assert (result.kto.desirable, result.kto.undesirable, result.kto.threshold) == (3, 3, 1.0)
    assert changed(tiny_model_dir, tmp_path / "merged")
