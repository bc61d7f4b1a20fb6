"""An external judge: a model behind an OpenAI-compatible HTTP server (a local vLLM server, a hosted API), as a
Generator the judges read through.

    judge:
      kind: pointwise
      endpoint: http://127.0.0.1:8000/v1
      endpoint_model: Qwen/Qwen2.5-7B-Instruct
      endpoint_api: completions                         # or chat
      endpoint_tokenizer: /models/qwen2.5-7b-instruct   # optional, completions only

The judges format every prompt through `gen.tokenizer` (`generation.chat_ids`), with a forced assistant prefix
("Score: ") for log-probability scoring. The two APIs send that differently:

- completions (/v1/completions): the chat template is applied here and the forced prefix is more prompt. With
  `endpoint_tokenizer` (a local copy of the served model's tokenizer) prompts go as token ids; without it, as
  ChatML text (`<|im_start|>user ...`), the format of SmolLM2 and Qwen models. 32 prompts a request.
- chat (/v1/chat/completions): the server applies its own template, so chat-only services can judge. The stand-in
  tokenizer writes the chat as one line of JSON messages, read back here into one request per prompt. A forced
  prefix becomes a final assistant message that the server continues (vLLM: `continue_final_message: true`,
  `add_generation_prompt: false`); the OpenAI API has no such field, so log-prob scoring over chat needs a server
  that has (checked at preflight), elsewhere judge.method=text.

Every request: at most `endpoint_concurrency` in flight; retried on HTTP 429 and 5xx, a dropped connection or a
timeout (`endpoint_retries`, doubling waits with jitter, or the server's Retry-After); each successful reply kept
under the run's endpoint_cache/, keyed by the request, so a resumed run pays for no request twice. The request and
reply fields used: docs/design.md ("The OpenAI-compatible server").

HTTP goes through the standard library (urllib): requests, httpx and the openai client are installed only as
vLLM's dependencies, not ours (pyproject.toml), and what we need beyond one request (a retry loop, a thread pool)
is a few lines here.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import math
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from selfplay.config import ConfigError, JudgeConfig
from selfplay.generation import chat_ids
from selfplay.models import resolve_model
from selfplay.records import write_json

LOGPROBS_TOP = 20  # vLLM's default max_logprobs and the chat API's maximum; OpenAI's completions API allows at most 5
PREFLIGHT_TIMEOUT_S = 10.0  # a run checks the judge server this long before it starts any engine
CACHE_DIR = "endpoint_cache"  # under the run directory: one file per successful reply
BACKOFF_S = 1.0  # the wait before the first retry, doubled for each next one, up to BACKOFF_CAP_S
BACKOFF_CAP_S = 60.0
RETRY_AFTER_CAP_S = 600.0  # a longer Retry-After (a misconfigured server, a date far ahead) is cut to this
# Log-prob scoring over chat: one token, greedy, its top alternatives (the chat API takes logprobs as a switch).
CHAT_LOGPROBS = {"max_completion_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": LOGPROBS_TOP}

T = TypeVar("T")
R = TypeVar("R", bound=BaseModel)


class EndpointError(ConfigError):
    """The judge server could not be used; one line with the URL and what it said (`status`: its HTTP status)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


# --- the replies, as far as we read them (servers add fields of their own: ignored) ---------------------------------


class Reply(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ModelCard(Reply):
    id: str


class ModelList(Reply):  # GET /models
    data: list[ModelCard]


class CompletionLogprobs(Reply):
    top_logprobs: list[dict[str, float | None] | None] | None = None  # per generated token: {token text: logprob}


class CompletionChoice(Reply):
    index: int = 0  # prompt i's choice j is index i * n + j
    text: str = ""
    logprobs: CompletionLogprobs | None = None


class CompletionReply(Reply):  # POST /completions
    choices: list[CompletionChoice]


class TopLogprob(Reply):
    token: str
    logprob: float  # -9999.0 stands for -inf (OpenAI, vLLM)


class TokenLogprob(Reply):
    token: str
    logprob: float
    top_logprobs: list[TopLogprob] = []


class ChatLogprobs(Reply):
    content: list[TokenLogprob] | None = None  # per generated token


class ChatMessage(Reply):
    content: str | None = None  # None with a refusal or tool calls: judged as unparseable text


class ChatChoice(Reply):
    index: int = 0
    message: ChatMessage
    logprobs: ChatLogprobs | None = None


class ChatReply(Reply):  # POST /chat/completions
    choices: list[ChatChoice]


class CachedReply(BaseModel):
    """One successful reply in <run>/endpoint_cache/<key[:2]>/<key>.json, beside the request it answered."""

    model_config = ConfigDict(extra="forbid")
    path: str  # the URL's path, e.g. /v1/chat/completions
    request: dict
    reply: dict


class TextTokenizer:
    """A stand-in tokenizer where the served model's own is not here: "token ids" are Unicode code points, so text
    survives the round trip through `chat_ids` unchanged. Only single characters are single tokens: the digit and
    A/B verdicts the judges score are. `chat=False`: ChatML text for /v1/completions; `chat=True`: the messages as
    one line of JSON, which `chat_messages` reads back for /v1/chat/completions."""

    eos_token_id = None

    def __init__(self, chat: bool = False):
        self.chat = chat

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        if self.chat:
            # json.dumps escapes the newlines inside strings, so the first raw one ends the messages; what follows is
            # the forced assistant prefix (chat_ids appends it). The server adds the generation prompt itself.
            return json.dumps(messages, ensure_ascii=False) + "\n"
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i) for i in ids)


def chat_messages(text: str) -> tuple[list[dict], str]:
    """A chat written by TextTokenizer(chat=True): its messages and the forced assistant prefix ('' if none)."""
    head, _, prefix = text.partition("\n")
    return json.loads(head), prefix


def cache_key(url_path: str, body: dict) -> str:
    """sha256 of the URL's path and the request body's canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{url_path}\n{canonical}".encode()).hexdigest()


class EndpointGenerator:
    """`complete` and `next_token_logprobs` of the Generator protocol over /v1/completions or /v1/chat/completions."""

    def __init__(
        self,
        base_url: str,
        model: str,
        tokenizer=None,
        timeout_s: float = 300.0,
        api_key: str | None = None,
        batch: int = 32,
        *,
        api: Literal["completions", "chat"] = "completions",
        concurrency: int = 4,
        retries: int = 3,
        cache_dir: Path | None = None,
    ):
        if api == "chat" and tokenizer is not None:
            raise EndpointError("judge.endpoint_api=chat takes no local tokenizer: the server applies its chat template")
        self.base_url, self.model, self.api, self.api_key = base_url.rstrip("/"), model, api, api_key
        self.timeout_s, self.batch, self.concurrency, self.retries = timeout_s, batch, concurrency, retries
        self.cache_dir = cache_dir
        self.backoff_s = BACKOFF_S  # tests shorten it
        self.tokenizer = tokenizer if tokenizer is not None else TextTokenizer(chat=api == "chat")
        self.as_text = isinstance(self.tokenizer, TextTokenizer)
        self.model_dir = f"{self.base_url}#{model}"  # recorded as the judge's "policy"

    # --- HTTP -----------------------------------------------------------------------------------------------------

    def _send(self, path: str, body: dict | None, timeout_s: float, retries: int) -> object:
        """GET (no body) or POST one JSON request, retried on HTTP 429 and 5xx, a dropped connection or a timeout; the
        parsed JSON reply. Every failure is one EndpointError line naming the URL and the status."""
        url = f"{self.base_url}/{path}"
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(retries + 1):
            tries = f" (after {attempt + 1} attempts)" if attempt else ""
            request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
            wait = None
            try:
                with urllib.request.urlopen(request, timeout=timeout_s) as response:
                    raw = response.read()
            except urllib.error.HTTPError as err:
                detail = err.read().decode("utf-8", "replace")[:200].replace("\n", " ")
                if (err.code != 429 and err.code < 500) or attempt == retries:  # 4xx but 429: asking again cannot help
                    hint = "; check the key judge.endpoint_api_key_env names" if err.code in (401, 403) else ""
                    raise EndpointError(f"{url}: HTTP {err.code}: {detail}{hint}{tries}", err.code) from None
                wait = retry_after(err.headers.get("Retry-After"))
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
                if attempt == retries:
                    raise EndpointError(f"{url}: cannot reach the judge server ({getattr(err, 'reason', err)}){tries}") from None
            else:
                try:
                    return json.loads(raw.decode("utf-8"))
                except ValueError:
                    raise EndpointError(f"{url}: the reply is not JSON; is this an OpenAI-compatible /v1 URL?") from None
            time.sleep(wait if wait is not None else self._backoff(attempt))
        raise AssertionError("the loop returns or raises")

    def _backoff(self, attempt: int) -> float:
        # Half the doubled wait plus a random half of it: requests that failed together do not all retry at once.
        wait = min(self.backoff_s * 2**attempt, BACKOFF_CAP_S)
        return wait / 2 + random.uniform(0, wait / 2)

    def _post(self, path: str, body: dict, parse: Callable[[str, object, dict], T]) -> T:
        """POST `body` (or read its cached reply); `parse(url, reply, body)` checks the reply is what was asked for,
        raising an EndpointError if not, before it is cached: only replies that parsed are kept."""
        url = f"{self.base_url}/{path}"
        url_path = urllib.parse.urlparse(url).path
        file = None
        if self.cache_dir is not None:
            key = cache_key(url_path, body)
            file = self.cache_dir / key[:2] / f"{key}.json"
            if (hit := cached_reply(file, url_path, body)) is not None:
                return parse(url, hit, body)
        reply = self._send(path, body, self.timeout_s, self.retries)
        parsed = parse(url, reply, body)
        if file is not None and isinstance(reply, dict):
            write_json(file, CachedReply(path=url_path, request=body, reply=reply).model_dump())
        return parsed

    def _post_all(self, path: str, bodies: list[dict], parse: Callable[[str, object, dict], T]) -> list[T]:
        """`_post` of every body, at most `concurrency` in flight, replies in order; a failure cancels what has not started."""
        if len(bodies) <= 1:
            return [self._post(path, body, parse) for body in bodies]
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(bodies)), thread_name_prefix="selfplay-judge")
        try:
            return list(pool.map(lambda body: self._post(path, body, parse), bodies))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # --- the two APIs ---------------------------------------------------------------------------------------------

    def _prompts(self, prompt_ids: Sequence[list[int]]) -> list:
        return [self.tokenizer.decode(list(ids)) if self.as_text else list(ids) for ids in prompt_ids]

    def _completions(self, prompt_ids: Sequence[list[int]], n: int, sampling: dict) -> list[list[CompletionChoice]]:
        """Per prompt, its n choices, in order; `batch` prompts a request (the completions API takes a prompt list)."""
        prompts = self._prompts(prompt_ids)
        bodies = [
            {"model": self.model, "prompt": prompts[start : start + self.batch], "n": n, **sampling}
            for start in range(0, len(prompts), self.batch)
        ]
        return [per_prompt for reply in self._post_all("completions", bodies, parse_completions) for per_prompt in reply]

    def _chat_body(self, ids: list[int], n: int, sampling: dict) -> dict:
        """One prompt's /chat/completions request; a forced prefix becomes a final assistant message to continue."""
        messages, prefix = chat_messages(self.tokenizer.decode(list(ids)))
        body = {"model": self.model, "messages": messages, "n": n, **sampling}
        if prefix:  # vLLM's fields: continue this message instead of starting a new one (docs/design.md)
            body |= {
                "messages": [*messages, {"role": "assistant", "content": prefix}],
                "add_generation_prompt": False,
                "continue_final_message": True,
            }
        return body

    def _chats(self, prompt_ids: Sequence[list[int]], n: int, sampling: dict) -> list[list[ChatChoice]]:
        """Per prompt, its n choices: one request each (the chat API takes one conversation)."""
        return self._post_all("chat/completions", [self._chat_body(ids, n, sampling) for ids in prompt_ids], parse_chat)

    def generate(self, prompts, n):
        raise EndpointError("an endpoint judge only judges; the policy's responses come from the local engine")

    def complete(self, prompt_ids, *, n, temperature, max_tokens):
        match self.api:
            case "completions":
                choices = self._completions(prompt_ids, n, {"temperature": temperature, "max_tokens": max_tokens})
                return [[c.text for c in per_prompt] for per_prompt in choices]
            case "chat":
                # max_completion_tokens: max_tokens is deprecated in the chat API, and not compatible with OpenAI's o-series.
                chats = self._chats(prompt_ids, n, {"temperature": temperature, "max_completion_tokens": max_tokens})
                return [[c.message.content or "" for c in per_prompt] for per_prompt in chats]

    def next_token_logprobs(self, prompt_ids, token_ids):
        match self.api:
            case "completions":
                body: dict = {"max_tokens": 1, "temperature": 0.0, "logprobs": LOGPROBS_TOP}
                if not self.as_text:
                    body["return_tokens_as_token_ids"] = True  # vLLM extension: exact ids, no re-tokenising
                tops = [completion_top(choice) for [choice] in self._completions(prompt_ids, 1, body)]
            case "chat":
                tops = [chat_top(choice) for [choice] in self._chats(prompt_ids, 1, CHAT_LOGPROBS)]
        if any(top is None for top in tops):
            raise EndpointError(f"{self.base_url}: the server returned no top_logprobs; use judge.method=text with this endpoint")
        wanted = set(token_ids)
        return [self._fold(top or [], wanted) for top in tops]

    def _fold(self, top: Iterable[tuple[str, float | None]], wanted: set[int]) -> dict[int, float]:
        """The wanted tokens' log-probabilities; spellings of one token ('4' and ' 4' in text mode) add up."""
        found: dict[int, float] = {}
        for key, logprob in top:
            token = self._token_id(key)
            if token is not None and token in wanted and logprob is not None:
                found[token] = logaddexp(found[token], logprob) if token in found else logprob
        return found

    def _token_id(self, key: str) -> int | None:
        """A top-logprobs key as a token id: vLLM's "token_id:N" form, else the text's single token."""
        if key.startswith("token_id:") and key[9:].isdigit():
            return int(key[9:])
        ids = self.tokenizer(key.strip() if self.as_text else key, add_special_tokens=False)["input_ids"]
        return ids[0] if len(ids) == 1 else None

    # --- preflight ------------------------------------------------------------------------------------------------

    def check(self, timeout_s: float = PREFLIGHT_TIMEOUT_S, logprob: bool = False) -> None:
        """Preflight, one attempt per request (a run starts against a server that answers now): the server answers,
        serves `model` and speaks the chosen API; over chat with `logprob`, it also continues a final assistant
        message and returns top_logprobs, the request log-prob scoring sends."""
        try:
            served = [m.id for m in ModelList.model_validate(self._send("models", None, timeout_s, 0)).data]
        except ValidationError:
            served = []
        if not served:
            raise EndpointError(f"{self.base_url}/models: no model list in the reply; is this an OpenAI-compatible /v1 URL?")
        if self.model not in served:
            raise EndpointError(f"judge.endpoint_model={self.model!r}: {self.base_url} serves {', '.join(map(str, served[:5]))}")
        match self.api:
            case "completions":
                path, name, other = "completions", "completions", "chat for a chat-only service"
                body = {"model": self.model, "prompt": "Hi", "max_tokens": 1}
                parse: Callable[[str, object, dict], object] = parse_completions
            case "chat":
                path, name, other = "chat/completions", "chat completions", "completions if the server speaks that"
                body = {"model": self.model, "messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 1}
                parse = parse_chat
        url = f"{self.base_url}/{path}"
        try:
            parse(url, self._send(path, body, timeout_s, 0), body)
        except EndpointError as err:
            if err.status == 404:
                raise EndpointError(
                    f"{url}: not found (HTTP 404); the judges need the {name} API: set judge.endpoint_api={other}", 404
                ) from None
            raise
        if self.api == "chat" and logprob:
            need = (
                "judge.method=logprob over chat needs a server that continues a final assistant message and returns "
                "top_logprobs (vLLM: continue_final_message); use judge.method=text"
            )
            body = self._chat_body(chat_ids(self.tokenizer, "Hi", assistant_prefix="Score: "), 1, CHAT_LOGPROBS)
            try:
                [choice] = parse_chat(url, self._send(path, body, timeout_s, 0), body)
            except EndpointError as err:
                if err.status in (400, 422):  # a field it does not know, or more top_logprobs than it gives
                    raise EndpointError(f"{err}; {need}", err.status) from None
                raise
            if chat_top(choice) is None:
                raise EndpointError(f"{url}: no top_logprobs in the reply; {need}")


def parse_completions(url: str, reply: object, body: dict) -> list[list[CompletionChoice]]:
    """A /completions reply as, per prompt of the request, its n choices in order."""
    prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]  # we send lists; preflight one string
    n = body.get("n", 1)
    choices = sorted(typed(CompletionReply, url, reply).choices, key=lambda c: c.index)
    if len(choices) != len(prompts) * n:
        raise EndpointError(f"{url}: asked for {len(prompts) * n} choices, got {len(choices)}")
    return [choices[i * n : (i + 1) * n] for i in range(len(prompts))]


def parse_chat(url: str, reply: object, body: dict) -> list[ChatChoice]:
    """A /chat/completions reply as its n choices in order."""
    n = body.get("n", 1)
    choices = sorted(typed(ChatReply, url, reply).choices, key=lambda c: c.index)
    if len(choices) != n:
        raise EndpointError(f"{url}: asked for {n} choices, got {len(choices)}")
    return choices


def completion_top(choice: CompletionChoice) -> list[tuple[str, float | None]] | None:
    """The first generated token's top log-probabilities in a /completions choice, None if the server sent none."""
    top = ((choice.logprobs.top_logprobs if choice.logprobs else None) or [None])[0]
    return list(top.items()) if top else None


def chat_top(choice: ChatChoice) -> list[tuple[str, float | None]] | None:
    """The same in a /chat/completions choice: logprobs.content[0].top_logprobs, as (token, logprob)."""
    content = (choice.logprobs.content if choice.logprobs else None) or []
    return [(t.token, t.logprob) for t in content[0].top_logprobs] if content and content[0].top_logprobs else None


def typed(cls: type[R], url: str, reply: object) -> R:
    try:
        return cls.model_validate(reply)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "reply"
        raise EndpointError(f"{url}: the reply is not the expected JSON ({where}: {first['msg']})") from None


def cached_reply(file: Path, url_path: str, body: dict) -> dict | None:
    """The reply kept for this request, if any. An entry that does not read back (edited by hand) is a miss: the
    request is sent again and the entry rewritten."""
    try:
        entry = CachedReply.model_validate(json.loads(file.read_text(encoding="utf-8")))
    except (OSError, ValueError):  # no file, not JSON, not a CachedReply (ValidationError is a ValueError)
        return None
    return entry.reply if (entry.path, entry.request) == (url_path, body) else None


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds, or an HTTP date; RFC 9110), at most RETRY_AFTER_CAP_S; None
    if absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S) if math.isfinite(seconds) else None


def logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) without underflow: two -9999.0 (-inf) spellings add to -9999.0, not a math error."""
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))


def open_external(cfg: JudgeConfig, run_dir: Path | None = None) -> EndpointGenerator:
    """The judge's Generator for `judge.endpoint`; `Engines.judge()` returns it instead of starting an engine. With
    `run_dir` and judge.endpoint_cache, replies are kept under run_dir/endpoint_cache/."""
    if not cfg.endpoint or not cfg.endpoint_model:
        raise EndpointError("judge.endpoint and judge.endpoint_model are both needed for an external judge")
    tokenizer = None
    if cfg.endpoint_tokenizer:
        from transformers import AutoTokenizer  # heavy: only when a local tokenizer is asked for

        tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.endpoint_tokenizer))
    return EndpointGenerator(
        cfg.endpoint,
        cfg.endpoint_model,
        tokenizer,
        cfg.endpoint_timeout_s,
        _api_key(cfg),
        api=cfg.endpoint_api,
        concurrency=cfg.endpoint_concurrency,
        retries=cfg.endpoint_retries,
        cache_dir=run_dir / CACHE_DIR if run_dir is not None and cfg.endpoint_cache else None,
    )


def preflight_endpoint(cfg: JudgeConfig) -> None:
    """Before a run starts an engine (the URL's form is checked when the config loads): the key's variable, the
    local tokenizer, and the server itself (reachable, serving endpoint_model, speaking endpoint_api; over chat with
    method=logprob, continuing a final assistant message with top_logprobs), each a one-line EndpointError."""
    if not cfg.endpoint or not cfg.endpoint_model:
        raise EndpointError("judge.endpoint and judge.endpoint_model are both needed for an external judge")
    if cfg.endpoint_tokenizer:
        resolve_model(cfg.endpoint_tokenizer)
    gen = EndpointGenerator(cfg.endpoint, cfg.endpoint_model, None, cfg.endpoint_timeout_s, _api_key(cfg), api=cfg.endpoint_api)
    gen.check(logprob=cfg.method == "logprob" and cfg.kind != "constitution-revision")  # revisions are sampled text


def _api_key(cfg: JudgeConfig) -> str | None:
    if not cfg.endpoint_api_key_env:
        return None
    key = os.environ.get(cfg.endpoint_api_key_env)
    if not key:
        raise EndpointError(f"judge.endpoint_api_key_env: environment variable {cfg.endpoint_api_key_env} is not set")
    return key
