"""An external judge: a model behind an OpenAI-compatible HTTP server (e.g. `vllm serve` on localhost),
as a Generator the judges can read through. Standard library only (urllib), so it is no dependency.

    judge:
      kind: pointwise
      endpoint: http://127.0.0.1:8000/v1
      endpoint_model: Qwen/Qwen2.5-7B-Instruct
      endpoint_tokenizer: /models/qwen2.5-7b-instruct   # optional, see below

Judges build chat-formatted prompts with `generation.chat_ids(gen.tokenizer, ...)`, including a forced
assistant prefix ("Score: ") for log-probability scoring, so the chat template is applied here, not by
the server: /v1/completions, never /v1/chat/completions (which cannot continue a started answer in the
OpenAI API). With `endpoint_tokenizer` (a local copy of the served model's tokenizer) prompts go as
token ids; without it, as ChatML text (`<|im_start|>user ...`), the format of SmolLM2 and Qwen models.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from collections.abc import Sequence

from selfplay.config import ConfigError, JudgeConfig
from selfplay.models import resolve_model

LOGPROBS_TOP = 20  # vLLM's default max_logprobs; OpenAI's own completions API allows at most 5
PREFLIGHT_TIMEOUT_S = 10.0  # a run checks the judge server this long before it starts any engine


class EndpointError(ConfigError):
    """The judge server could not be used; one line with the URL and what it said."""


class ChatMLTextTokenizer:
    """A stand-in tokenizer when no local one is given: ChatML formatting, and "token ids" that are
    Unicode code points, so text survives the round trip through `chat_ids` unchanged. Only single
    characters are single tokens: the digit and A/B verdicts the judges score are."""

    eos_token_id = None

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i) for i in ids)


class EndpointGenerator:
    """`complete` and `next_token_logprobs` of the Generator protocol over /v1/completions."""

    def __init__(
        self, base_url: str, model: str, tokenizer=None, timeout_s: float = 300.0, api_key: str | None = None, batch: int = 32
    ):
        self.base_url, self.model, self.timeout_s, self.api_key, self.batch = (
            base_url.rstrip("/"),
            model,
            timeout_s,
            api_key,
            batch,
        )
        self.tokenizer = tokenizer if tokenizer is not None else ChatMLTextTokenizer()
        self.as_text = isinstance(self.tokenizer, ChatMLTextTokenizer)
        self.model_dir = f"{self.base_url}#{model}"  # recorded as the judge's "policy"

    def _post(self, body: dict) -> dict:
        return self._request("completions", {"model": self.model, **body}, self.timeout_s)

    def _request(self, path: str, body: dict | None, timeout_s: float) -> dict:
        """GET (no body) or POST one JSON request to the server; every failure is one EndpointError line."""
        url = f"{self.base_url}/{path}"
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")[:200].replace("\n", " ")
            raise EndpointError(f"{url}: HTTP {err.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            raise EndpointError(f"{url}: cannot reach the judge server ({getattr(err, 'reason', err)})") from None
        except ValueError:
            raise EndpointError(f"{url}: the reply is not JSON; is this an OpenAI-compatible /v1 URL?") from None

    def check(self, timeout_s: float = PREFLIGHT_TIMEOUT_S) -> None:
        """Preflight: the server answers, serves `model`, and speaks /v1/completions (the judges continue a
        started answer, which chat-only services cannot: they answer 404 there)."""
        reply = self._request("models", None, timeout_s)
        served = [m.get("id") for m in reply.get("data", []) if isinstance(m, dict)] if isinstance(reply, dict) else []
        if not served:
            raise EndpointError(f"{self.base_url}/models: no model list in the reply; is this an OpenAI-compatible /v1 URL?")
        if self.model not in served:
            raise EndpointError(f"judge.endpoint_model={self.model!r}: {self.base_url} serves {', '.join(map(str, served[:5]))}")
        try:
            self._request("completions", {"model": self.model, "prompt": "Hi", "max_tokens": 1}, timeout_s)
        except EndpointError as err:
            if ": HTTP 404:" in str(err):
                raise EndpointError(
                    f"{self.base_url}/completions: not found (HTTP 404); the judges need the completions API, "
                    "not only chat completions"
                ) from None
            raise

    def _prompts(self, prompt_ids: Sequence[list[int]]) -> list:
        return [self.tokenizer.decode(list(ids)) if self.as_text else list(ids) for ids in prompt_ids]

    def _choices(self, prompts: list, n: int, body: dict) -> list[list[dict]]:
        """Per prompt, its n choices, in order; one request per `batch` prompts (OpenAI's batched prompt list)."""
        out: list[list[dict]] = []
        for start in range(0, len(prompts), self.batch):
            chunk = prompts[start : start + self.batch]
            reply = self._post({"prompt": chunk, "n": n, **body})
            choices = sorted(reply.get("choices", []), key=lambda c: c.get("index", 0))
            if len(choices) != len(chunk) * n:
                raise EndpointError(f"{self.base_url}/completions: asked for {len(chunk) * n} choices, got {len(choices)}")
            out.extend(choices[i * n : (i + 1) * n] for i in range(len(chunk)))
        return out

    def generate(self, prompts, n):
        raise EndpointError("an endpoint judge only judges; the policy's responses come from the local engine")

    def complete(self, prompt_ids, *, n, temperature, max_tokens):
        choices = self._choices(self._prompts(prompt_ids), n, {"temperature": temperature, "max_tokens": max_tokens})
        return [[c.get("text", "") for c in per_prompt] for per_prompt in choices]

    def _token_id(self, key: str) -> int | None:
        """A top-logprobs key as a token id: vLLM's "token_id:N" form, else the text's single token."""
        if key.startswith("token_id:") and key[9:].isdigit():
            return int(key[9:])
        ids = self.tokenizer(key.strip() if self.as_text else key, add_special_tokens=False)["input_ids"]
        return ids[0] if len(ids) == 1 else None

    def next_token_logprobs(self, prompt_ids, token_ids):
        body = {"max_tokens": 1, "temperature": 0.0, "logprobs": LOGPROBS_TOP}
        if not self.as_text:
            body["return_tokens_as_token_ids"] = True  # vLLM extension: exact ids, no re-tokenising
        wanted = set(token_ids)
        out = []
        for [choice] in self._choices(self._prompts(prompt_ids), 1, body):
            top = ((choice.get("logprobs") or {}).get("top_logprobs") or [None])[0]
            if not isinstance(top, dict):
                raise EndpointError(
                    f"{self.base_url}: the server returned no top_logprobs; use judge.method=text with this endpoint"
                )
            found: dict[int, float] = {}
            for key, logprob in top.items():
                token = self._token_id(key)
                if token is not None and token in wanted and logprob is not None:
                    # ' 4' and '4' fold into one id in text mode: add their probabilities.
                    found[token] = math.log(math.exp(found[token]) + math.exp(logprob)) if token in found else logprob
            out.append(found)
        return out

    def close(self) -> None:
        pass  # nothing held between requests


def open_external(cfg: JudgeConfig) -> EndpointGenerator:
    """The judge's Generator for `judge.endpoint`; `Engines.judge()` returns it instead of starting an engine."""
    if not cfg.endpoint or not cfg.endpoint_model:
        raise EndpointError("judge.endpoint and judge.endpoint_model are both needed for an external judge")
    tokenizer = None
    if cfg.endpoint_tokenizer:
        from transformers import AutoTokenizer  # heavy: only when a local tokenizer is asked for

        tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.endpoint_tokenizer))
    return EndpointGenerator(cfg.endpoint, cfg.endpoint_model, tokenizer, cfg.endpoint_timeout_s, _api_key(cfg))


def preflight_endpoint(cfg: JudgeConfig) -> None:
    """Before a run starts an engine (the URL's form is checked when the config loads): the key's variable, the
    local tokenizer, and the server itself (reachable, serving endpoint_model, speaking /v1/completions), each a
    one-line EndpointError."""
    if not cfg.endpoint or not cfg.endpoint_model:
        raise EndpointError("judge.endpoint and judge.endpoint_model are both needed for an external judge")
    if cfg.endpoint_tokenizer:
        resolve_model(cfg.endpoint_tokenizer)
    EndpointGenerator(cfg.endpoint, cfg.endpoint_model, None, cfg.endpoint_timeout_s, _api_key(cfg)).check()


def _api_key(cfg: JudgeConfig) -> str | None:
    if not cfg.endpoint_api_key_env:
        return None
    key = os.environ.get(cfg.endpoint_api_key_env)
    if not key:
        raise EndpointError(f"judge.endpoint_api_key_env: environment variable {cfg.endpoint_api_key_env} is not set")
    return key
