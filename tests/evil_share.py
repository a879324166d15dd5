"""A scripted misbehaving share, for tests against a real `dattui clone`.

    python tests/evil_share.py SEED_HEX DIR [--port P] [--version V]
                               [--mode MODE[:N]] [--extra KIND]

It holds the share's secret key (from SEED_HEX), so it signs whatever it
likes: the folder DIR scanned as a real share would, republished as version
V, with hostile entries appended (--extra). It serves the first N block
requests honestly and then, by MODE:
  honest    keeps serving (the default)
  stall     ignores every request (the connection stays up, PINGs answered)
  half      sends the first half of a DATA frame, then nothing at all
  bad       answers with a block whose bytes do not match the signed tree
  other     answers with a block of another file under this one's name
  oversize  sends a frame longer than any frame may be
  mute      authenticates, then never sends the manifest (a slow, huge one)
--extra names a set of hostile paths (EXTRA below); --extra-json lists more.
Prints one JSON line {"link", "port"} once serving, then {"event": "tripped"}
when it starts misbehaving. Runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's dattui package (dattui/__init__.py maps engine/)


EXTRA = {
    "long-name": ["x" * 300],
    "deep": ["/".join(["d"] * 2000) + "/f"],
    "control": ["bad\nname.txt"],
    "escape": ["\x1b[2Jcls.txt"],
    "collide": ["Readme.txt", "README.txt"],
    "nfc": ["caf\u00e9.txt", "cafe\u0301.txt"],
}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("seed")
    ap.add_argument("dir")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--version", type=int, default=1)
    ap.add_argument("--mode", default="honest")
    ap.add_argument("--extra", default="")
    ap.add_argument("--extra-json", default="", help='[["file"|"dir", path], ...] to append')
    ap.add_argument("--home", default=None)
    ap.add_argument("--synthetic", type=int, default=0,
                    help="append N one-byte files s/DDDD/NNN (in N/1000 folders) that exist "
                         "nowhere: a huge signed manifest (bench/bench_big_manifest.py)")
    args = ap.parse_args()
    from dattui.engine import api
    from dattui.engine import manifest as mf
    from dattui.engine import wire
    from dattui.engine.keys import ShareKey
    from dattui.engine.share import Published, ShareSwarm
    from dattui.engine.store import ShareDB

    mode, _, n = args.mode.partition(":")
    honest_requests = int(n or 0)
    key = ShareKey.from_seed(bytes.fromhex(args.seed))
    home = Path(args.home or (Path(args.dir).parent / "evil-home"))
    home.mkdir(parents=True, exist_ok=True)
    engine = api.Engine(api.EngineOptions(state=home, host="127.0.0.1", port=args.port, lan=False))
    await engine.start()

    class Evil(ShareSwarm):
        requests = 0
        tripped = False
        dead = False

        def on_frame(self, peer, frame):
            if self.dead or (mode == "mute" and isinstance(frame, wire.GetManifest)):
                return
            if type(frame) is wire.Request and mode != "honest":
                self.requests += 1
                if self.requests > honest_requests:
                    self.trip(peer, frame)
                    return
            super().on_frame(peer, frame)

        evil = None  # (the signed manifest it serves, path -> leaves of its real files)

        def _entry(self, file):
            if self.evil is None:
                return super()._entry(file)
            m, leaves = self.evil
            if not 0 <= file < len(m.entries):
                return None
            e = m.entries[file]
            return e, leaves.get(e.path)

        def on_writable(self, peer):
            if not self.dead:  # after a half frame, not one more byte
                super().on_writable(peer)

        def trip(self, peer, req):
            if not self.tripped:
                self.tripped = True
                print(json.dumps({"event": "tripped"}), flush=True)
            if mode == "stall":
                return
            data, proof = self.read_block(req.version, req.file, req.block)
            if mode == "half":
                frame = wire.encode_data_header(req.version, req.file, req.block, proof,
                                                len(data)) + bytes(data)
                peer.app.pop("serve_queue", None)  # nothing queued goes out after it
                peer.send_raw(frame[:len(frame) // 2])
                self.dead = True
            elif mode == "bad":
                bad = bytearray(data)
                bad[0] ^= 1
                peer.send_raw(wire.encode_data_header(req.version, req.file, req.block, proof,
                                                      len(bad)) + bytes(bad))
            elif mode == "other":
                files = [i for i, e in enumerate(self.manifest.entries)
                         if e.kind == mf.Kind.FILE and i != req.file and e.size >= len(data)]
                odata, oproof = self.read_block(req.version, files[0], 0)
                odata = bytes(odata)[:len(data)]
                peer.send_raw(wire.encode_data_header(req.version, req.file, req.block, oproof,
                                                      len(odata)) + odata)
            elif mode == "oversize":
                peer.send_raw(wire._LEN.pack(wire.MAX_FRAME + 1, wire.Data.TYPE) + b"\0" * 1024)
                self.dead = True

    folder = Path(args.dir).resolve()
    swarm = Evil(folder, key, ShareDB(folder), engine._emit, lanes=0)
    engine.swarms[swarm.tid] = swarm
    await swarm.publish()
    m = swarm.manifest
    extra = tuple(mf.Entry(mf.Kind.FILE, p, 0o644, 0, 0, b"\x00" * 32)
                  for p in EXTRA.get(args.extra, ()))
    if args.extra_json:
        extra += tuple(mf.Entry(mf.Kind.FILE, p, 0o644, 0, 0, b"\x00" * 32) if k == "file"
                       else mf.Entry(mf.Kind.DIR, p, 0o755, 0) for k, p in json.loads(args.extra_json))
    if args.synthetic:
        per = 1000
        syn = [mf.Entry(mf.Kind.DIR, "s", 0o755, 0)]
        for d in range((args.synthetic + per - 1) // per):
            syn.append(mf.Entry(mf.Kind.DIR, f"s/{d:04d}", 0o755, 0))
            syn += [mf.Entry(mf.Kind.FILE, f"s/{d:04d}/{i % per:03d}", 0o644, 0, 1, b"\x01" * 32)
                    for i in range(d * per, min(args.synthetic, (d + 1) * per))]
        extra += tuple(syn)
    m = dataclasses.replace(m, version=args.version, entries=m.entries + extra)
    encoded, sig = mf.sign(m, key)
    leaves = {}
    for i, e in enumerate(swarm.manifest.entries):  # the scanned version's own files
        row = swarm.db.entry(swarm.version, i)
        leaves[e.path] = row[6] if row is not None else None
    swarm.evil = (m, leaves)
    swarm._set_version(Published(m.version, m.block_size, len(m.files), m.total_bytes, len(encoded)),
                       encoded, sig)
    swarm.manifest = m
    engine.node.add_swarm(swarm)
    print(json.dumps({"link": swarm.link, "port": engine.port, "bytes": m.total_bytes}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig_ in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig_, stop.set)
    await stop.wait()
    await engine.close()


if __name__ == "__main__":
    asyncio.run(main())
