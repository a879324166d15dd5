"""Seeded generators of hostile inputs: frame streams, manifests, path lists.
Used by tests/test_fuzz.py (brief) and scripts/fuzz.py (long, atheris)."""

from __future__ import annotations

import random

from dattui.engine import manifest as mf
from dattui.engine import wire

NASTY = ["..", ".", "", ".dat", "\x00", "\n", "\x1b[2J", "\x7f", "\x85", "\u202e", "\\",
         "CON", "a" * 255, "a" * 256, "é", "e\u0301", "É", "/", "//", " ", "\ufeff", "\U0001F600"]


def frames(rng: random.Random) -> list:
    """Valid frames of every kind, with random field values."""
    v, f, b = rng.randrange(3), rng.randrange(5), rng.randrange(5)
    return [
        wire.Hello(1, rng.randbytes(32), rng.randbytes(32), rng.randbytes(32)),
        wire.Auth(rng.randbytes(32), rng.randbytes(64)),
        wire.GetManifest(v),
        wire.ManifestPart(v, rng.randrange(1 << 20), rng.randrange(1 << 20), rng.randbytes(rng.randrange(64))),
        wire.ManifestSignature(v, rng.randbytes(64)),
        wire.Request(v, f, b), wire.Cancel(v, f, b), wire.NoData(v, f, b),
        wire.Data(v, f, b, tuple(rng.randbytes(32) for _ in range(rng.randrange(3))), rng.randbytes(rng.randrange(100))),
        wire.NewVersion(v), wire.Ping(rng.randrange(1 << 30)), wire.Close(rng.randrange(1 << 16), "x"),
        wire.Have(v, f), wire.HaveAll(v),
        wire.HaveBlocks(v, f, ((rng.randrange(9), rng.randrange(1, 9)),)),
    ]


def mutate(rng: random.Random, data: bytes, n: int = 4) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, n + 1)):
        op = rng.randrange(4)
        if op == 0 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 1 and buf:
            del buf[rng.randrange(len(buf)):][:rng.randrange(1, 8)]
        elif op == 2:
            i = rng.randrange(len(buf) + 1)
            buf[i:i] = rng.randbytes(rng.randrange(1, 8))
        elif buf:  # a length field blown up
            i = rng.randrange(len(buf))
            buf[i:i + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"])
    return bytes(buf)


def frame_stream(rng: random.Random) -> bytes:
    fs = frames(rng)
    raw = b"".join(wire.encode(rng.choice(fs)) for _ in range(rng.randrange(1, 6)))
    return mutate(rng, raw) if rng.random() < 0.9 else raw


def hostile_paths(rng: random.Random, count: int = 6, nasty: float = 0.15) -> list[str]:
    """Paths a hostile share might list: mostly harmless, some nasty."""
    out = []
    for _ in range(count):
        depth = rng.choice([1, 1, 2, 3, rng.randrange(1, 20), rng.randrange(1, 400)])
        parts = []
        for _ in range(depth):
            if rng.random() < nasty:
                parts.append(rng.choice(NASTY))
            else:
                parts.append("".join(rng.choice("abcXYZ_-.09") for _ in range(rng.randrange(1, 12))))
        out.append("/".join(parts))
    return out


def manifest_bytes(rng: random.Random) -> bytes:
    entries = []
    for p in hostile_paths(rng):
        kind = rng.choice([mf.Kind.FILE, mf.Kind.DIR])
        entries.append(mf.Entry(kind, p, 0o644, 0, 0 if kind == mf.Kind.DIR else rng.randrange(10),
                                rng.randbytes(32) if kind == mf.Kind.FILE else b""))
    raw = mf.Manifest(rng.randrange(1, 9), 262144, "n", tuple(entries)).encode()
    return mutate(rng, raw) if rng.random() < 0.5 else raw
