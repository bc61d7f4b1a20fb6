"""Preflight of an external judge server: URL form, reachable, serving the model, speaking /v1/completions, each
a one-line EndpointError before any engine starts."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from selfplay.config import ConfigError, JudgeConfig, load_config
from selfplay.external import EndpointError, preflight_endpoint


@pytest.fixture
def server():
    """A loopback server: GET /v1/models lists state["models"]; POST /v1/completions answers unless state["chat_only"]."""
    state = {"models": ["judge-7b"], "chat_only": False, "paths": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            state["paths"].append(("GET", self.path))
            self.reply(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in state["models"]]})

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            state["paths"].append(("POST", self.path))
            if state["chat_only"]:
                self.reply(404, {"error": {"message": "Not Found"}})
            else:
                self.reply(200, {"choices": [{"index": 0, "text": "!", "finish_reason": "length"}]})

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
    return JudgeConfig(endpoint=url, endpoint_model=model, endpoint_timeout_s=5, **extra)


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
    with pytest.raises(EndpointError, match="not found \\(HTTP 404\\); the judges need the completions API"):
        preflight_endpoint(judge(url))


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
