"""Groups from docs/groups.md and protocol.md §5.10 alone, against a real `p2pchat listen`: the spec peer creates a
group and invites the node, both post and acknowledge group texts (a gap, a late counter, a held text), a shared
file, a group the node creates, and the creator's removal reaching the node."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import pytest

from tests.integration.chat_procs import ChatProcess
from tests.spec.harness import (
    SPEC_KEY_INDEX,
    SpecWorld,
    called_peer,
    spec_key,
    start_world,
)
from tests.spec.impl import chatcrypto as cc
from tests.spec.impl import groups as gs
from tests.spec.impl.peer import ChatPeer
from tests.spec.test_chat_interop import FileReceiver

pytestmark = pytest.mark.slow


class GroupPeer:
    """The spec peer's group side: takes the node's group frames, checks them, acknowledges them."""

    def __init__(self, peer: ChatPeer) -> None:
        self.peer = peer
        self.acked: list[int] = []
        self.texts: list[dict[str, Any]] = []
        self.changes: list[gs.Change] = []
        self._handle = peer._handle
        peer._handle = self.handle                                    # type: ignore[method-assign]
        self.next_ref = 1

    def send(self, t: str, **fields: Any) -> int:
        ref = self.next_ref
        self.next_ref += 1
        self.peer.seal(gs.group_inner(gs.packed(t, ref=ref, **fields)))
        return ref

    def handle(self, message: dict[str, Any]) -> None:
        if message["t"] != "group":
            self._handle(message)
            return
        frame = gs.decode_frame(message["body"])
        if frame["t"] == "ack":
            self.acked.extend(frame["refs"])
            return
        if frame["t"] == "changes":
            self.changes.extend(gs.Change.decode(c) for c in frame["changes"])
        elif frame["t"] == "text":
            self.texts.append(frame)
        self.peer.seal(gs.group_inner(gs.packed("ack", refs=[frame["ref"]])))


def invite(world: SpecWorld, group: GroupPeer, gid: bytes, name: str) -> gs.GroupState:
    me, host_der = world.key, world.host_key.public_key().export_key(format="DER")
    my_der = me.public_key().export_key(format="DER")
    my_fp = gs.fingerprint(my_der)
    state = gs.GroupState(gid)
    create = gs.sign_change(me, gs.Change(gid, "create", my_fp, my_der, name, (), 1, my_fp, time.time()))
    state.add(create)
    add = gs.sign_change(me, gs.Change(gid, "add", gs.fingerprint(host_der), host_der, "spec-host", (create.hash,),
                                       2, my_fp, time.time()))
    state.add(add)
    assert set(state.members()) == {my_fp, gs.fingerprint(host_der)}
    ref = group.send("changes", group=gid, changes=[create.encoded(), add.encoded()])
    group.peer.pump(lambda: ref in group.acked)
    return state


def test_a_group_made_from_the_docs_with_a_real_listen_node(tmp_path):
    world = start_world(tmp_path)
    with world.cluster:
        downloads = tmp_path / "downloads"
        node = ChatProcess("listen", "--host", world.host, "--accept-all", "--accept-files", "--downloads",
                           str(downloads), "--data-dir", str(world.data_dir))
        try:
            node.wait_for("Waiting for chats")
            with called_peer(world) as peer:
                group = GroupPeer(peer)
                gid = os.urandom(16)
                state = invite(world, group, gid, "speclab")
                my_fp = gs.fingerprint(peer.der)
                host_fp = gs.fingerprint(world.host_key.public_key().export_key(format="DER"))

                # a frame for an unknown group that does not make the node a member is refused
                other = os.urandom(16)
                alone = gs.sign_change(world.key, gs.Change(other, "create", my_fp, peer.der, "alone", (), 1, my_fp,
                                                            time.time()))
                group.send("changes", group=other, changes=[alone.encoded()])
                node.wait_for("that does not make both of you members was refused")

                ref = group.send("text", group=gid, sender=my_fp, counter=1, version=state.version, lamport=1,
                                 sent_at=time.time(), text="hello, group ✓")
                peer.pump(lambda: ref in group.acked)
                node.wait_for("hello, group ✓")

                node.write("/gsay speclab hello from the node ✓")
                peer.pump(lambda: any(t["text"] == "hello from the node ✓" for t in group.texts))
                reply = next(t for t in group.texts if t["text"] == "hello from the node ✓")
                assert (reply["group"], reply["sender"], reply["counter"]) == (gid, host_fp, 1)
                assert reply["version"] == state.version and reply["lamport"] > 1       # it saw our lamport 1
                for change in group.changes:                       # anything it sent of the log checks out
                    state.add(change)
                assert set(state.members()) == {my_fp, host_fp}

                # counters (groups.md "Messages"): a gap is shown with a notice, a lower counter is dropped
                ref = group.send("text", group=gid, sender=my_fp, counter=3, version=state.version, lamport=5,
                                 sent_at=time.time(), text="third, after a gap")
                peer.pump(lambda: ref in group.acked)
                node.wait_for("third, after a gap")
                ref = group.send("text", group=gid, sender=my_fp, counter=2, version=state.version, lamport=6,
                                 sent_at=time.time(), text="second, replayed late")
                peer.pump(lambda: ref in group.acked)
                # a text naming another sender than the channel's peer is refused
                ref = group.send("text", group=gid, sender=host_fp, counter=9, version=state.version, lamport=7,
                                 sent_at=time.time(), text="under the node's own name")

                # the node creates a group with the spec peer: its changes check out by the doc's rules
                node.write("/group create nodelab spec-peer")
                peer.pump(lambda: any(c.op == "add" and c.target == my_fp for c in group.changes))
                theirs = next(c for c in group.changes if c.op == "create").group
                node_state = gs.GroupState(theirs)
                for change in sorted((c for c in group.changes if c.group == theirs), key=lambda c: c.version):
                    node_state.add(change)
                assert set(node_state.members()) == {my_fp, host_fp}
                creation = next(c for c in node_state.changes.values() if c.op == "create")
                assert (creation.name, creation.author, creation.version) == ("nodelab", host_fp, 1)
                # and the spec peer leaves it (any member may remove itself)
                leave = gs.sign_change(world.key, gs.Change(theirs, "remove", my_fp, None, "",
                                                            tuple(node_state.heads), node_state.version + 1,
                                                            my_fp, time.time()))
                node_state.add(leave)
                assert set(node_state.members()) == {host_fp}
                ref = group.send("changes", group=theirs, changes=[leave.encoded()])
                peer.pump(lambda: ref in group.acked)
                node.wait_for("is no longer in 'nodelab'")

                # a text claiming a membership version the node lacks is held until the change arrives, and
                # acknowledged only then (groups.md "Messages")
                member = spec_key(SPEC_KEY_INDEX - 1).public_key().export_key(format="DER")
                add = gs.sign_change(world.key, gs.Change(gid, "add", gs.fingerprint(member), member, "member",
                                                          tuple(state.heads), state.version + 1, my_fp, time.time()))
                state.add(add)
                held = group.send("text", group=gid, sender=my_fp, counter=4, version=state.version, lamport=9,
                                  sent_at=time.time(), text="sent before its change")
                node.wait_for("waits for a membership change this computer does not have yet")
                ping = peer.send_text("a pairwise text after the held one")      # read by the node after it
                peer.pump(lambda: ping in peer.receipts)
                assert held not in group.acked and "sent before its change" not in node.output()
                ref = group.send("changes", group=gid, changes=[add.encoded()])
                peer.pump(lambda: ref in group.acked and held in group.acked)
                node.wait_for("sent before its change")

                # a shared file (groups.md "Files", protocol.md §5.10): its entry, acknowledged, then an ordinary
                # offer whose sha256 and size equal the entry's
                content = bytes(range(256)) * 1000
                digest = hashlib.sha256(content).digest()
                ref = group.send("file", group=gid, sender=my_fp, counter=5, version=state.version, lamport=11,
                                 sent_at=time.time(), name="notes.bin", size=len(content), sha256=digest)
                peer.pump(lambda: ref in group.acked)
                files = FileReceiver(peer)
                tid = os.urandom(16)
                peer.seal(cc.inner("file_offer", id=tid, name="notes.bin", size=len(content), sha256=digest))
                peer.pump(lambda: files.accepted is not None)
                accepted: dict[str, Any] = files.accepted or {}
                step = min(int(accepted.get("max_chunk", 262016)), 1048448)
                for offset in range(accepted["offset"], len(content), step):
                    peer.seal(cc.inner("file_chunk", id=tid, offset=offset, data=content[offset:offset + step]))
                peer.pump(lambda: files.finished == tid)
                assert (downloads / "notes.bin").read_bytes() == content
                node.wait_for("[speclab] spec-peer offers the file 'notes.bin'")       # taken as the group's

                # a change whose version skips one (its parents' + 2) is refused
                third = spec_key(SPEC_KEY_INDEX - 2).public_key().export_key(format="DER")
                skip = gs.sign_change(world.key, gs.Change(gid, "add", gs.fingerprint(third), third, "third",
                                                           tuple(state.heads), state.version + 2, my_fp,
                                                           time.time()))
                group.send("changes", group=gid, changes=[skip.encoded()])
                node.wait_for("not one more than its parents'")
                remove = gs.sign_change(world.key, gs.Change(gid, "remove", host_fp, None, "",
                                                             tuple(state.heads), state.version + 1, my_fp,
                                                             time.time()))
                state.add(remove)
                assert set(state.members()) == {my_fp, gs.fingerprint(member)}
                ref = group.send("changes", group=gid, changes=[remove.encoded()])
                peer.pump(lambda: ref in group.acked)
                node.wait_for("removed")
                seen = len(group.texts)
                node.write("/gsay speclab after the removal")
                node.wait_for("no longer a member")
                peer.close("the spec test is done")
            assert len(group.texts) == seen
            out = node.output()
            assert "second, replayed late" not in out and "under the node's own name" not in out
            assert "1 message(s) from spec-peer never arrived" in out
            assert "claiming another member as its sender was refused" in out
        except BaseException:
            print(node.output())
            raise
        finally:
            node.stop()
