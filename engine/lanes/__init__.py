"""Lanes: one transfer spread over several QUIC connections and processes.

One QUIC connection's per-packet work (encryption, framing, ACKs, congestion
control) runs on one core in one Python process; on this kind of hardware that
caps a connection at one core's worth of packets per side. A share with lanes
runs worker processes, each with its own UDP port and QUIC endpoint serving the
same signed manifest (`share_lane.py`), and tells clones on direct paths about
their ports (the LANES frame). A clone with lanes runs worker processes that
each connect to one of those ports (`clone_lane.py`), verify every block
against the signed tree there, and hand the verified blocks to the main
process, which alone keeps the state database, writes the files, picks which
block each connection fetches and reports progress: to it a lane is one more
peer (`lane_peer.py`). Lanes and the main process speak over a pipe in the
peer protocol's own framing, plus the messages of `pipe.py`.
"""

from __future__ import annotations

import os

MAX_AUTO = 4


def lanes_for(setting: int, cores: int | None = None) -> int:
    """Lanes to run for the `transfer.lanes` setting: as set, or for -1 one per
    core beyond the first (the main process's), at most MAX_AUTO, and none with
    fewer than 3 cores (the other side of a test on one machine needs them)."""
    if setting >= 0:
        return setting
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 0 if cores < 3 else min(MAX_AUTO, cores - 1)
