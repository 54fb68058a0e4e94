"""LAN discovery's settings (issue 18): off by default, each layer, bad values named, the secret never printed,
and inspect's FOUND column."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from axiomnet.errors import ConfigError
from axiomnet.ops import cli
from axiomnet.ops.config import load_config
from axiomnet.ops.genconf import default_config_text, effective_config_text
from axiomnet.ops.inspect import render_peers


@pytest.fixture
def user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    return {"HOME": str(tmp_path / "home")}


def test_discovery_is_off_by_default(user):
    config = load_config(env=user)
    assert config.discover == () and config.discover_secret is None and config.discover_secret_file is None
    assert config.discover_interval == 1.0


def test_each_layer_and_the_off_switch(user, tmp_path):
    path = tmp_path / "node.toml"
    path.write_text('discover = ["eth.*", "wlan0"]\ndiscover_secret = "s3cret"\ndiscover_interval = 2\n'
                    'discover_secret_file = "group.secret"\n')
    config = load_config(config_file=path, env=user)
    assert config.discover == ("eth.*", "wlan0") and config.discover_secret == "s3cret"
    assert config.discover_interval == 2.0 and config.discover_secret_file == tmp_path / "group.secret"
    env = dict(user, AXIOMNET_DISCOVER="br0, eth1", AXIOMNET_DISCOVER_INTERVAL="0.5")
    config = load_config(config_file=path, env=env)
    assert config.discover == ("br0", "eth1") and config.discover_interval == 0.5
    config = load_config(config_file=path, env=env, overrides={"discover": [".*"]})
    assert config.discover == (".*",)
    assert load_config(config_file=path, env=env, overrides={"no_discover": True}).discover == ()


@pytest.mark.parametrize(("text", "named"), [
    ('discover = "eth0"', "discover (in"),
    ('discover = ["("]', "discover (in"),
    ('discover_interval = 0.01', "discover_interval (in"),
    ('discover_interval = "x"', "discover_interval (in"),
    ('discover_secret = ""', "discover_secret (in"),
])
def test_bad_values_name_their_key(user, tmp_path, text, named):
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        load_config(config_file=path, env=user)


def test_a_bad_secret_is_never_echoed(user, tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(env=user, overrides={"discover_secret": "x" * 5000})
    assert "xxxx" not in str(caught.value)


def test_the_secret_is_never_printed(user, tmp_path, capsys, monkeypatch):
    path = tmp_path / "node.toml"
    path.write_text('discover = [".*"]\ndiscover_secret = "hunter2-group"\n')
    text = effective_config_text(load_config(config_file=path, env=user))
    assert "hunter2" not in text and "discover_secret is set" in text and 'discover = [".*"]' in text
    monkeypatch.setattr(os, "environ", user)
    assert cli.main(["config", "check", "--config", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and json.loads(out)["discover_secret"] == "<set, not shown>"


def test_commented_default_config_still_checks(user, tmp_path):
    path = tmp_path / "default.toml"
    path.write_text(default_config_text().replace('# discover = [".*"]', 'discover = [".*"]'))
    assert load_config(config_file=path, env=user).discover == (".*",)


def test_daemon_flags_reach_the_config(user, tmp_path):
    args = cli.build_parser().parse_args(["daemon", "--discover", "eth.*", "--discover", "wlan0",
                                          "--discover-secret-file", str(tmp_path / "s"), "--discover-interval", "3"])
    config = load_config(env=user, overrides=cli._daemon_overrides(args))
    assert config.discover == ("eth.*", "wlan0") and config.discover_interval == 3.0
    assert config.discover_secret_file == tmp_path / "s"


def test_inspect_peers_says_how_each_peer_was_found():
    state = {
        "peers": [{"public_key": "aa" * 32, "address": "fc00::1"}, {"public_key": "bb" * 32, "address": "fc00::2"},
                  {"public_key": "cc" * 32, "address": "fc00::3"}],
        "sessions": [],
        "snapshots": {"peers": {"found": {"aa" * 32: "discovered", "bb" * 32: "static"}}},
    }
    lines = render_peers(state)
    assert "FOUND" in lines[1]
    assert "discovered" in lines[2] and "static" in lines[3] and lines[4].split()[2] == "-"
