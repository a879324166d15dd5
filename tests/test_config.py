import dataclasses
import os
import tomllib
from pathlib import Path

import pytest

from dattui import config
from dattui.engine.errors import UsageError


def test_default_toml_parses_and_every_key_is_commented():
    text = config.default_text()
    data = tomllib.loads(text)
    assert data["node"]["port"] == 3282
    assert data["discovery"]["dht_bootstrap"] == [
        "router.bittorrent.com:6881",
        "dht.transmissionbt.com:6881",
        "router.utorrent.com:6881",
    ]
    # every `key = value` line is preceded by a comment line
    lines = text.splitlines()
    for i, line in enumerate(lines):
        s = line.strip()
        if "=" in s and not s.startswith("#") and not s.startswith('"'):
            assert lines[i - 1].strip().startswith("#"), f"uncommented key: {s}"


def test_defaults_load(tmp_path):
    env = {"DATTUI_HOME": str(tmp_path)}
    cfg = config.load(environ=env)  # no config.toml there
    assert cfg.source is None
    assert cfg.node.port == 3282
    assert cfg.node.bind == "0.0.0.0"
    assert cfg.discovery.lan is True
    assert cfg.discovery.rendezvous == ()
    assert cfg.discovery.dht is True
    assert len(cfg.discovery.dht_bootstrap) == 3
    assert cfg.transfer.block_size == 262144
    assert cfg.transfer.max_inflight_bytes == 16777216
    assert cfg.transfer.max_inflight_requests == 256
    assert cfg.transfer.upload is True
    assert cfg.clone.find_timeout == 60
    assert cfg.share.include_hidden is False
    assert cfg.tui.refresh_hz == 10
    assert cfg.keys["quit"] == "q"
    assert cfg.keys["help"] == "question_mark"
    for binding in ("add_share", "clone", "pause", "remove", "copy_link", "connectivity", "log"):
        assert binding in cfg.keys
    assert cfg.get("transfer.block_size") == 262144
    assert cfg.get("keys.remove") == "delete"
    assert cfg.get("node") == cfg.node
    assert cfg.get("node.nope", None) is None
    with pytest.raises(KeyError):
        cfg.get("node.nope")
    assert cfg == config.defaults()


def test_config_is_read_only():
    cfg = config.defaults()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.node.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.keys["quit"] = "x"  # type: ignore[index]


def test_override_merges_key_by_key(tmp_path):
    (tmp_path / "config.toml").write_text(
        "[node]\nport = 4000\n\n[discovery]\nrendezvous = [\"rv.example.org:3283\"]\n"
        "\n[keys]\nquit = \"ctrl+q\"\n"
    )
    cfg = config.load(environ={"DATTUI_HOME": str(tmp_path)})
    assert cfg.source == tmp_path / "config.toml"
    assert cfg.node.port == 4000
    assert cfg.node.bind == "0.0.0.0"  # same section, not overridden
    assert cfg.discovery.rendezvous == ("rv.example.org:3283",)
    assert cfg.discovery.lan is True
    assert cfg.keys["quit"] == "ctrl+q"
    assert cfg.keys["help"] == "question_mark"
    assert cfg.transfer.block_size == 262144  # untouched section


def test_explicit_path(tmp_path):
    p = tmp_path / "other.toml"
    p.write_text("[clone]\nfind_timeout = 2.5\n")
    cfg = config.load(p)
    assert cfg.clone.find_timeout == 2.5
    with pytest.raises(UsageError, match="not found"):
        config.load(tmp_path / "missing.toml")


def test_bad_type_error_message(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text('[transfer]\nblock_size = "big"\n')
    with pytest.raises(UsageError) as e:
        config.load(p)
    msg = str(e.value)
    assert "\n" not in msg
    assert str(p) in msg
    assert "transfer.block_size" in msg
    assert "integer" in msg
    assert e.value.exit_code == 2


@pytest.mark.parametrize(
    "body, words",
    [
        ("[node]\nport = true\n", ["node.port", "integer"]),
        ("[node]\nport = 70000\n", ["node.port", "1 to 65535"]),
        ("[discovery]\nlan = 1\n", ["discovery.lan", "true or false"]),
        ('[discovery]\nrendezvous = "a:1"\n', ["discovery.rendezvous", "list"]),
        ('[discovery]\nrendezvous = ["nohost"]\n', ["discovery.rendezvous", "host:port"]),
        ("[tui]\nrefresh_hz = 0\n", ["tui.refresh_hz", "above 0"]),
        ("[keys]\nquit = 5\n", ["keys.quit", "key name"]),
        ("node = 3\n", ["node", "table"]),
    ],
)
def test_bad_values(tmp_path, body, words):
    p = tmp_path / "config.toml"
    p.write_text(body)
    with pytest.raises(UsageError) as e:
        config.load(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg
    for w in words:
        assert w in msg


def test_unknown_key_error(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text("[discovery]\nlann = false\n")
    with pytest.raises(UsageError) as e:
        config.load(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg
    assert "discovery.lann" in msg and "lan" in msg


def test_unknown_section_and_binding(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text("[nodes]\nport = 1\n")
    with pytest.raises(UsageError, match=r"unknown section \[nodes\]"):
        config.load(p)
    p.write_text('[keys]\nqiut = "q"\n')
    with pytest.raises(UsageError, match="keys.qiut"):
        config.load(p)


def test_invalid_toml(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text("[node\nport = 1\n")
    with pytest.raises(UsageError) as e:
        config.load(p)
    assert "not valid TOML" in str(e.value) and "\n" not in str(e.value)


def test_save_load_round_trip(tmp_path):
    p = tmp_path / "sub" / "config.toml"
    config.save({"node": {"port": 5000}, "discovery": {"dht_bootstrap": ("h:1",)}}, p)
    cfg = config.load(p)
    assert cfg.node.port == 5000
    assert cfg.discovery.dht_bootstrap == ("h:1",)
    assert [q.name for q in p.parent.iterdir()] == ["config.toml"]  # no temp left

    full = cfg.to_dict()
    config.save(full, p)
    assert config.load(p) == cfg
    assert tomllib.loads(p.read_text())["transfer"]["block_size"] == 262144


def test_save_rejects_invalid_and_keeps_old_file(tmp_path):
    p = tmp_path / "config.toml"
    config.save({"node": {"port": 5000}}, p)
    before = p.read_bytes()
    with pytest.raises(UsageError, match="node.port"):
        config.save({"node": {"port": "x"}}, p)
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["config.toml"]


def test_import_has_no_side_effects(tmp_path):
    # load() only touches the state dir it is given
    env = {"DATTUI_HOME": str(tmp_path / "home")}
    config.load(environ=env)
    assert not (Path(env["DATTUI_HOME"]) / "config.toml").exists()
