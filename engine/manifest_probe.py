"""Fetch a link's signed manifest and nothing else: `dattui ls LINK`.

A swarm of its own that asks each peer for the manifest (GET_MANIFEST of
version 0), puts the parts together within the manifest size limit, checks
the signature against the link and the manifest's paths, and resolves
`result` with the first manifest that passes. No block is requested and
nothing is written to disk.
"""

from __future__ import annotations

from pathlib import Path

from . import manifest as mf
from . import wire
from .errors import ProtocolError, UnsafeManifest
from .events import Role, State, TransferStatus
from .peer import ERR_PROTOCOL, PeerConnection
from .swarmbase import SwarmBase


class ManifestProbe(SwarmBase):
    role = Role.CLONE

    def __init__(self, public_key: bytes, emit) -> None:
        super().__init__(public_key, Path("."), emit)
        self.result = self.loop.create_future()  # -> manifest.Manifest
        self._parts: dict[PeerConnection, tuple[int, int, bytearray]] = {}

    def attach(self, peer: PeerConnection) -> None:
        super().attach(peer)
        self.state = State.TRANSFERRING
        peer.send(wire.GetManifest(0))

    def detach(self, peer: PeerConnection, reason: str) -> None:
        super().detach(peer, reason)
        self._parts.pop(peer, None)

    def on_writable(self, peer: PeerConnection) -> None:
        pass

    def on_frame(self, peer: PeerConnection, frame) -> None:
        if isinstance(frame, wire.ManifestPart):
            self._part(peer, frame)
        elif isinstance(frame, wire.ManifestSignature):
            self._signature(peer, frame)
        else:
            self.common_frame(peer, frame)

    def _part(self, peer: PeerConnection, f: wire.ManifestPart) -> None:
        parts = self._parts.get(peer)
        if f.offset == 0:
            if f.total > mf.MAX_MANIFEST_BYTES:
                raise ProtocolError("manifest too large")
            parts = self._parts[peer] = (f.version, f.total, bytearray())
        if parts is None or parts[0] != f.version or parts[1] != f.total or len(parts[2]) != f.offset:
            raise ProtocolError("manifest parts out of order")
        parts[2].extend(f.chunk)
        if len(parts[2]) > f.total:
            raise ProtocolError("manifest longer than announced")

    def _signature(self, peer: PeerConnection, f: wire.ManifestSignature) -> None:
        parts = self._parts.pop(peer, None)
        if parts is None or parts[0] != f.version or len(parts[2]) != parts[1]:
            raise ProtocolError("incomplete manifest")
        encoded = bytes(parts[2])
        if not mf.verify(self.public_key, encoded, f.signature):
            peer.close(ERR_PROTOCOL, "manifest signature does not verify")
            return
        try:
            m = mf.decode(encoded)
        except (ProtocolError, UnsafeManifest) as exc:
            if not self.result.done():
                self.result.set_exception(UnsafeManifest(f"the share's manifest is unsafe: {exc}"))
            return
        if not self.result.done():
            self.result.set_result(m)

    def status(self) -> TransferStatus:
        return self._status(state=self.state)
