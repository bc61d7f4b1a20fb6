"""Reward model: the held-out split and TRL rows as pure functions, loading errors, and a real RewardTrainer run
on the tiny model that must learn a toy preference and score held-out pairs right."""

import json

import pytest
from safetensors.torch import load_file

from selfplay.config import TrainConfig
from selfplay.records import Pair
from selfplay.train.reward import (
    RewardModel, RewardModelError, SafetyGatedReward, bradley_terry_loss, collate_features, comparison_weights,
    encode_conversation, reward_features, split_heldout, train_reward_model,
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


class CharTokenizer:
    """ChatML over characters: enough to check where a response starts and how rows are padded."""

    def apply_chat_template(self, messages, tokenize=True, return_dict=True, add_generation_prompt=False):
        text = "".join(f"<{m['role']}>{m['content']}|" for m in messages) + ("<assistant>" if add_generation_prompt else "")
        return {"input_ids": [ord(c) for c in text]}


def test_reward_features_mark_where_each_response_starts_and_carry_weights():
    tok = CharTokenizer()
    ids, start = encode_conversation(tok, "Hi?", "yes")
    assert "".join(map(chr, ids)) == "<user>Hi?|<assistant>yes|" and "".join(map(chr, ids[start:])) == "yes|"
    pair = make_pair(0, margin=2.5, chosen="yes", rejected="no")
    (row,) = reward_features([pair], tok, margin=True, weights=[0.5])
    assert "".join(map(chr, row["chosen_ids"][row["chosen_start"]:])) == "yes|"
    assert "".join(map(chr, row["rejected_ids"][row["rejected_start"]:])) == "no|"
    assert row["weight"] == 0.5 and row["margin"] == 2.5
    assert "margin" not in reward_features([pair], tok, margin=False, weights=[1.0])[0]
    # The batch: chosen rows then rejected rows, right-padded; the response mask covers only each response.
    batch = collate_features([row], pad_id=0)
    assert batch["input_ids"].shape == (2, len(row["chosen_ids"]))
    assert batch["response_mask"][0].tolist() == [0] * row["chosen_start"] + [1] * 4
    n = len(row["rejected_ids"])
    assert batch["response_mask"][1].tolist() == [0] * row["rejected_start"] + [1] * 3 + [0] * (batch["input_ids"].shape[1] - n)
    assert batch["attention_mask"][1].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
    assert batch["weight"].tolist() == [0.5] and batch["margin"].tolist() == [2.5]


def test_weighted_bradley_terry_loss_by_hand():
    import torch

    # Two pairs, gaps r_c - r_r = 0 and 2: -log sigmoid(0) = ln 2 = 0.693147, -log sigmoid(2) = 0.126928.
    chosen, rejected = torch.tensor([1.0, 3.0]), torch.tensor([1.0, 1.0])
    assert bradley_terry_loss(chosen, rejected, torch.ones(2)).item() == pytest.approx((0.693147 + 0.126928) / 2, abs=1e-6)
    # Weights 1.5 and 0.5 (mean 1): (1.5 * 0.693147 + 0.5 * 0.126928) / 2 = 0.551592
    assert bradley_terry_loss(chosen, rejected, torch.tensor([1.5, 0.5])).item() == pytest.approx(0.551592, abs=1e-6)
    # A margin of 2 on the second pair: its gap becomes 0, ln 2 each.
    loss = bradley_terry_loss(chosen, rejected, torch.ones(2), margin=torch.tensor([0.0, 2.0]))
    assert loss.item() == pytest.approx(0.693147, abs=1e-6)
    # Weights are scaled to mean 1: a prompt's 3 comparisons at 1/3 beside one pair at 1 sum to 2 over 4 pairs, so
    # x 4/2 -> 2/3, 2/3, 2/3, 2 (each prompt still weighs the same: 3 x 2/3 = 2).
    pairs = [make_pair(i) for i in range(4)]
    assert comparison_weights(pairs, [1 / 3, 1 / 3, 1 / 3, 1.0]) == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2.0])
    assert comparison_weights(pairs, None) == [1.0] * 4


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


@pytest.mark.slow
def test_mean_readout_is_the_average_of_the_response_tokens_scores(tiny_model_dir, tmp_path, one_thread):
    import torch

    cfg = TrainConfig(algo="ppo", reward_model={"lora": True, "lora_r": 8, "epochs": 3, "learning_rate": 5e-3, "batch_size": 4,
                                                "heldout": 0.25, "readout": "mean"}, max_length=96, precision="fp32")
    out = tmp_path / "rm-mean"
    result = train_reward_model(toy_pairs(16), tiny_model_dir, out, cfg, seed=0)
    assert result.readout == "mean" and result.steps == 9 and result.loss_last < result.loss_first
    assert result.heldout_accuracy >= 0.75 and result.heldout_margin > 0, result

    rm = RewardModel.load(out, batch_size=4)  # reads readout=mean from reward_model.json
    assert rm.readout == "mean"
    prompts = ["What now?", "Tell me about the sea, and the rivers that run into it.", "Hi", "Why?"]
    responses = ["yes yes yes", "no no", "yes", "no no no no no no"]
    batched = rm.score(prompts, responses)  # one batch of four lengths: padding on three rows
    tok, model = rm.tokenizer, rm.model
    for prompt, response, got in zip(prompts, responses, batched):
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        ids = tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        head = tok.apply_chat_template(messages[:1], tokenize=True, return_dict=True, add_generation_prompt=True)["input_ids"]
        assert ids[: len(head)] == head  # ChatML: the prompt with its generation prompt is a prefix
        with torch.no_grad():  # per-token scores by hand: the score head on the trunk's last hidden states, no padding
            hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state
            per_token = (hidden @ model.score.weight.T)[0, :, 0]
        hand = per_token[len(head):].mean().item()  # the response's tokens only: the prompt's are left out
        assert got == pytest.approx(hand, abs=1e-4)
        assert got != pytest.approx(per_token[-1].item(), abs=1e-4)  # not the last token's score
        assert got != pytest.approx(per_token.mean().item(), abs=1e-4)  # nor the mean over the prompt too
    last = RewardModel(model, tok, rm.max_length, readout="last").score(prompts, responses)
    assert last != pytest.approx(batched, abs=1e-3)
