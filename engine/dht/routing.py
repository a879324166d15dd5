"""The Kademlia routing table of BEP 5: k-buckets over the 160-bit id space.

Only nodes that answered one of our queries enter the table (a query from an
unknown node makes the node ping it first), so a spoofed source address
cannot plant entries. Per BEP 5:

* good: answered us within the last 15 minutes, or answered us once and sent
  us a query within the last 15 minutes;
* questionable: no activity for 15 minutes;
* bad: failed to answer twice in a row.

A full bucket is split only if it covers our own id (so at most 160 splits).
A new node for a full bucket replaces a bad node if there is one; otherwise
it waits in the bucket's replacement cache (at most k entries) and the least
recently seen questionable node is pinged: when that node fails twice, the
freshest replacement takes its place. Everything is bounded: at most 161
buckets of k nodes plus k replacements each.
"""

from __future__ import annotations

import bisect
import enum
import random
from collections.abc import Iterable

from .krpc import GLOBAL, ID_LEN, Address, ip_scope, pack_address

__all__ = ["NodeInfo", "NodeStatus", "Bucket", "RoutingTable", "K", "GOOD_FOR", "BAD_AFTER"]

K = 8
GOOD_FOR = 15 * 60.0   # seconds of silence after which a node is questionable
BAD_AFTER = 2          # consecutive failures that make a node bad
ID_SPACE = 1 << 160
MAX_PER_IP = 3         # nodes per public IP address (loopback/private: no limit)


class NodeStatus(enum.Enum):
    GOOD = "good"
    QUESTIONABLE = "questionable"
    BAD = "bad"


class NodeInfo:
    __slots__ = ("id", "addr", "last_response", "last_query", "failures", "pinging")

    def __init__(self, node_id: bytes, addr: Address, now: float) -> None:
        self.id = node_id
        self.addr = addr
        self.last_response = now   # time of its last answer to one of our queries
        self.last_query = -1.0e18  # time of its last query to us
        self.failures = 0          # consecutive unanswered queries
        self.pinging = False       # pinged to decide whether it can be evicted

    def status(self, now: float) -> NodeStatus:
        if self.failures >= BAD_AFTER:
            return NodeStatus.BAD
        if now - self.last_response < GOOD_FOR or now - self.last_query < GOOD_FOR:
            return NodeStatus.GOOD
        return NodeStatus.QUESTIONABLE

    @property
    def last_seen(self) -> float:
        return max(self.last_response, self.last_query)

    def __repr__(self) -> str:
        return f"NodeInfo({self.id.hex()[:8]}, {self.addr}, failures={self.failures})"


class Bucket:
    __slots__ = ("lo", "hi", "nodes", "replacements", "last_changed")

    def __init__(self, lo: int, hi: int, now: float) -> None:
        self.lo, self.hi = lo, hi         # covers ids in [lo, hi)
        self.nodes: list[NodeInfo] = []
        self.replacements: list[NodeInfo] = []  # oldest first
        self.last_changed = now

    def covers(self, x: int) -> bool:
        return self.lo <= x < self.hi


class RoutingTable:
    def __init__(self, own_id: bytes, now: float, *, k: int = K, max_per_ip: int = MAX_PER_IP) -> None:
        if len(own_id) != ID_LEN:
            raise ValueError("a node id is 20 bytes")
        self.own_id = own_id
        self._own = int.from_bytes(own_id, "big")
        self.k = k
        self.max_per_ip = max_per_ip
        self.buckets: list[Bucket] = [Bucket(0, ID_SPACE, now)]
        self._los = [0]
        self._index: dict[bytes, NodeInfo] = {}     # nodes in buckets (not replacements)
        self._per_ip: dict[str, int] = {}

    # -- queries ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, node_id: bytes) -> bool:
        return node_id in self._index

    def get(self, node_id: bytes) -> NodeInfo | None:
        return self._index.get(node_id)

    def nodes(self) -> list[NodeInfo]:
        return list(self._index.values())

    def bucket_for(self, node_id: bytes) -> Bucket:
        x = int.from_bytes(node_id, "big")
        return self.buckets[bisect.bisect_right(self._los, x) - 1]

    def closest(self, target: bytes, n: int, now: float) -> list[NodeInfo]:
        """The `n` nodes nearest `target` by XOR distance, bad nodes left out."""
        t = int.from_bytes(target, "big")
        live = [nd for nd in self._index.values() if nd.failures < BAD_AFTER]
        live.sort(key=lambda nd: int.from_bytes(nd.id, "big") ^ t)
        return live[:n]

    def live_count(self) -> int:
        """Nodes that are not bad."""
        return sum(1 for nd in self._index.values() if nd.failures < BAD_AFTER)

    def count(self, status: NodeStatus, now: float) -> int:
        return sum(1 for nd in self._index.values() if nd.status(now) is status)

    def wants(self, node_id: bytes, addr: Address, now: float) -> bool:
        """Would a node with this id find a place (now or after its bucket
        is split or a node in it is evicted)? Used to decide whether a node
        that queried us is worth a ping."""
        if node_id == self.own_id or node_id in self._index:
            return False
        if not self._ip_allowed(addr):
            return False
        b = self.bucket_for(node_id)
        if len(b.nodes) < self.k or (b.covers(self._own) and b.hi - b.lo > 1):
            return True
        return any(nd.status(now) is not NodeStatus.GOOD for nd in b.nodes)

    def stale_buckets(self, now: float, age: float) -> list[Bucket]:
        return [b for b in self.buckets if now - b.last_changed >= age]

    @staticmethod
    def random_id_in(bucket: Bucket, rng: random.Random) -> bytes:
        return (bucket.lo + rng.randrange(bucket.hi - bucket.lo)).to_bytes(ID_LEN, "big")

    # -- updates ------------------------------------------------------------------

    def heard_query(self, node_id: bytes, addr: Address, now: float) -> bool:
        """`node_id` at `addr` sent us a query. True if it is in the table
        (its activity is recorded; a query never inserts a node)."""
        nd = self._index.get(node_id)
        if nd is None or nd.addr != addr:
            return False
        nd.last_query = now
        return True

    def heard_response(self, node_id: bytes, addr: Address, now: float) -> list[NodeInfo]:
        """`node_id` at `addr` answered one of our queries: insert or refresh
        it. Returns the questionable nodes that should now be pinged (to
        make room for it if they turn out to be bad)."""
        if node_id == self.own_id or len(node_id) != ID_LEN:
            return []
        nd = self._index.get(node_id)
        if nd is not None:
            if nd.addr == addr:
                nd.last_response = now
                nd.failures = 0
                nd.pinging = False
                self.bucket_for(node_id).last_changed = now
                return []
            if nd.status(now) is not NodeStatus.BAD:
                return []  # same id from another address: keep the one we know
            b = self.bucket_for(node_id)
            self._remove(b, b.nodes.index(nd))  # it moved (a NAT rebinding): take the new address
        if not self._ip_allowed(addr):
            return []
        while True:
            b = self.bucket_for(node_id)
            if len(b.nodes) < self.k:
                self._add(b, NodeInfo(node_id, addr, now), now)
                return []
            if b.covers(self._own) and b.hi - b.lo > 1:
                self._split(b, now)
                continue
            break
        for i, old in enumerate(b.nodes):
            if old.status(now) is NodeStatus.BAD:
                self._remove(b, i)
                self._add(b, NodeInfo(node_id, addr, now), now)
                return []
        self._remember(b, NodeInfo(node_id, addr, now))
        questionable = [nd for nd in b.nodes if nd.status(now) is NodeStatus.QUESTIONABLE]
        if not questionable or any(nd.pinging for nd in questionable):
            return []
        oldest = min(questionable, key=lambda nd: nd.last_seen)
        oldest.pinging = True
        return [oldest]

    def failed(self, node_id: bytes, addr: Address, now: float) -> list[NodeInfo]:
        """A query to `node_id` at `addr` went unanswered. Returns nodes to
        ping again (an eviction candidate gets a second chance)."""
        nd = self._index.get(node_id)
        if nd is None or nd.addr != addr:
            return []
        nd.failures += 1
        b = self.bucket_for(node_id)
        if nd.failures < BAD_AFTER:
            return [nd] if nd.pinging and b.replacements else []
        nd.pinging = False
        while b.replacements:
            fresh = b.replacements.pop()
            if self._ip_allowed(fresh.addr):
                self._remove(b, b.nodes.index(nd))
                self._add(b, fresh, now)
                break
        return []

    def export(self, now: float) -> list[tuple[bytes, str, int]]:
        """(node_id, ip, port) of the good nodes, to be saved across restarts."""
        return [(nd.id, nd.addr[0], nd.addr[1]) for nd in self._index.values()
                if nd.status(now) is NodeStatus.GOOD]

    # -- internals -----------------------------------------------------------------

    def _ip_allowed(self, addr: Address) -> bool:
        packed = pack_address(addr[0])
        if packed is None or ip_scope(packed) is None:
            return False
        if ip_scope(packed) != GLOBAL:
            return True
        return self._per_ip.get(addr[0], 0) < self.max_per_ip

    def _add(self, b: Bucket, nd: NodeInfo, now: float) -> None:
        b.nodes.append(nd)
        b.last_changed = now
        self._index[nd.id] = nd
        self._per_ip[nd.addr[0]] = self._per_ip.get(nd.addr[0], 0) + 1
        b.replacements = [r for r in b.replacements if r.id != nd.id]

    def _remove(self, b: Bucket, i: int) -> None:
        nd = b.nodes.pop(i)
        del self._index[nd.id]
        left = self._per_ip[nd.addr[0]] - 1
        if left:
            self._per_ip[nd.addr[0]] = left
        else:
            del self._per_ip[nd.addr[0]]

    def _remember(self, b: Bucket, nd: NodeInfo) -> None:
        b.replacements = [r for r in b.replacements if r.id != nd.id]
        b.replacements.append(nd)
        if len(b.replacements) > self.k:
            del b.replacements[0]

    def _split(self, b: Bucket, now: float) -> None:
        mid = (b.lo + b.hi) // 2
        low, high = Bucket(b.lo, mid, now), Bucket(mid, b.hi, now)
        i = self.buckets.index(b)
        self.buckets[i:i + 1] = [low, high]
        self._los[i:i + 1] = [low.lo, high.lo]
        for nd in b.nodes:
            (low if int.from_bytes(nd.id, "big") < mid else high).nodes.append(nd)
        for r in b.replacements:
            half = low if int.from_bytes(r.id, "big") < mid else high
            if len(half.nodes) < self.k and self._ip_allowed(r.addr):
                self._add(half, r, now)
            else:
                half.replacements.append(r)

    def import_candidates(self, rows: Iterable[tuple[bytes, str, int]]) -> list[tuple[bytes, Address]]:
        """Validated (node_id, (ip, port)) from saved rows; nothing is inserted
        (saved nodes must answer a ping first)."""
        out = []
        for row in rows:
            try:
                node_id, ip, port = row
                if (isinstance(node_id, (bytes, bytearray)) and len(node_id) == ID_LEN
                        and isinstance(port, int) and 0 < port < 65536
                        and isinstance(ip, str) and pack_address(ip) is not None
                        and bytes(node_id) != self.own_id):
                    out.append((bytes(node_id), (ip, port)))
            except (TypeError, ValueError):
                continue
        return out
