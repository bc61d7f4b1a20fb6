"""Reward model: the held-out split and TRL rows as pure functions, loading errors, and a real RewardTrainer run
on the tiny model that must learn a toy preference and score held-out pairs right."""

import json

import pytest
from safetensors.torch import load_file

from selfplay.config import TrainConfig
from selfplay.records import Pair
from selfplay.train.reward import (
    RewardModel, RewardModelError, SafetyGatedReward, reward_rows, split_heldout, train_reward_model,
)


def make_pair(i: int, prompt_id: str | None = None, margin: float = 1.0, chosen: str = "yes", rejected: str = "no") -> Pair:
    pid = prompt_id or f"q{i}"
    return Pair(id=f"{pid}/p{i}", prompt_id=pid, prompt=f"Question {i}?", chosen=chosen, rejected=rejected,
                chosen_id=f"{pid}/g0", rejected_id=f"{pid}/g1", chosen_score=1.0 + margin, rejected_score=1.0,
                margin=margin, judge="test")


def test_safety_gate_uses_the_safety_score_only_below_the_threshold():
    helpful = lambda prompts, responses: [10.0 + i for i in range(len(responses))]  # noqa: E731
    # sigmoid(-3) = 0.047 and sigmoid(-1) = 0.27: with Llama 2's 0.15 the first is unsafe, the second is not.
    safety = lambda prompts, responses: [-3.0, -1.0, 2.0]  # noqa: E731
    reward = SafetyGatedReward(helpful, safety, threshold=0.15)
    assert reward.gated_fraction is None
    assert reward(["p"] * 3, ["a", "b", "c"]) == [-3.0, 11.0, 12.0]
    assert reward.gated_fraction == pytest.approx(1 / 3)
    assert SafetyGatedReward(helpful, safety, threshold=0.5)(["p"] * 3, ["a", "b", "c"]) == [-3.0, -1.0, 12.0]


def test_split_holds_out_whole_prompts_seeded():
    # 10 prompts; prompt q0 has three pairs. 20% of 12 pairs = 2.4 -> at least 2 held out, whole prompts only.
    pairs = [make_pair(i) for i in range(10)] + [make_pair(10 + j, prompt_id="q0") for j in range(2)]
    train, held = split_heldout(pairs, 0.2, seed=3)
    assert len(train) + len(held) == 12 and len(held) >= 2
    assert not {p.prompt_id for p in train} & {p.prompt_id for p in held}
    assert split_heldout(pairs, 0.2, seed=3) == (train, held)  # seeded: the same split again
    assert {tuple(p.id for p in split_heldout(pairs, 0.2, seed=s)[1]) for s in range(8)} != {tuple(p.id for p in held)}
    assert split_heldout(pairs, 0.0, seed=3) == (pairs, [])
    # Two pairs and a large fraction: one prompt is always left to train on.
    two = [make_pair(0), make_pair(1)]
    train, held = split_heldout(two, 0.9, seed=0)
    assert len(train) == 1 and len(held) == 1


def test_reward_rows_are_trl_conversations_with_an_optional_margin():
    pair = make_pair(0, margin=2.5)
    (row,) = reward_rows([pair], margin=False)
    assert row == {"prompt": [{"role": "user", "content": "Question 0?"}],
                   "chosen": [{"role": "assistant", "content": "yes"}],
                   "rejected": [{"role": "assistant", "content": "no"}]}
    assert reward_rows([pair], margin=True)[0]["margin"] == 2.5


def test_a_directory_that_is_not_a_reward_model_is_refused(tmp_path):
    with pytest.raises(RewardModelError, match="not a directory"):
        RewardModel.load(tmp_path / "missing")
    with pytest.raises(RewardModelError, match="no config.json"):
        RewardModel.load(tmp_path)
    causal = tmp_path / "causal"
    causal.mkdir()
    (causal / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(RewardModelError, match="LlamaForCausalLM .* not a reward model"):
        RewardModel.load(causal)


def test_no_pairs_is_a_recorded_skip(tmp_path):
    result = train_reward_model([], tmp_path / "base", tmp_path / "rm", TrainConfig(), seed=0)
    assert result.skipped and result.model_dir is None and not (tmp_path / "rm").exists()


WORDS = ["apple", "river", "cloud", "stone", "music", "garden", "window", "paper"]


def toy_pairs(n: int) -> list[Pair]:
    # The preference to learn: answers made of "yes" beat answers made of "no", whatever the prompt or length.
    return [Pair(id=f"t{i}/p", prompt_id=f"t{i}", prompt=f"Tell me about the {WORDS[i % 8]}, number {i}.",
                 chosen=" ".join(["yes"] * (2 + i % 4)), rejected=" ".join(["no"] * (2 + i % 3)),
                 chosen_id=f"t{i}/g0", rejected_id=f"t{i}/g1", chosen_score=2.0, rejected_score=1.0, margin=1.0, judge="toy")
            for i in range(n)]


@pytest.mark.slow
def test_reward_model_learns_a_toy_preference_and_scores_heldout_pairs(tiny_model_dir, tmp_path, one_thread):
    cfg = TrainConfig(algo="ppo", reward_model={"lora": True, "lora_r": 8, "epochs": 3, "learning_rate": 5e-3, "batch_size": 4,
                                                "heldout": 0.25}, max_length=96, precision="fp32")
    out = tmp_path / "rm"
    result = train_reward_model(toy_pairs(16), tiny_model_dir, out, cfg, seed=0)
    assert result.heldout == 4 and result.train_pairs == 12 and result.too_long == 0 and result.steps == 9
    assert result.loss_last < result.loss_first
    assert result.heldout_accuracy >= 0.75 and result.heldout_margin > 0, result
    # Saved as one ordinary checkpoint (the adapter merged), safetensors only, result written last.
    assert (out / "model.safetensors").exists() and not list(out.rglob("*.bin"))
    assert "score.weight" in load_file(out / "model.safetensors")
    assert json.loads((out / "reward_model.json").read_text())["heldout_accuracy"] == result.heldout_accuracy

    rm = RewardModel.load(out, batch_size=3)
    prompts = ["What now?", "Tell me about the sea.", "Hi", "A much longer question about many things?"]
    responses = ["yes yes yes", "no no", "yes", "no no no no"]
    batched = rm.score(prompts, responses)
    one_by_one = [rm.score([p], [r])[0] for p, r in zip(prompts, responses)]
    assert batched == pytest.approx(one_by_one, abs=1e-4)  # padding and batching do not change a score
    assert batched[0] > batched[1] and batched[2] > batched[3]
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        rm.score(["a", "b"], ["c"])
