"""Share -> clone in one process over real UDP sockets on loopback."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from dattui.engine import events as ev
from dattui.engine import manifest as mf
from dattui.engine.errors import DattuiError, NotFound, UnsafeManifest, UsageError
from dattui.engine.share import ShareSwarm
from helpers import engine, make_tree, tree, visible


async def share_and_clone(tmp_path: Path, src: Path, *, dst_name="dst", **clone_kw):
    a = await engine(tmp_path / "ha")
    b = await engine(tmp_path / "hb")
    tid = await a.share(src)
    link = a.transfer(tid).link
    dst = tmp_path / dst_name
    ctid = await b.clone(link, dst, peers=[f"127.0.0.1:{a.port}"], **clone_kw)
    return a, b, link, dst, ctid


async def test_clone_is_identical_including_modes_mtimes_and_empties(tmp_path):
    src = make_tree(tmp_path / "src")
    os.symlink("big.bin", src / "link-to-big")
    a, b, link, dst, ctid = await share_and_clone(tmp_path, src)
    q = b.subscribe()
    try:
        done = await asyncio.wait_for(b.wait(ctid, find_timeout=10), 20)
        assert done.files == 5 and done.bytes_received == done.bytes
        assert visible(tree(dst)) == visible(tree(src))
        assert ".hidden" not in tree(dst) and "link-to-big" not in tree(dst)
        assert "link-to-big" in a.transfer(a.status()[0].tid).symlinks  # reported, not followed
        st = b.status()[0]
        assert st.state == ev.State.DONE and st.bytes_have == st.bytes_total == done.bytes
    finally:
        await b.close()
        await a.close()


async def test_share_reports_symlinks_as_events(tmp_path):
    src = make_tree(tmp_path / "src")
    os.symlink("/etc", src / "etc-link")
    a = await engine(tmp_path / "ha")
    q = a.subscribe()
    try:
        await a.share(src)
        seen = []
        while not q.empty():
            seen.append(q.get_nowait())
        assert any(isinstance(e, ev.SymlinkSkipped) and e.path == "etc-link" for e in seen)
        m = a.transfer(a.status()[0].tid).manifest
        assert all(not e.path.startswith("etc-link") for e in m.entries)
    finally:
        await a.close()


async def test_peer_without_the_link_gets_only_a_closed_connection(tmp_path):
    src = make_tree(tmp_path / "src")
    a = await engine(tmp_path / "ha")
    b = await engine(tmp_path / "hb")
    try:
        tid = await a.share(src)
        real = a.transfer(tid)
        # an attacker who learned the discovery key (it is public) but not the link
        from dattui.engine.swarmbase import SwarmBase
        from dattui.engine.keys import ShareKey

        class Impostor(SwarmBase):
            role = ev.Role.CLONE

            def __init__(self):
                super().__init__(ShareKey.generate().public, tmp_path, lambda e: None)
                self.dkey = real.dkey  # announce the right discovery key
                self.frames = []

            def on_frame(self, peer, frame):
                self.frames.append(frame)

            def on_writable(self, peer):
                pass

        imp = Impostor()
        b.node.swarms[imp.dkey] = imp
        peer = b.node.dial(imp.dkey, ("127.0.0.1", a.port), ev.PathKind.DIRECT)
        for _ in range(100):
            if peer.link.closed:
                break
            await asyncio.sleep(0.05)
        assert peer.link.closed
        assert peer.state.value == "closed" and not imp.peers and not imp.frames
        assert not real.peers and real.server.blocks_sent == 0
    finally:
        await b.close()
        await a.close()


class CorruptingShare(ShareSwarm):
    """A malicious share: serves one block with a flipped byte."""

    def read_block(self, version, file, block):
        got = super().read_block(version, file, block)
        if got is not None and self.manifest.entries[file].path == "big.bin" and block == 1:
            data, proof = got
            return bytes([data[0] ^ 0xFF]) + data[1:], proof
        return got


async def test_bad_block_disconnects_peer_and_honest_peer_finishes(tmp_path):
    src = make_tree(tmp_path / "src")
    honest = await engine(tmp_path / "honest")
    evil = await engine(tmp_path / "evil")
    b = await engine(tmp_path / "hb")
    q = b.subscribe()
    try:
        tid = await honest.share(src)
        link = honest.transfer(tid).link
        # the evil node holds the same key (a stolen copy) but corrupts data
        from dattui.engine import keystore
        key = honest.transfer(tid).key
        keystore.save(key, evil.state_dir)
        swarm = CorruptingShare(src, key, honest.transfer(tid).db.__class__(src), evil._emit)
        await swarm.publish()
        evil.swarms[swarm.tid] = swarm
        evil.node.add_swarm(swarm)
        ctid = await b.clone(link, tmp_path / "dst", peers=[f"127.0.0.1:{evil.port}"])
        bad = None
        for _ in range(200):
            while not q.empty():
                e = q.get_nowait()
                if isinstance(e, ev.BadBlockReceived):
                    bad = e
            if bad:
                break
            await asyncio.sleep(0.05)
        assert bad is not None and bad.path == "big.bin" and bad.block == 1
        await asyncio.sleep(0.2)
        assert all(p.peer_id != bad.peer_id for p in b.transfer(ctid).peers)  # disconnected
        b.add_peer(ctid, f"127.0.0.1:{honest.port}")
        b.node.sources[0].remove(b.transfer(ctid).dkey)  # stop redialling the evil one
        b.node.sources[0].add(b.transfer(ctid).dkey, ("127.0.0.1", honest.port))
        await asyncio.wait_for(b.wait(ctid), 30)
        assert visible(tree(tmp_path / "dst")) == visible(tree(src))
    finally:
        for e in (b, evil, honest):
            await e.close()


class EvilManifestShare(ShareSwarm):
    """Signs a manifest that names a path outside the target."""

    EVIL_PATH = "../escaped.txt"

    async def publish(self):
        await super().publish()
        m = self.manifest
        evil = mf.Entry(mf.Kind.FILE, self.EVIL_PATH, 0o644, 0, 5, m.files[0].root)
        bad = mf.Manifest(m.version + 1, m.block_size, m.name, m.entries + (evil,))
        enc, sig = mf.sign(bad, self.key)
        self.manifest, self.encoded, self.signature, self.version = bad, enc, sig, bad.version
        return True


@pytest.mark.parametrize("evil_path", ["../escaped.txt", "/tmp/abs-escape.txt"])
async def test_manifest_escaping_target_is_refused(tmp_path, evil_path):
    src = make_tree(tmp_path / "src")
    a = await engine(tmp_path / "ha")
    b = await engine(tmp_path / "hb")
    try:
        key = a.share_key(src)
        from dattui.engine.store import ShareDB
        EvilManifestShare.EVIL_PATH = evil_path
        swarm = EvilManifestShare(src, key, ShareDB(src), a._emit)
        await swarm.publish()
        a.swarms[swarm.tid] = swarm
        a.node.add_swarm(swarm)
        dst = tmp_path / "dst"
        ctid = await b.clone(key.link, dst, peers=[f"127.0.0.1:{a.port}"])
        with pytest.raises(DattuiError) as e:
            await asyncio.wait_for(b.wait(ctid), 20)
        assert "refusing" in str(e.value) and "leave the target" in str(e.value)
        assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/abs-escape.txt").exists()
        assert [p.name for p in dst.iterdir()] == [".dat"]  # nothing written
    finally:
        await b.close()
        await a.close()


async def test_symlink_planted_in_target_is_refused(tmp_path):
    src = make_tree(tmp_path / "src")
    outside = tmp_path / "outside"
    outside.mkdir()
    a = await engine(tmp_path / "ha")
    b = await engine(tmp_path / "hb")
    try:
        tid = await a.share(src)
        dst = tmp_path / "dst"
        dst.mkdir()
        # a clone that was started before, then someone planted a symlink
        from dattui.engine.store import CloneDB
        db = CloneDB(dst)
        db.set("public_key", a.transfer(tid).public_key)
        db.close()
        os.symlink(outside, dst / "sub")
        ctid = await b.clone(a.transfer(tid).link, dst, peers=[f"127.0.0.1:{a.port}"])
        with pytest.raises(UnsafeManifest) as e:
            await asyncio.wait_for(b.wait(ctid), 20)
        assert "symlink" in str(e.value)
        assert list(outside.iterdir()) == []
    finally:
        await b.close()
        await a.close()


async def test_share_not_found_times_out_with_advice(tmp_path):
    b = await engine(tmp_path / "hb")
    try:
        ctid = await b.clone("dat://" + "ab" * 32, tmp_path / "dst", peers=["127.0.0.1:9"])
        with pytest.raises(NotFound) as e:
            await b.wait(ctid, find_timeout=1.0)
        assert "doctor" in str(e.value) and e.value.exit_code != 0
    finally:
        await b.close()


async def test_non_empty_target_is_refused_and_untouched(tmp_path):
    b = await engine(tmp_path / "hb")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "precious.txt").write_text("keep me")
    try:
        # a folder with files but no state is checked against the share's manifest
        # (tests/test_adopt.py refuses someone else's files); with no share found,
        # it is left as it was, without a .dat/
        ctid = await b.clone("dat://" + "ab" * 32, dst)
        with pytest.raises(NotFound):
            await b.wait(ctid, find_timeout=0.5)
    finally:
        await b.close()
    assert (dst / "precious.txt").read_text() == "keep me" and not (dst / ".dat").exists()


async def test_sync_clone_follows_a_new_version(tmp_path):
    src = make_tree(tmp_path / "src")
    a = await engine(tmp_path / "ha", rescan_interval=0.3)
    b = await engine(tmp_path / "hb")
    q = b.subscribe()
    try:
        tid = await a.share(src)
        a.transfer(tid).start_rescans()
        dst = tmp_path / "dst"
        ctid = await b.clone(a.transfer(tid).link, dst, peers=[f"127.0.0.1:{a.port}"], sync=True)
        await asyncio.wait_for(b.wait(ctid), 20)
        (src / "sub" / "a.txt").write_text("changed\n")
        (src / "new.txt").write_text("new file\n")
        for _ in range(200):
            if (dst / "new.txt").exists() and (dst / "sub" / "a.txt").read_text() == "changed\n" \
                    and b.transfer(ctid).completed:
                break
            await asyncio.sleep(0.05)
        assert b.transfer(ctid).version == 2
        assert visible(tree(dst)) == visible(tree(src))
    finally:
        await b.close()
        await a.close()


async def test_a_clone_serves_what_it_verified_after_the_share_is_gone(tmp_path):
    src = make_tree(tmp_path / "src")
    a = await engine(tmp_path / "ha")
    b = await engine(tmp_path / "hb")
    c = await engine(tmp_path / "hc")
    try:
        tid = await a.share(src)
        link = a.transfer(tid).link
        t1 = await b.clone(link, tmp_path / "first", peers=[f"127.0.0.1:{a.port}"], sync=True)
        await asyncio.wait_for(b.wait(t1), 20)
        await a.close()  # the original share goes away
        t2 = await c.clone(link, tmp_path / "second", peers=[f"127.0.0.1:{b.port}"])
        done = await asyncio.wait_for(c.wait(t2, find_timeout=10), 20)
        assert done.bytes_received == done.bytes
        assert visible(tree(tmp_path / "second")) == visible(tree(src))
        assert b.transfer(t1).server.blocks_sent > 0
    finally:
        await c.close()
        await b.close()


async def test_paused_clone_reconnects_to_its_peer_when_resumed(tmp_path):
    src = make_tree(tmp_path / "src")
    a = await engine(tmp_path / "ha")
    b = await engine(tmp_path / "hb")
    try:
        tid = await a.share(src)
        a.pause(tid)  # nothing flows until the clone has been paused and resumed
        ctid = await b.clone(a.transfer(tid).link, tmp_path / "dst", peers=[f"127.0.0.1:{a.port}"])
        b.pause(ctid)
        assert b.transfer(ctid).state == ev.State.PAUSED and not b.transfer(ctid).peers
        a.resume(tid)
        b.resume(ctid)
        await asyncio.wait_for(b.wait(ctid), 20)
        assert visible(tree(tmp_path / "dst")) == visible(tree(src))
    finally:
        await b.close()
        await a.close()
