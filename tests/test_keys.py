"""Known-answer tests: keys, links, discovery keys and signatures."""

import hashlib

import pytest

from dattui.engine import keys
from dattui.engine.errors import BadLink

SEED = bytes(range(32))
# RFC 8032 test vector 1 (seed 9d61…, empty message)
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUB = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
RFC_SIG = ("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46b"
           "d25bf5f0595bbe24655141438e7a100b")


def test_ed25519_known_answer():
    k = keys.ShareKey.from_seed(RFC_SEED)
    assert k.public.hex() == RFC_PUB
    assert k.sign(b"").hex() == RFC_SIG
    assert k.verify(b"", bytes.fromhex(RFC_SIG))
    assert not k.verify(b"x", bytes.fromhex(RFC_SIG))


def test_link_format_and_parse():
    k = keys.ShareKey.from_seed(RFC_SEED)
    assert k.link == "dat://" + RFC_PUB
    for text in (k.link, RFC_PUB, RFC_PUB.upper(), k.link + "/", "  " + k.link + "\n"):
        assert keys.parse_link(text) == k.public


@pytest.mark.parametrize("bad", ["", "dat://", "dat://abc", "dat://" + "g" * 64,
                                 "dat://" + "a" * 63, "dat://" + "a" * 65, "http://" + "a" * 64])
def test_malformed_links_are_refused_with_a_hint(bad):
    with pytest.raises(BadLink) as e:
        keys.parse_link(bad)
    assert "64 hex" in str(e.value) and e.value.exit_code != 0


def test_discovery_key_known_answer_and_does_not_reveal_link():
    k = keys.ShareKey.from_seed(RFC_SEED)
    dk = k.discovery_key
    assert dk == hashlib.blake2b(b"hypercore", digest_size=32, key=k.public).digest()
    assert dk.hex() == keys.discovery_key(bytes.fromhex(RFC_PUB)).hex()
    assert dk.hex() == "49821999608bcca01933379064839b2dda6b34a5f8ac73b3aef17a3d32ef04c8"
    assert k.public.hex() not in dk.hex()


def test_repr_never_shows_secret():
    k = keys.ShareKey.from_seed(SEED)
    assert SEED.hex() not in repr(k) and SEED.hex()[:8] not in repr(k)


def test_clone_key_cannot_sign():
    k = keys.ShareKey(public=keys.ShareKey.from_seed(SEED).public)
    with pytest.raises(PermissionError):
        k.sign(b"m")
