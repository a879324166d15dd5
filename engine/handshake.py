"""Proof that a peer knows the share's public key, bound to this connection.

The QUIC client (initiator) sends HELLO and AUTH as soon as TLS completes:
    client_mac = BLAKE2b-256(key=share_public_key,
                             "dattui-client" | dk | nonce_c | node_c | server_cert_key)
    client_sig = ed25519 by node_c over the same message
`server_cert_key` is the ed25519 key of the certificate the server presented
in *this* TLS handshake, so a proof relayed by a man in the middle (who must
present its own certificate) does not verify at the real server. The server
answers only after the client's proof checks out, with
    server_mac = BLAKE2b-256(key=share_public_key,
                             "dattui-server" | dk | nonce_c | nonce_s | node_c | node_s)
and the client checks that node_s is the key of the certificate it saw.
A peer that cannot prove gets nothing but a closed connection.
"""

from __future__ import annotations

import hashlib
import hmac

from . import keys


def _mac(share_public: bytes, message: bytes) -> bytes:
    return hashlib.blake2b(message, digest_size=32, key=share_public).digest()


def client_message(dk: bytes, nonce_c: bytes, node_c: bytes, server_cert_key: bytes) -> bytes:
    return b"dattui-client" + dk + nonce_c + node_c + server_cert_key


def server_message(dk: bytes, nonce_c: bytes, nonce_s: bytes, node_c: bytes, node_s: bytes) -> bytes:
    return b"dattui-server" + dk + nonce_c + nonce_s + node_c + node_s


def prove(share_public: bytes, message: bytes, sign) -> tuple[bytes, bytes]:
    """(mac, signature): `sign` is the sender's node-key signing function."""
    return _mac(share_public, message), sign(message)


def check(share_public: bytes, message: bytes, mac: bytes, signature: bytes, node_key: bytes) -> bool:
    if not hmac.compare_digest(_mac(share_public, message), mac):
        return False
    return keys.verify(node_key, message, signature)
