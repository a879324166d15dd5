"""Good DHT nodes saved across restarts in the caller's SQLite database
(table `dht_nodes`), so a node rejoins without its bootstrap routers.

    save_nodes(conn, service.export())      # at close, or every few minutes
    service.import_(load_nodes(conn))       # at start
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable

from .krpc import ID_LEN, pack_address

__all__ = ["save_nodes", "load_nodes", "MAX_SAVED"]

MAX_SAVED = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dht_nodes (
    id    BLOB PRIMARY KEY,
    ip    TEXT NOT NULL,
    port  INTEGER NOT NULL,
    saved REAL NOT NULL
)
"""


def _ensure(conn: sqlite3.Connection) -> None:
    conn.execute(_SCHEMA)


def save_nodes(conn: sqlite3.Connection, rows: Iterable[tuple[bytes, str, int]], *,
               now: float | None = None) -> int:
    """Replace the saved nodes with (at most MAX_SAVED of) `rows`; returns how
    many were saved. Invalid rows are skipped."""
    now = time.time() if now is None else now
    keep = []
    for node_id, ip, port in rows:
        if (isinstance(node_id, bytes) and len(node_id) == ID_LEN and isinstance(port, int)
                and 0 < port < 65536 and isinstance(ip, str) and pack_address(ip) is not None):
            keep.append((node_id, ip, port, now))
        if len(keep) >= MAX_SAVED:
            break
    with conn:
        _ensure(conn)
        conn.execute("DELETE FROM dht_nodes")
        conn.executemany("INSERT OR REPLACE INTO dht_nodes (id, ip, port, saved) VALUES (?, ?, ?, ?)", keep)
    return len(keep)


def load_nodes(conn: sqlite3.Connection, *, limit: int = MAX_SAVED) -> list[tuple[bytes, str, int]]:
    """The saved (node_id, ip, port), most recently saved first."""
    with conn:
        _ensure(conn)
    out = []
    for node_id, ip, port in conn.execute(
            "SELECT id, ip, port FROM dht_nodes ORDER BY saved DESC LIMIT ?", (limit,)):
        if isinstance(node_id, bytes) and len(node_id) == ID_LEN and isinstance(ip, str) \
                and isinstance(port, int) and 0 < port < 65536:
            out.append((node_id, ip, port))
    return out
