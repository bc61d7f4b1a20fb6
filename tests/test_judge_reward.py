"""The run's judge as the online RL reward (train.rl.reward=judge): fast tests with fake and program judges, the
dataset columns TRL hands the reward function, the config rules; then tiny-model GRPO, RLOO and PPO iterations."""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from selfplay.config import PROJECT_ROOT, ConfigError, JudgeConfig, RunConfig, dump_config, load_config
from selfplay.external import EndpointError
from selfplay.ifeval import IFEvalPrompt, ifeval_score
from selfplay.judges import make_judge
from selfplay.records import Generation, Judgement, Prompt, read_records
from selfplay.rundir import Run
from selfplay.train.judge_reward import (
    JUDGEMENTS_FILE,
    JudgeReward,
    NothingToLearnError,
    judge_columns,
    trl_judge_reward,
)


class FailingJudge:
    """Scores a response by its length, but gives no score (unparseable) to any response containing 'x'."""

    def __init__(self):
        self.calls = []

    def judge(self, prompts, generations):
        self.calls.append(([p.id for p in prompts], [g.id for g in generations]))
        return [
            Judgement(id=f"{g.id}/j", prompt_id=g.prompt_id, generation_ids=[g.id], judge="pointwise", method="text",
                      raw=["no score here" if "x" in g.text else f"Score: {len(g.text)}"],
                      sample_scores=[None if "x" in g.text else float(len(g.text))],
                      score=None if "x" in g.text else float(len(g.text)),
                      status="unparseable" if "x" in g.text else "ok")
            for g in generations
        ]


def reward(judge, tmp_path, kind="pointwise") -> JudgeReward:
    return JudgeReward(judge, kind, out_dir=tmp_path / "policy", policy="m", max_tokens=8, temperature=1.0, seed=3)


def trl_call(fn, prompts: list[Prompt], responses: list[str], k: int = 1) -> list:
    """Calls a reward function as TRL 1.16's GRPOTrainer/RLOOTrainer do (_calculate_rewards): the rows go through a
    datasets table, each prompt repeated k times, and every column but `prompt` becomes a kwarg with one value per
    completion."""
    from datasets import Dataset

    table = Dataset.from_list([{"prompt": [{"role": "user", "content": p.text}], **judge_columns(p, 11)} for p in prompts])
    inputs = [row for row in table for _ in range(k)]
    keys = [key for key in inputs[0] if key not in ["prompt", "completion", "completion_ids"]]
    kwargs = {key: [example[key] for example in inputs] for key in keys}
    completions = [[{"role": "assistant", "content": r}] for r in responses]
    return fn(prompts=[x["prompt"] for x in inputs], completions=completions,
              completion_ids=[[0] * len(r.split()) for r in responses], trainer_state=None, **kwargs)


PROMPTS = [Prompt(id="a", text="Say hi."), Prompt(id="b", text="Say bye.")]


def test_unscored_rollouts_are_none_counted_and_kept(tmp_path):
    judge = FailingJudge()
    r = reward(judge, tmp_path)
    fn = trl_judge_reward(r)
    first = trl_call(fn, PROMPTS, ["hi", "hix", "bye", "bye now"], k=2)
    # None, never 0: TRL turns it into NaN, leaves it out of the group baseline and gives it no advantage.
    assert first == [2.0, None, 3.0, 7.0]
    second = trl_call(fn, PROMPTS, ["x", "yo", "x x", "ok"], k=2)
    assert second == [None, 2.0, None, 2.0]
    # One judge call per step, every prompt once, the rollouts numbered within their prompt's group.
    assert judge.calls[0] == (["a", "b"], ["a/s1r0", "a/s1r1", "b/s1r0", "b/s1r1"])
    assert judge.calls[1][1] == ["a/s2r0", "a/s2r1", "b/s2r0", "b/s2r1"]
    assert [(s.step, s.scored, s.failed, s.reward_mean) for s in r.steps] == [(1, 3, 1, 4.0), (2, 2, 2, 2.0)]
    record = r.record()
    assert (record["scored"], record["failed"], record["reward"]) == (5, 3, "judge")
    saved = read_records(Path(record["judgements"]), Judgement)
    assert [j.status for j in saved] == ["ok", "unparseable", "ok", "ok", "unparseable", "ok", "unparseable", "ok"]
    assert saved[1].raw == ["no score here"] and saved[1].score is None


def test_program_judge_reward_is_the_checkers_score(tmp_path):
    """The IFEval meta travels through the dataset columns to the ifeval program: its reward is the checkers' score."""
    meta = {"instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase", "length_constraints:number_words"],
            "kwargs": [{}, {}, {"relation": "at least", "num_words": 5}]}
    prompt = Prompt(id="if-1", text="Describe the sea in lowercase, without commas, in at least 5 words.", source="ifeval", meta=meta)
    other = Prompt(id="if-2", text="Write a title in double angular brackets.", source="ifeval",
                   meta={"instruction_id_list": ["detectable_format:title"], "kwargs": [{}]})
    responses = ["the sea is wide and blue and calm", "The sea, wide.", "<<Waves>> a poem", "no title here"]
    judge = make_judge(JudgeConfig(kind="program", program="selfplay.program_judges:ifeval"), None)
    got = trl_call(trl_judge_reward(reward(judge, tmp_path, "program")), [prompt, other], responses, k=2)
    checkers = [
        ifeval_score(IFEvalPrompt(key=p.id, prompt=p.text, instruction_id_list=p.meta["instruction_id_list"],
                                  kwargs=p.meta["kwargs"]), text)
        for p, text in zip([prompt, prompt, other, other], responses)
    ]
    assert got == checkers == [1.0, 0.0, 1.0, 0.0]


def test_a_step_the_judge_cannot_score_at_all_is_one_clear_error(tmp_path):
    r = reward(FailingJudge(), tmp_path)
    with pytest.raises(NothingToLearnError, match=r"the pointwise judge scored none of the 2 rollouts of step 1 "
                                                  r"\(unparseable: no score here\); nothing to learn from"):
        r.score(PROMPTS, ["x", "xx"], [1, 1], [5, 5])
    assert len(read_records(tmp_path / "policy" / JUDGEMENTS_FILE, Judgement)) == 2  # what it said is kept


def test_a_prompt_without_instructions_fails_the_ifeval_reward_in_one_line(tmp_path):
    judge = make_judge(JudgeConfig(kind="program", program="selfplay.program_judges:ifeval"), None)
    with pytest.raises(NothingToLearnError, match=r"\(error: raised ValueError: prompt a has no instruction_id_list"):
        trl_call(trl_judge_reward(reward(judge, tmp_path, "program")), PROMPTS[:1], ["one", "two"], k=2)


def test_an_endpoint_that_does_not_answer_leaves_the_step_unscored(tmp_path):
    class DeadEndpoint:
        def judge(self, prompts, generations):
            raise EndpointError("http://127.0.0.1:9/v1: cannot reach the judge server")

    r = reward(DeadEndpoint(), tmp_path)
    with pytest.raises(NothingToLearnError, match=r"error: endpoint error: http://127.0.0.1:9/v1: cannot reach"):
        r.score(PROMPTS, ["a", "b"], [1, 1], [5, 5])
    assert r.steps[0].failed == 2 and r.steps[0].scored == 0


def test_config_judge_reward_trains_no_reward_model_and_refuses_judges_that_cannot_score():
    cfg = load_config(None, ["train.algo=grpo", "train.rl.reward=judge"])
    assert cfg.train.reward_model is None and cfg.train.rl.reward == "judge"
    assert load_config(None, ["train.algo=grpo"]).train.rl.reward == "reward_model"
    import yaml

    again = RunConfig.model_validate(yaml.safe_load(dump_config(cfg)))  # config.yaml reads back to the same digest
    assert again.digest() == cfg.digest() and again.train.reward_model is None
    with pytest.raises(ConfigError, match="judge.kind=human scores only the responses in its labels file"):
        load_config(None, ["train.algo=rloo", "train.rl.reward=judge", "judge.kind=human", "judge.labels=x.jsonl"])
    with pytest.raises(ConfigError, match="judge.kind=constitution-revision revises responses and gives no score"):
        load_config(None, ["train.algo=grpo", "train.rl.reward=judge", "judge.kind=constitution-revision"])
    with pytest.raises(ConfigError, match=r"train.reward_model.lora: belongs to train.rl.reward=reward_model"):
        load_config(None, ["train.algo=ppo", "train.rl.reward=judge", "train.reward_model.lora=false"])
    with pytest.raises(ConfigError, match=r"train.rl.reward: Input should be 'reward_model' or 'judge'"):
        load_config(None, ["train.algo=grpo", "train.rl.reward=checkers"])


def test_rlvr_config_loads_and_trains_on_the_train_split_only():
    cfg = load_config(PROJECT_ROOT / "configs" / "rlvr.yaml")
    assert cfg.train.algo == "grpo" and cfg.train.rl.reward == "judge" and cfg.train.reward_model is None
    assert cfg.judge.kind == "program" and cfg.judge.program == "selfplay.program_judges:ifeval"
    assert cfg.prompts.pool == "data/ifeval/train_formats.jsonl"
    assert (cfg.eval.ifeval, cfg.eval.ifeval_independent) == ("data/ifeval/heldout.jsonl", "data/ifeval/independent.jsonl")


# ---------------------------------------------------------------------------------------------------------------
# Tiny-model iterations


def tiny_rl_config(model_dir, algo, program, *extra):
    return load_config(None, [
        f"model={model_dir}", "iterations=1", "prompts.pool=data/ifeval/train.jsonl", "prompts.per_iteration=4",
        "generation.backend=transformers", "generation.n=2", "generation.max_tokens=8", "judge.kind=program",
        f"judge.program={program}", "pairing.min_margin=0.0", f"train.algo={algo}", "train.rl.reward=judge",
        "train.rl.steps=2", "train.rl.rollout_prompts=2", "train.rl.max_new_tokens=8", "train.learning_rate=1e-2",
        "train.max_length=96", *extra,
    ])


# A judge of the test's own: the length of the response as its score, no score (None) for a length divisible by 3 (the
# empty response too), and the instruction ids of the prompt, which must have reached it, counted into the score.
PROGRAM = '''
from selfplay.records import Prompt

def score(prompt: Prompt, response: str):
    assert prompt.meta["instruction_id_list"], prompt
    if len(response) % 3 == 0:
        return None
    return len(response) / 10 + len(prompt.meta["instruction_id_list"])
'''


@pytest.mark.slow
@pytest.mark.parametrize("algo, extra", [
    ("grpo", ["train.rl.num_generations=4", "train.batch_size=4"]),
    ("ppo", ["train.rl.rollout_prompts=4", "train.ppo.minibatch=2", "train.ppo.epochs=1"]),
])
def test_rl_iteration_with_the_judge_as_reward(tiny_chat_model_dir, tmp_path, algo, extra):
    from selfplay.loop import run_loop

    (tmp_path / "judge_len.py").write_text(PROGRAM)
    run = Run.create(tmp_path / algo, tiny_rl_config(tiny_chat_model_dir, algo, f"{tmp_path / 'judge_len.py'}:score", *extra))
    [row] = run_loop(run, log=lambda _: None)
    p = run.paths(1)
    manifest = json.loads(p.manifest.read_text())
    assert manifest["reward_model"] is None and not (p.dir / "reward_model").exists()  # no reward model trained
    rl = json.loads(p.train.read_text())["rl"]
    per_step = 8 if algo == "grpo" else 4  # grpo: 2 prompts x 4 samples; ppo: 4 prompts x 1
    assert rl["reward"] == "judge" and rl["scored"] + rl["failed"] == 2 * per_step and rl["scored"] > 0
    assert [s["step"] for s in rl["judged_steps"]] == [1, 2]
    judgements = read_records(Path(rl["judgements"]), Judgement)
    assert len(judgements) == 2 * per_step
    assert sum(j.status != "ok" for j in judgements) == rl["failed"]
    assert all((j.score is None) == (j.status != "ok") for j in judgements)
    assert rl["failed"] > 0  # the judge above fails on some rollouts of these seeds: the exclusion is exercised
    for s in rl["judged_steps"]:  # the step's mean is over the rollouts the judge scored, nothing else
        mine = [j.score for j in judgements if f"/s{s['step']}r" in j.id and j.score is not None]
        assert s["scored"] == len(mine) and s["reward_mean"] == pytest.approx(sum(mine) / len(mine))
    # The trainer saw the same rewards: its logged mean leaves the unscored rollouts out (a 0 for them would lower it).
    logged = [json.loads(line) for line in Path(rl["stats"]).read_text().splitlines()]
    key = "reward" if algo == "grpo" else "reward_mean"
    assert [h[key] for h in logged if h.get(key) is not None] == pytest.approx([s["reward_mean"] for s in rl["judged_steps"]])
    before = load_file(tiny_chat_model_dir / "model.safetensors")
    after = load_file(p.policy / "merged" / "model.safetensors")
    assert any(not before[k].to(after[k].dtype).equal(after[k]) for k in before)
    assert row.rl_reward_first is not None and row.rl_unscored == pytest.approx(rl["failed"] / (2 * per_step))


@pytest.mark.slow
def test_a_judge_that_scores_no_rollout_is_one_line_and_keeps_the_iteration(tiny_chat_model_dir, tmp_path):
    """selfplay run with a judge that gives no score to anything: the train stage stops with one line, every earlier
    stage's records stay as written, and nothing claims the iteration finished."""
    from typer.testing import CliRunner

    from selfplay.cli import app

    (tmp_path / "never.py").write_text("def score(prompt, response):\n    return None\n")
    cfg = tiny_rl_config(tiny_chat_model_dir, "grpo", f"{tmp_path / 'never.py'}:score", "train.rl.num_generations=4",
                         "train.batch_size=4")
    (tmp_path / "never.yaml").write_text(dump_config(cfg))
    result = CliRunner().invoke(app, ["run", "--config", str(tmp_path / "never.yaml"), "--name", "never"])
    assert result.exit_code == 1, result.output
    # The models load by then, so their progress bars may come before it: one error line, no traceback.
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in result.output and len(errors) == 1, result.stderr
    assert errors[0].startswith("error: train.rl.reward=judge: the program judge scored none of the 8 rollouts of step 1 "
                                "(unparseable: returned None (cannot judge)); nothing to learn from"), errors
    p = Run.open(tmp_path / "runs" / "never").paths(1)
    assert len(read_records(p.generations, Generation)) == 8
    assert all(j.score is None for j in read_records(p.judgements, Judgement))  # the judge stage's own verdicts, kept
    assert p.prompts.exists() and p.pairs.exists() and not p.train.exists() and not p.manifest.exists()
    assert len(read_records(p.policy / JUDGEMENTS_FILE, Judgement)) == 8  # what it said of the rollouts


@pytest.mark.slow
def test_rloo_with_the_policy_judging_its_rollouts(tiny_model_dir, tmp_path):
    """An LLM judge as the reward: without judge.model the iteration's starting policy judges (by log-probability)
    every rollout of its training copy; no reward model, every rollout scored."""
    from selfplay.loop import run_loop

    cfg = load_config(None, [
        f"model={tiny_model_dir}", "iterations=1", "prompts.per_iteration=2", "generation.backend=transformers",
        "generation.n=2", "generation.max_tokens=4", "judge.injection_check=false", "pairing.min_margin=0.0",
        "train.algo=rloo", "train.rl.reward=judge", "train.rl.steps=1", "train.rl.rollout_prompts=2",
        "train.rl.num_generations=2", "train.rl.max_new_tokens=4", "train.batch_size=2", "train.max_length=96",
        "train.learning_rate=1e-2",
    ])
    run = Run.create(tmp_path / "self", cfg)
    run_loop(run, log=lambda _: None)
    p = run.paths(1)
    rl = json.loads(p.train.read_text())["rl"]
    assert (rl["reward"], rl["scored"], rl["failed"]) == ("judge", 4, 0) and not (p.dir / "reward_model").exists()
    judgements = read_records(Path(rl["judgements"]), Judgement)
    assert [j.method for j in judgements] == ["logprob"] * 4 and all(1.0 <= j.score <= 5.0 for j in judgements)
    assert all("score_token_probs" in j.raw[0] for j in judgements)
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(p.policy / "merged" / "model.safetensors")
    assert any(not before[k].to(after[k].dtype).equal(after[k]) for k in before)
