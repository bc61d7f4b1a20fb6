"""Preflight: everything a run will read is checked before anything is written or any engine starts (the seed set,
the judge's checkpoint and server, the reward models, the held-out eval files, the W&B login), each problem one
SelfplayError line naming it; and the whole check of the default config takes milliseconds, importing nothing heavy.
The CLI side (exit 1, one stderr line, no run directory) is in tests/test_bad_inputs.py's table."""

from __future__ import annotations

import pytest

from selfplay.config import ConfigError, load_config
from selfplay.errors import SelfplayError
from selfplay.loop import preflight
from selfplay.train.setup import check_reporting, wandb_can_log

WANDB_KEY = "0123456789abcdef0123456789abcdef01234567"  # the shape of a W&B API key; no account behind it


def refused(overrides: list[str], error: type[SelfplayError]) -> str:
    """The one-line message preflight refuses the default config with these overrides."""
    with pytest.raises(error) as info:
        preflight(load_config(None, overrides))
    message = str(info.value)
    assert "\n" not in message and message, message
    return message


@pytest.fixture
def no_wandb_login(tmp_path, monkeypatch):
    """An environment where W&B finds no login: no key variables, no settings files, an empty netrc path."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / ".config" / "wandb"))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # no workspace settings (./wandb/settings) either
    return home


# --- the W&B login ----------------------------------------------------------------------------------------------------


def test_wandb_without_a_login_fails_in_one_line_saying_what_to_do(no_wandb_login):
    message = refused(["logging.report_to=wandb"], ConfigError)
    assert message == (
        "logging.report_to=wandb: no W&B login (no WANDB_API_KEY, no netrc entry for its server); "
        "run `wandb login`, or set WANDB_MODE=offline to keep the metrics on disk"
    )
    check_reporting(load_config(None, ["logging.report_to=tensorboard"]).logging)  # needs no login
    check_reporting(load_config(None).logging)


NETRC = "machine {host}\n  login user\n  password " + WANDB_KEY + "\n"


@pytest.mark.parametrize("env, files, logged_in", [
    ({}, {}, False),
    ({"WANDB_MODE": "offline"}, {}, True),
    ({"WANDB_MODE": "disabled"}, {}, True),
    ({"WANDB_MODE": "dryrun"}, {}, True),
    ({"WANDB_MODE": "online"}, {}, False),
    ({"WANDB_API_KEY": WANDB_KEY}, {}, True),
    ({"WANDB_IDENTITY_TOKEN_FILE": "token.jwt"}, {}, True),
    # `wandb login` writes the netrc entry; wandb 0.31's default server also reads api.wandb.ai's
    ({}, {".netrc": NETRC.format(host="api.wandb.ai")}, True),
    ({}, {".netrc": NETRC.format(host="api.forge.coreweave.com")}, True),
    ({}, {".netrc": "machine api.wandb.ai\n  login user\n"}, False),  # an entry without a key
    ({}, {".netrc": NETRC.format(host="wandb.example.com")}, False),  # a login for another server
    ({"WANDB_BASE_URL": "https://wandb.example.com"}, {".netrc": NETRC.format(host="wandb.example.com")}, True),
    ({"WANDB_BASE_URL": "https://wandb.example.com"}, {".netrc": NETRC.format(host="api.wandb.ai")}, False),
    ({}, {".netrc": "machine api.wandb.ai login\n  password"}, False),  # malformed: wandb finds nothing in it either
    ({"NETRC": "{home}/elsewhere"}, {"elsewhere": NETRC.format(host="api.wandb.ai")}, True),
    # wandb's settings files: `wandb offline` and `wandb login --host` write them; the environment overrides them
    ({}, {".config/wandb/settings": "[default]\nmode = offline\n"}, True),
    ({"WANDB_MODE": "online"}, {".config/wandb/settings": "[default]\nmode = offline\n"}, False),
    ({}, {"work/wandb/settings": "[default]\nmode = disabled\n"}, True),
    ({}, {".config/wandb/settings": "[default]\nbase_url = https://wandb.example.com\n",
          ".netrc": NETRC.format(host="wandb.example.com")}, True),
    ({}, {".config/wandb/settings": "[default]\napi_key = " + WANDB_KEY + "\n"}, True),
    ({}, {".config/wandb/settings": "not an ini file\n"}, False),
])
def test_wandb_login_is_found_where_wandb_finds_it(no_wandb_login, monkeypatch, env, files, logged_in):
    home = no_wandb_login
    for name, text in files.items():
        path = home.parent / name if name.startswith("work/") else home / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(home=home))
    assert wandb_can_log() is logged_in
