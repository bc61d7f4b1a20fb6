"""A prompt longer than the model's context gets no output and is recorded; the rest of the batch runs.
vLLM would otherwise reject the whole generate() call for one such prompt."""

import pytest

from selfplay.config import GenerationConfig
from selfplay.generation import chat_ids, open_generator, within_context
from selfplay.records import Prompt

LONG = "Summarise this: " + "the quick brown fox jumps over the lazy dog " * 60  # about 540 tokens


def test_within_context_runs_only_what_fits():
    calls = []

    def run(fit):
        calls.append(fit)
        return [len(ids) for ids in fit]

    assert within_context([[1] * 3, [1] * 10, [1] * 9], 10, run) == [3, None, 9]
    assert calls == [[[1] * 3, [1] * 9]]
    assert within_context([[1] * 10], 10, run) == [None] and len(calls) == 1  # nothing fits: not called


def check_generator(gen):
    prompts = [Prompt(id="short", text="Say hi."), Prompt(id="long", text=LONG)]
    assert len(chat_ids(gen.tokenizer, LONG)) > 256
    records = gen.generate(prompts, n=2)
    assert {r.prompt_id for r in records} == {"short"} and len(records) == 2
    ids = [chat_ids(gen.tokenizer, p.text) for p in prompts]
    completions = gen.complete(ids, n=1, temperature=0.0, max_tokens=4)
    assert len(completions[0]) == 1 and completions[1] == []
    token = gen.tokenizer.convert_tokens_to_ids("1")
    logprobs = gen.next_token_logprobs(ids, [token])
    assert set(logprobs[0]) <= {token} and logprobs[1] == {}


@pytest.mark.slow
def test_transformers_backend_skips_prompts_beyond_the_context(tiny_model_dir):
    cfg = GenerationConfig(backend="transformers", max_model_len=256, max_tokens=4)
    with open_generator(cfg, tiny_model_dir, seed=0) as gen:
        check_generator(gen)


@pytest.mark.e2e
@pytest.mark.slow
def test_vllm_skips_prompts_beyond_the_context():
    from selfplay.models import ensure_default_model

    cfg = GenerationConfig(backend="vllm", max_model_len=256, max_tokens=4)
    with open_generator(cfg, ensure_default_model(), seed=0) as gen:
        check_generator(gen)
