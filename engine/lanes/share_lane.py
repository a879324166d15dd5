"""A share's lane process: serves, on its own UDP port, the version its share
tells it (as ManifestPart/ManifestSignature frames over the pipe), to any peer
that proves it knows the link, exactly as the share would. It reads the files
and their leaf hashes (the share's state database, read-only) itself."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import wire
from ..events import State
from ..share import ShareServer
from ..store import ShareDB
from . import pipe
from .worker import lane_node, report


class LaneShare(ShareServer):
    def __init__(self, public_key: bytes, folder: Path, db: ShareDB) -> None:
        super().__init__(public_key, folder, db, lambda e: None)
        self.state = State.SEEDING
        self._parts = pipe.ManifestParts()

    def told(self, msg) -> None:
        """A message from the share: the parts of a version, then its signature."""
        got = self._parts.feed(msg)
        if got is not None:
            version, encoded, signature = got
            newer = self.published is not None and version != self.version
            self._set_stored(self._published_from_db(encoded))  # read from the database when sent
            if newer:
                for peer in self.peers:
                    peer.send(wire.NewVersion(self.version))

    def stats(self) -> dict:
        return {"bytes_sent": self.server.bytes_sent, "blocks_sent": self.server.blocks_sent,
                "peers": [dataclasses.asdict(p) for p in self.peer_statuses()]}


async def run(config: dict, end, inbox) -> None:
    folder = Path(config["folder"])
    swarm = LaneShare(bytes.fromhex(config["public_key"]), folder, ShareDB(folder, create=False))
    inbox.take(swarm.told)
    node = lane_node(config, config.get("host", "0.0.0.0"))
    await node.start()
    try:
        node.add_swarm(swarm)
        end.send(pipe.LaneListening(node.port))
        await report(end, swarm.stats, inbox.gone)
    finally:
        await swarm.close()
        await node.close()
