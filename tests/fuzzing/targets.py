"""Every decoder that reads bytes from the network (or a lane's pipe), as a
fuzz target: `TARGETS[name](data)` returns normally or raises one of the
errors that decoder is documented to raise; anything else is a bug.

Used by tests/test_fuzz_decoders.py (short runs in the suite, the saved
regression inputs under tests/fuzzing/corpus/) and scripts/fuzz.py (long runs)."""

from __future__ import annotations

from collections.abc import Callable

from dattui.engine import manifest, stun, wire
from dattui.engine.dht import bencode, krpc
from dattui.engine.errors import ProtocolError, UnsafeManifest
from dattui.engine.lanes import pipe
from dattui.engine.rendezvous import protocol as rdv

MAX_INPUT = 1 << 16


def _wire(data: bytes) -> None:
    dec = wire.FrameDecoder()
    try:  # fed whole and in two pieces: a frame split anywhere must decode the same
        whole = dec.feed(data)
    except ProtocolError:
        return
    dec2 = wire.FrameDecoder()
    cut = len(data) // 2
    try:
        parts = dec2.feed(data[:cut]) + dec2.feed(data[cut:])
    except ProtocolError:
        raise AssertionError("a split feed failed where the whole one did not") from None
    assert [type(f) for f in parts] == [type(f) for f in whole]


def _manifest(data: bytes) -> None:
    try:
        m = manifest.decode(data)
    except (ProtocolError, UnsafeManifest):
        return
    for e in m.entries:  # what decode accepts is safe to join under a folder
        manifest.check_path(e.path)
    assert manifest.decode(m.encode()) == m


def _stun(data: bytes) -> None:
    stun.is_stun(data)
    try:
        stun.parse(data)
    except stun.StunError:
        pass


def _krpc(data: bytes) -> None:
    try:
        krpc.parse(data)
    except (krpc.KrpcError, bencode.BencodeError):
        pass


def _rendezvous(data: bytes) -> None:
    rdv.is_rendezvous(data)
    try:
        rdv.decode(data)
    except rdv.RendezvousError:
        pass
    try:
        rdv.Deframer().feed(data)
    except rdv.RendezvousError:
        pass
    rdv.parse_relay_data(data)


def _lane_pipe(data: bytes) -> None:
    try:
        pipe.decoder().feed(data)
    except ProtocolError:
        pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "wire": _wire, "manifest": _manifest, "stun": _stun, "krpc": _krpc,
    "rendezvous": _rendezvous, "lane_pipe": _lane_pipe,
}


def seeds(name: str) -> list[bytes]:
    """Valid inputs to start from, so that fuzzing gets past the first checks."""
    from dattui.engine import keys
    if name in ("wire", "lane_pipe"):
        frames = [wire.Hello(1, b"\1" * 32, b"\2" * 16, b"\3" * 32), wire.GetManifest(3),
                  wire.ManifestPart(1, 10, 0, b"0123456789"), wire.ManifestSignature(1, b"\4" * 64),
                  wire.Request(1, 2, 3), wire.Data(1, 2, 0, (b"\5" * 32,), b"block"),
                  wire.Ping(7), wire.Close(0, "bye"), wire.HaveAll(1), wire.Bitfield.of(1, 10, [1, 3]),
                  wire.HaveBlocks(1, 2, ((0, 4),)), wire.Lanes((4000, 4001), False)]
        out = []
        for f in frames:
            try:
                out.append(wire.encode(f))
            except Exception:  # noqa: BLE001 - a seed we could not build is just left out
                pass
        return [*out, b"".join(out)]
    if name == "manifest":
        key = keys.ShareKey.from_seed(b"\7" * 32)
        m = manifest.Manifest(1, 262144, "demo", (
            manifest.Entry(manifest.Kind.DIR, "d", 0o755, 1),
            manifest.Entry(manifest.Kind.FILE, "d/a.csv", 0o644, 2, 5, b"\3" * 32)))
        return [manifest.sign(m, key)[0]]
    if name == "stun":
        return [stun.binding_request(b"\5" * 12), stun.binding_request(b"\5" * 12, change_ip=True)]
    if name == "krpc":
        return [krpc.query(b"aa", b"ping", {b"id": b"\1" * 20}),
                krpc.response(b"aa", {b"id": b"\1" * 20, b"nodes": b""})]
    if name == "rendezvous":
        return [rdv.frame(b"\1\2\3"), rdv.relay_data(b"\1" * 8, b"payload")]
    return [b""]

