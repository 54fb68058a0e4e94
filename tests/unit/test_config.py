"""Config: defaults, TOML < environment < overrides, and a ConfigError naming the key for every bad value."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from axiomnet.ops.config import (
    Config,
    PeerSpec,
    default_admin_socket,
    default_data_dir,
    load_config,
)
from axiomnet.constants import DEFAULT_MTU, DEFAULT_TUN_NAME, DEFAULT_UDP_PORT
from axiomnet.errors import ConfigError

KEY_A = "ab" * 32
KEY_B = "0123456789abcdef" * 4


def toml(tmp_path: Path, text: str, name: str = "node.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """An unprivileged user's environment (never the real /var/lib/axiomnet)."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    return {"HOME": str(tmp_path / "home")}


# --- defaults --------------------------------------------------------------------------------------------
def test_defaults_for_an_unprivileged_user(user: dict[str, str], tmp_path: Path) -> None:
    config = load_config(config_file=None, env=user, overrides={})
    assert (config.listen_host, config.listen_port) == ("::", DEFAULT_UDP_PORT)
    assert config.listen == f"[::]:{DEFAULT_UDP_PORT}"
    assert config.peers == ()
    assert (config.tun_enabled, config.tun_name, config.mtu) == (True, DEFAULT_TUN_NAME, DEFAULT_MTU)
    assert (config.log_level, config.log_json) == ("INFO", False)
    assert config.data_dir == tmp_path / "home" / ".local" / "share" / "axiomnet"
    assert config.admin_socket == config.data_dir / "admin.sock"


def test_xdg_directories_are_honoured_and_relative_ones_ignored(user: dict[str, str], tmp_path: Path) -> None:
    env = dict(user, XDG_DATA_HOME=str(tmp_path / "xdg-data"), XDG_RUNTIME_DIR=str(tmp_path / "run"))
    config = load_config(env=env)
    assert config.data_dir == tmp_path / "xdg-data" / "axiomnet"
    assert config.admin_socket == tmp_path / "run" / "axiomnet" / "admin.sock"
    relative = dict(user, XDG_DATA_HOME="rel/data", XDG_RUNTIME_DIR="rel/run")
    assert default_data_dir(relative, euid=1000) == tmp_path / "home" / ".local" / "share" / "axiomnet"
    assert default_admin_socket(Path("/d"), relative, euid=1000) == Path("/d/admin.sock")


def test_root_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    config = load_config(env={"XDG_DATA_HOME": "/x", "XDG_RUNTIME_DIR": "/y"})
    assert config.data_dir == Path("/var/lib/axiomnet")
    assert config.admin_socket == Path("/run/axiomnet/admin.sock")


def test_direct_construction_validates_and_derives_admin_socket(user: dict[str, str], tmp_path: Path) -> None:
    config = Config(listen_host="127.0.0.1", listen_port=9000, data_dir=str(tmp_path / "d"))  # type: ignore[arg-type]
    assert config.data_dir == tmp_path / "d"
    assert config.admin_socket.name == "admin.sock"
    with pytest.raises(ConfigError, match="mtu"):
        Config(mtu=100, data_dir=tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.mtu = 1500  # type: ignore[misc]


# --- precedence ------------------------------------------------------------------------------------------
def test_precedence_defaults_toml_env_overrides(user: dict[str, str], tmp_path: Path) -> None:
    path = toml(tmp_path, f'mtu = 1300\nlisten = "10.0.0.1:1111"\npeers = ["10.0.0.2:2222#{KEY_A}"]\n'
                          'log_level = "debug"\ntun = false\n')
    from_file = load_config(config_file=path, env=user)
    assert (from_file.mtu, from_file.listen, from_file.log_level, from_file.tun_enabled) == \
        (1300, "10.0.0.1:1111", "DEBUG", False)
    assert from_file.peers == (PeerSpec("10.0.0.2", 2222, bytes.fromhex(KEY_A)),)

    env = dict(user, AXIOMNET_MTU="1350", AXIOMNET_PEERS="10.0.0.3:3333", AXIOMNET_TUN="axn7")
    from_env = load_config(config_file=path, env=env)
    assert (from_env.mtu, from_env.listen, from_env.tun_enabled, from_env.tun_name) == \
        (1350, "10.0.0.1:1111", True, "axn7")
    assert from_env.peers == (PeerSpec("10.0.0.3", 3333, None),)  # lists replace, never merge

    overrides = {"mtu": 1400, "peers": [f"[2001:db8::1]:4444#{KEY_B}"], "no_tun": True, "log_level": None}
    final = load_config(config_file=path, env=env, overrides=overrides)
    assert (final.mtu, final.tun_enabled, final.log_level) == (1400, False, "DEBUG")  # None = not given
    assert final.peers == (PeerSpec("2001:db8::1", 4444, bytes.fromhex(KEY_B)),)


def test_full_toml_file(user: dict[str, str], tmp_path: Path) -> None:
    path = toml(tmp_path, f"""
listen = "[::1]:7000"
peers = ["peer.example.org:7443", "192.0.2.7:9000#{KEY_A}"]
tun = "axn3"
mtu = 1500
data_dir = "state"
admin_socket = "/tmp/axn-test.sock"
log_level = "WARNING"
log_json = true
""")
    config = load_config(config_file=path, env=user)
    assert (config.listen_host, config.listen_port) == ("::1", 7000)
    assert [str(p) for p in config.peers] == ["peer.example.org:7443", f"192.0.2.7:9000#{KEY_A}"]
    assert (config.tun_enabled, config.tun_name, config.mtu) == (True, "axn3", 1500)
    assert config.data_dir == tmp_path / "state"  # relative to the config file's directory
    assert config.admin_socket == Path("/tmp/axn-test.sock")
    assert (config.log_level, config.log_json) == ("WARNING", True)


def test_env_parsing(user: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = dict(
        user,
        AXIOMNET_LISTEN="0.0.0.0:7444",
        AXIOMNET_PEERS=f" 10.1.1.1:1#{KEY_A} , [fe80::1%eth0]:2 ,,host-a.lan:3 ",
        AXIOMNET_NO_TUN="1",
        AXIOMNET_MTU="1280",
        AXIOMNET_DATA_DIR="relative/data",
        AXIOMNET_ADMIN_SOCKET=str(tmp_path / "a.sock"),
        AXIOMNET_LOG_LEVEL="trace",
        AXIOMNET_LOG_JSON="yes",
        AXIOMNET_SOMETHING_ELSE="ignored",
    )
    config = load_config(env=env)
    assert config.listen == "0.0.0.0:7444"
    assert [(p.host, p.port, p.public_key) for p in config.peers] == [
        ("10.1.1.1", 1, bytes.fromhex(KEY_A)), ("fe80::1%eth0", 2, None), ("host-a.lan", 3, None)]
    assert (config.tun_enabled, config.mtu, config.log_level, config.log_json) == (False, 1280, "TRACE", True)
    assert config.data_dir == tmp_path / "relative" / "data"
    assert config.admin_socket == tmp_path / "a.sock"
    assert load_config(env=dict(user, AXIOMNET_NO_TUN="0")).tun_enabled is True
    assert load_config(env=dict(user, AXIOMNET_PEERS="")).peers == ()


def test_tun_true_in_toml_enables_with_default_name(user: dict[str, str], tmp_path: Path) -> None:
    config = load_config(config_file=toml(tmp_path, "tun = true\n"), env=dict(user, AXIOMNET_NO_TUN="1"),
                         overrides={"tun": "axn9"})
    assert (config.tun_enabled, config.tun_name) == (True, "axn9")
    assert load_config(config_file=toml(tmp_path, "tun = true\n"), env=user).tun_name == DEFAULT_TUN_NAME


def test_override_field_names_are_accepted(user: dict[str, str], tmp_path: Path) -> None:
    config = load_config(env=user, overrides={"listen_host": "127.0.0.1", "listen_port": 9999,
                                              "tun_enabled": False, "tun_name": "x0", "data_dir": tmp_path})
    assert (config.listen, config.tun_enabled, config.tun_name, config.data_dir) == \
        ("127.0.0.1:9999", False, "x0", tmp_path)


# --- errors name the key ---------------------------------------------------------------------------------
def test_missing_explicit_config_file_is_an_error(user: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(config_file=tmp_path / "nope.toml", env=user)


def test_invalid_toml_is_an_error(user: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(config_file=toml(tmp_path, "mtu = = 3\n"), env=user)


def test_unknown_toml_key_is_rejected(user: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'mtuu'"):
        load_config(config_file=toml(tmp_path, "mtuu = 1400\n"), env=user)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("mtu = 1279", "mtu"),
        ("mtu = 65536", "mtu"),
        ('mtu = "1400"', "mtu"),
        ("mtu = true", "mtu"),
        ('listen = "localhost:7443"', "listen"),
        ('listen = "::1:7443"', "listen"),
        ('listen = "10.0.0.1:0"', "listen"),
        ('listen = "10.0.0.1:65536"', "listen"),
        ('listen = "10.0.0.1"', "listen"),
        ("listen = 7443", "listen"),
        ('peers = "10.0.0.1:1"', "peers"),
        ('peers = ["10.0.0.1:1#abcd"]', "peers[0]"),
        (f'peers = ["10.0.0.1:1", "10.0.0.1:2#{"zz" * 32}"]', "peers[1]"),
        ('peers = ["10.0.0.1:1", "10.0.0.1:1"]', "peers[1]"),
        ('peers = ["bad_host!:1"]', "peers[0]"),
        ('peers = ["[not-v6]:1"]', "peers[0]"),
        ('tun = "much-too-long-name"', "tun"),
        ('tun = "a b"', "tun"),
        ('tun = "a/b"', "tun"),
        ('tun = ".."', "tun"),
        ('tun = ""', "tun"),
        ("tun = 3", "tun"),
        ('log_level = "verbose"', "log_level"),
        ('log_json = "yes"', "log_json"),
        ('data_dir = ""', "data_dir"),
        (f'admin_socket = "/{"s" * 120}"', "admin_socket"),
    ],
)
def test_each_bad_toml_value_names_its_key(user: dict[str, str], tmp_path: Path, line: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(config_file=toml(tmp_path, line + "\n"), env=user)
    assert str(info.value).startswith(f"{key} (in {tmp_path / 'node.toml'})")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AXIOMNET_MTU", "abc"),
        ("AXIOMNET_MTU", "1279"),
        ("AXIOMNET_LISTEN", "example.org:7443"),
        ("AXIOMNET_LISTEN", "[::1]:99999"),
        ("AXIOMNET_PEERS", "10.0.0.1:1,10.0.0.2"),
        ("AXIOMNET_PEERS", f"10.0.0.1:1#{KEY_A}00"),
        ("AXIOMNET_TUN", "x" * 16),
        ("AXIOMNET_NO_TUN", "perhaps"),
        ("AXIOMNET_LOG_LEVEL", "WARN"),
        ("AXIOMNET_LOG_JSON", "2"),
        ("AXIOMNET_DATA_DIR", ""),
        ("AXIOMNET_ADMIN_SOCKET", "/" + "s" * 200),
    ],
)
def test_each_bad_env_value_names_its_variable(user: dict[str, str], name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env=dict(user, **{name: value}))
    assert str(info.value).startswith(name)


def test_tun_and_no_tun_together_are_rejected(user: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="AXIOMNET_TUN"):
        load_config(env=dict(user, AXIOMNET_TUN="axn1", AXIOMNET_NO_TUN="1"))
    with pytest.raises(ConfigError, match="--no-tun"):
        load_config(env=user, overrides={"tun": "axn1", "no_tun": True})


@pytest.mark.parametrize(("key", "value"), [("mtu", "12"), ("listen", "nope"), ("log_level", "loud"),
                                            ("peers", ["x"]), ("tun", "a:b"), ("listen_port", 0)])
def test_bad_override_names_the_flag(user: dict[str, str], key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env=user, overrides={key: value})
    assert str(info.value).startswith("--" + key.replace("_", "-"))


def test_unknown_override_is_rejected(user: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="unknown override 'colour'"):
        load_config(env=user, overrides={"colour": "blue"})


# --- peers ------------------------------------------------------------------------------------------------
@given(
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.integers(1, 65535),
    st.one_of(st.none(), st.binary(min_size=32, max_size=32)),
)
def test_peer_spec_round_trips_through_text(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, key: bytes | None
) -> None:
    spec = PeerSpec(str(address), port, key)
    assert PeerSpec.parse(str(spec)) == spec


@pytest.mark.parametrize("tun", ["eth0", "a", "x" * 15, "axn%d", "tun-1.2_b"])
def test_valid_tun_names(user: dict[str, str], tun: str) -> None:
    assert load_config(env=user, overrides={"tun": tun}).tun_name == tun


# --- the front door: allowed_keys, discoverable ----------------------------------------------------------
def test_allowed_keys_and_discoverable_default_to_open(user: dict[str, str]) -> None:
    config = load_config(env=user)
    assert config.allowed_keys is None and config.discoverable is True


def test_allowed_keys_and_discoverable_from_each_layer(user: dict[str, str], tmp_path: Path) -> None:
    path = toml(tmp_path, f'allowed_keys = ["{KEY_A}", "{KEY_A.upper()}"]\ndiscoverable = false\n')
    config = load_config(config_file=path, env=user)
    assert config.allowed_keys == frozenset({bytes.fromhex(KEY_A)}) and config.discoverable is False
    assert load_config(config_file=toml(tmp_path, "allowed_keys = []\n", "empty.toml"), env=user).allowed_keys \
        == frozenset()  # an empty list: only pinned static peers may connect
    env = dict(user, AXIOMNET_ALLOWED_KEYS=f" {KEY_A} , {KEY_B} ", AXIOMNET_DISCOVERABLE="no")
    config = load_config(env=env)
    assert config.allowed_keys == frozenset({bytes.fromhex(KEY_A), bytes.fromhex(KEY_B)})
    assert config.discoverable is False
    assert load_config(env=dict(user, AXIOMNET_ALLOWED_KEYS="")).allowed_keys is None  # empty: not set
    config = load_config(config_file=path, env=env, overrides={"allowed_keys": [KEY_B], "discoverable": True})
    assert config.allowed_keys == frozenset({bytes.fromhex(KEY_B)}) and config.discoverable is True


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("toml-str", "allowed_keys (in"),
        ("toml-bad-key", "allowed_keys[1] (in"),
        ("env-bad-key", "AXIOMNET_ALLOWED_KEYS[0]"),
        ("flag-bad-key", "--allowed-keys[0]"),
        ("toml-discoverable", "discoverable (in"),
        ("env-discoverable", "AXIOMNET_DISCOVERABLE"),
    ],
)
def test_bad_front_door_settings_name_their_key(user: dict[str, str], tmp_path: Path, source: str,
                                                named: str) -> None:
    kwargs: dict[str, object] = {"env": user}
    if source == "toml-str":
        kwargs["config_file"] = toml(tmp_path, f'allowed_keys = "{KEY_A}"\n')
    elif source == "toml-bad-key":
        kwargs["config_file"] = toml(tmp_path, f'allowed_keys = ["{KEY_A}", "abc"]\n')
    elif source == "env-bad-key":
        kwargs["env"] = dict(user, AXIOMNET_ALLOWED_KEYS="xyz")
    elif source == "flag-bad-key":
        kwargs["overrides"] = {"allowed_keys": ["12"]}
    elif source == "toml-discoverable":
        kwargs["config_file"] = toml(tmp_path, 'discoverable = "maybe"\n')
    else:
        kwargs["env"] = dict(user, AXIOMNET_DISCOVERABLE="maybe")
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("(", r"\(")):
        load_config(**kwargs)  # type: ignore[arg-type]


# --- routing v2: trusted_roots (a private network's roots) ---------------------------------------------------
def test_trusted_roots_from_each_layer_and_through_config_check(user: dict[str, str], tmp_path: Path) -> None:
    from axiomnet.ops.genconf import effective_config_text

    assert load_config(env=user).trusted_roots is None  # open network by default
    path = toml(tmp_path, f'trusted_roots = ["{KEY_A}", "{KEY_A.upper()}"]\n')
    config = load_config(config_file=path, env=user)
    assert config.trusted_roots == frozenset({bytes.fromhex(KEY_A)})
    env = dict(user, AXIOMNET_TRUSTED_ROOTS=f"{KEY_A},{KEY_B}")
    assert load_config(config_file=path, env=env).trusted_roots == frozenset({bytes.fromhex(KEY_A),
                                                                              bytes.fromhex(KEY_B)})
    assert load_config(env=dict(user, AXIOMNET_TRUSTED_ROOTS="")).trusted_roots is None  # empty: not set
    config = load_config(config_file=path, env=env, overrides={"trusted_roots": [KEY_B]})
    assert config.trusted_roots == frozenset({bytes.fromhex(KEY_B)})
    again = load_config(config_file=toml(tmp_path, effective_config_text(config), "again.toml"), env=user)
    assert again.trusted_roots == config.trusted_roots


@pytest.mark.parametrize(("text", "named"), [(f'trusted_roots = "{"a" * 64}"\n', "trusted_roots (in"),
                                            ('trusted_roots = ["abc"]\n', "trusted_roots[0] (in"),
                                            ("trusted_roots = []\n", "trusted_roots (in")])
def test_bad_trusted_roots_name_their_key(user: dict[str, str], tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("(", r"\(")):
        load_config(config_file=toml(tmp_path, text), env=user)


def test_max_sessions_from_toml_and_env_within_its_bounds(user: dict[str, str], tmp_path: Path) -> None:
    from axiomnet.constants import MAX_SESSIONS

    assert load_config(env=user).max_sessions == MAX_SESSIONS
    assert load_config(config_file=toml(tmp_path, "max_sessions = 10000\n"), env=user).max_sessions == 10000
    assert load_config(env=dict(user, AXIOMNET_MAX_SESSIONS="12000")).max_sessions == 12000
    for bad in ("max_sessions = 0\n", "max_sessions = 70000\n", 'max_sessions = "many"\n'):
        with pytest.raises(ConfigError, match="max_sessions"):
            load_config(config_file=toml(tmp_path, bad), env=user)
