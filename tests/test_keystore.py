import os
import stat

import pytest

from dattui.engine import keystore
from dattui.engine.errors import UsageError
from dattui.engine.keys import ShareKey


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_save_mode_0600_and_location(tmp_path):
    key = ShareKey.generate()
    path = keystore.save(key, tmp_path)
    assert path == tmp_path / "keys" / (key.discovery_key.hex() + ".key")
    assert _mode(path) == 0o600
    assert path.read_text() == f"dattui-secret-key 1\n{key.secret.hex()}\n"
    # the file name does not reveal the link
    assert key.public.hex() not in path.name


def test_round_trip(tmp_path):
    key = ShareKey.generate()
    keystore.save(key, tmp_path)
    loaded = keystore.load(key.public, tmp_path)
    assert loaded == key and loaded.writable
    assert keystore.load(ShareKey.generate().public, tmp_path) is None
    assert keystore.import_text(keystore.export_text(key)) == key


def test_list_keys(tmp_path):
    assert keystore.list_keys(tmp_path) == []
    keys = [ShareKey.generate() for _ in range(3)]
    for k in keys:
        keystore.save(k, tmp_path)
    listed = keystore.list_keys(tmp_path)
    assert sorted(k.public for k in listed) == sorted(k.public for k in keys)


def test_import_file_saves(tmp_path):
    key = ShareKey.generate()
    exported = tmp_path / "backup.key"
    exported.write_text(keystore.export_text(key))
    os.chmod(exported, 0o644)  # an export may come with any mode
    state = tmp_path / "state"
    assert keystore.import_file(exported, state) == key
    assert keystore.load(key.public, state) == key
    assert _mode(keystore.key_path(key.public, state)) == 0o600


def test_import_tolerates_crlf_and_uppercase():
    key = ShareKey.generate()
    text = f"dattui-secret-key 1\r\n{key.secret.hex().upper()}\r\n\r\n"
    assert keystore.import_text(text) == key


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "first line"),
        ("hello\n" + "00" * 32 + "\n", "first line"),
        ("00" * 32 + "\n", "first line"),
        ("dattui-secret-key 2\n" + "00" * 32 + "\n", "version"),
        ("dattui-secret-key\n" + "00" * 32 + "\n", "first line"),
        ("dattui-secret-key 1\n", "64 hex"),
        ("dattui-secret-key 1\n" + "zz" * 32 + "\n", "64 hex"),
        ("dattui-secret-key 1\n" + "ab" * 31 + "\n", "64 hex"),
        ("dattui-secret-key 1\n" + "ab" * 32 + "\nextra\n", "64 hex"),
    ],
)
def test_malformed_import(text, words):
    with pytest.raises(UsageError) as e:
        keystore.import_text(text, source="mykey.key")
    msg = str(e.value)
    assert "\n" not in msg
    assert "mykey.key" in msg
    assert words in msg
    assert "ab" * 31 not in msg  # no (partial) secret echoed


def test_import_file_malformed_names_file(tmp_path):
    p = tmp_path / "junk.key"
    p.write_bytes(b"\xff\xfe binary")
    with pytest.raises(UsageError, match="junk.key"):
        keystore.import_file(p, tmp_path / "state")
    with pytest.raises(UsageError, match="missing.key"):
        keystore.import_file(tmp_path / "missing.key", tmp_path / "state")


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_wider_permissions_refused(tmp_path, mode):
    key = ShareKey.generate()
    path = keystore.save(key, tmp_path)
    os.chmod(path, mode)
    with pytest.raises(UsageError) as e:
        keystore.load(key.public, tmp_path)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"chmod 600 {path}" in msg
    with pytest.raises(UsageError, match="chmod 600"):
        keystore.list_keys(tmp_path)
    os.chmod(path, 0o600)
    assert keystore.load(key.public, tmp_path) == key


def test_file_for_other_share_refused(tmp_path):
    a, b = ShareKey.generate(), ShareKey.generate()
    path_b = keystore.save(b, tmp_path)
    os.replace(path_b, keystore.key_path(a.public, tmp_path))
    with pytest.raises(UsageError, match="different share"):
        keystore.load(a.public, tmp_path)
    with pytest.raises(UsageError, match="does not match"):
        keystore.list_keys(tmp_path)


def test_secret_never_in_repr_or_errors(tmp_path):
    key = ShareKey.generate()
    secret_hex = key.secret.hex()
    assert secret_hex not in repr(key)
    assert secret_hex[:16] not in repr(key)
    assert secret_hex not in str(key)
    path = keystore.save(key, tmp_path)
    os.chmod(path, 0o644)
    with pytest.raises(UsageError) as e:
        keystore.load(key.public, tmp_path)
    assert secret_hex not in str(e.value)


def test_export_needs_secret():
    ro = ShareKey(public=ShareKey.generate().public)
    with pytest.raises(ValueError):
        keystore.export_text(ro)
    with pytest.raises(ValueError):
        keystore.save(ro, "/nonexistent-never-written")
