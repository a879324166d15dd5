"""KRPC messages of the Mainline DHT (BEP 5): parsing, building, compact
node and peer info (IPv4), and the address rules applied to what other
nodes tell us.

`parse` turns one datagram into a `Query`, `Response` or `Error`, or raises
`KrpcError` (which covers `BencodeError`) for anything that is not a
well-formed KRPC message. It checks the envelope and the sender id only;
method arguments are checked by whoever handles the method.
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass

from .bencode import BencodeError, decode, encode

__all__ = [
    "Address", "KrpcError", "Query", "Response", "Error", "parse",
    "query", "response", "error", "pack_nodes", "unpack_nodes", "pack_peer",
    "unpack_peer", "pack_address", "ip_scope", "may_learn", "info_hash_for",
    "ID_LEN", "NODE_LEN", "PEER_LEN", "VERSION",
    "ERR_GENERIC", "ERR_SERVER", "ERR_PROTOCOL", "ERR_METHOD",
]

Address = tuple[str, int]

ID_LEN = 20
NODE_LEN = 26     # compact node info: id, IPv4, port
PEER_LEN = 6      # compact peer info: IPv4, port
MAX_TID = 32      # longest transaction id we echo
VERSION = b"DT\x00\x01"  # client version ('v'): "DT" + 2-byte version

ERR_GENERIC, ERR_SERVER, ERR_PROTOCOL, ERR_METHOD = 201, 202, 203, 204

# Scopes of IPv4 addresses, narrowest first (see `may_learn`).
LOOPBACK, PRIVATE, GLOBAL = 0, 1, 2


def info_hash_for(discovery_key: bytes) -> bytes:
    """The DHT info-hash under which a share with `discovery_key` is announced:
    the first 20 bytes of BLAKE2b-256(b"dattui-dht-v1" + discovery_key).
    Derived from the discovery key (never from the link), so the DHT learns
    nothing that opens the share."""
    if not isinstance(discovery_key, (bytes, bytearray, memoryview)) or len(discovery_key) != 32:
        raise ValueError("a discovery key is 32 bytes")
    return hashlib.blake2b(b"dattui-dht-v1" + bytes(discovery_key), digest_size=32).digest()[:ID_LEN]


class KrpcError(Exception):
    """Not a well-formed KRPC message; `code` is the KRPC error to answer with."""

    def __init__(self, message: str, code: int = ERR_PROTOCOL) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Query:
    tid: bytes
    method: bytes
    args: dict
    sender_id: bytes
    read_only: bool


@dataclass(frozen=True, slots=True)
class Response:
    tid: bytes
    values: dict
    sender_id: bytes
    ip: Address | None      # BEP 42: how the responder saw our address


@dataclass(frozen=True, slots=True)
class Error:
    tid: bytes
    code: int
    message: bytes


def parse(data: bytes) -> Query | Response | Error:
    try:
        msg = decode(data)
    except BencodeError as exc:
        raise KrpcError(f"not bencode: {exc}") from None
    if not isinstance(msg, dict):
        raise KrpcError("not a dictionary")
    tid = msg.get(b"t")
    kind = msg.get(b"y")
    if not isinstance(tid, bytes) or not 0 < len(tid) <= MAX_TID:
        raise KrpcError("bad transaction id")
    if kind == b"q":
        method, args = msg.get(b"q"), msg.get(b"a")
        if not isinstance(method, bytes) or not isinstance(args, dict):
            raise KrpcError("bad query")
        sender = args.get(b"id")
        if not isinstance(sender, bytes) or len(sender) != ID_LEN:
            raise KrpcError("bad node id")
        return Query(tid, method, args, sender, msg.get(b"ro") == 1)
    if kind == b"r":
        values = msg.get(b"r")
        if not isinstance(values, dict):
            raise KrpcError("bad response")
        sender = values.get(b"id")
        if not isinstance(sender, bytes) or len(sender) != ID_LEN:
            raise KrpcError("bad node id")
        ip = msg.get(b"ip")
        seen = unpack_peer(ip) if isinstance(ip, bytes) and len(ip) == PEER_LEN else None
        return Response(tid, values, sender, seen)
    if kind == b"e":
        err = msg.get(b"e")
        code, text = 0, b""
        if isinstance(err, list) and err:
            if isinstance(err[0], int):
                code = err[0]
            if len(err) > 1 and isinstance(err[1], bytes):
                text = err[1][:200]
        return Error(tid, code, text)
    raise KrpcError("unknown message type")


def query(tid: bytes, method: bytes, args: dict, *, read_only: bool = False) -> bytes:
    msg = {b"t": tid, b"y": b"q", b"q": method, b"a": args, b"v": VERSION}
    if read_only:
        msg[b"ro"] = 1
    return encode(msg)


def response(tid: bytes, values: dict, *, ip: Address | None = None) -> bytes:
    msg = {b"t": tid, b"y": b"r", b"r": values, b"v": VERSION}
    if ip is not None:
        packed = pack_peer(ip)
        if packed is not None:
            msg[b"ip"] = packed
    return encode(msg)


def error(tid: bytes, code: int, message: bytes) -> bytes:
    return encode({b"t": tid, b"y": b"e", b"e": [code, message], b"v": VERSION})


# ---- compact formats ----------------------------------------------------------

def pack_address(ip: str) -> bytes | None:
    """The 4 bytes of a dotted-quad IPv4 address (also '::ffff:a.b.c.d'), or None."""
    if ip.startswith("::ffff:"):
        ip = ip[7:]
    if ip.count(".") != 3:
        return None
    try:
        return socket.inet_pton(socket.AF_INET, ip)
    except (OSError, ValueError):
        return None


def pack_peer(addr: Address) -> bytes | None:
    ip = pack_address(addr[0])
    port = addr[1]
    if ip is None or not isinstance(port, int) or not 0 <= port <= 65535:
        return None
    return ip + port.to_bytes(2, "big")


def unpack_peer(data: bytes) -> Address:
    return socket.inet_ntoa(data[:4]), int.from_bytes(data[4:6], "big")


def pack_nodes(nodes) -> bytes:
    """Compact node info for an iterable of (node_id, (ip, port))."""
    out = []
    for node_id, addr in nodes:
        peer = pack_peer(addr)
        if peer is not None and len(node_id) == ID_LEN:
            out.append(node_id + peer)
    return b"".join(out)


def unpack_nodes(data: object, limit: int) -> list[tuple[bytes, Address]]:
    """At most `limit` (node_id, (ip, port)) from compact node info; entries
    with port 0 are skipped. Anything that is not bytes of a multiple of 26
    gives []."""
    if not isinstance(data, bytes) or len(data) % NODE_LEN:
        return []
    out = []
    for i in range(0, min(len(data), limit * NODE_LEN), NODE_LEN):
        ip, port = unpack_peer(data[i + ID_LEN:i + NODE_LEN])
        if port:
            out.append((data[i:i + ID_LEN], (ip, port)))
    return out


# ---- which addresses we accept from whom ------------------------------------------

def ip_scope(ip: bytes) -> int | None:
    """LOOPBACK, PRIVATE or GLOBAL for 4 address bytes; None for addresses
    nobody should be sent to (0/8, multicast, reserved, broadcast)."""
    a, b = ip[0], ip[1]
    if a == 0 or a >= 224:
        return None
    if a == 127:
        return LOOPBACK
    if (a == 10 or (a == 172 and 16 <= b < 32) or (a == 192 and b == 168)
            or (a == 100 and 64 <= b < 128) or (a == 169 and b == 254)
            or (a == 198 and b in (18, 19)) or (a == 192 and b == 0 and ip[2] == 2)
            or (a == 198 and b == 51 and ip[2] == 100) or (a == 203 and b == 0 and ip[2] == 113)):
        return PRIVATE
    return GLOBAL


def may_learn(addr: Address, source_ip: str) -> bool:
    """May a node at `source_ip` make us send to `addr`? Only to an address
    at least as wide in scope as its own: a public node can never point us at
    127.0.0.1 or into a private network; a node on loopback (a test, a local
    router) may point anywhere. Port 0 and unusable addresses never."""
    if not 0 < addr[1] <= 65535:
        return False
    target, source = pack_address(addr[0]), pack_address(source_ip)
    if target is None or source is None:
        return False
    t, s = ip_scope(target), ip_scope(source)
    return t is not None and s is not None and t >= s
