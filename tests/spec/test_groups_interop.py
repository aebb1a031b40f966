"""Groups from docs/groups.md and protocol.md §5.10 alone, against a real `p2pchat listen`: the spec peer creates a
group and invites the node, both post and acknowledge group texts, and the creator's removal reaches the node."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from tests.integration.chat_procs import ChatProcess
from tests.spec.harness import CHAT_PORT, NETWORK, SPEC_KEY_INDEX, SpecWorld, connect_from, spec_key, start_world
from tests.spec.impl import groups as gs
from tests.spec.impl.peer import MAX_FRAME, ChatPeer
from tests.spec.impl.wire import socket_stream

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
        node = ChatProcess("listen", "--host", world.host, "--accept-all", "--data-dir", str(world.data_dir))
        try:
            node.wait_for("Waiting for chats")
            sock = connect_from(world.spec_ip, world.host, CHAT_PORT)
            with sock:
                peer = ChatPeer(world.key, "spec-peer", f"{world.spec_ip}:{CHAT_PORT}", world.ledger_view(),
                                sock.sendall, socket_stream(sock, MAX_FRAME), NETWORK)
                peer.initiate("ip", world.host)
                group = GroupPeer(peer)
                gid = os.urandom(16)
                state = invite(world, group, gid, "speclab")
                my_fp = gs.fingerprint(peer.der)
                host_fp = gs.fingerprint(world.host_key.public_key().export_key(format="DER"))

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

                # a change whose version skips one (its parents' + 2) is refused and not acknowledged
                third = spec_key(SPEC_KEY_INDEX - 1).public_key().export_key(format="DER")
                skip = gs.sign_change(world.key, gs.Change(gid, "add", gs.fingerprint(third), third, "third",
                                                           tuple(state.heads), state.version + 2, my_fp,
                                                           time.time()))
                group.send("changes", group=gid, changes=[skip.encoded()])
                node.wait_for("not one more than its parents'")
                remove = gs.sign_change(world.key, gs.Change(gid, "remove", host_fp, None, "",
                                                             tuple(state.heads), state.version + 1, my_fp,
                                                             time.time()))
                state.add(remove)
                assert set(state.members()) == {my_fp}
                ref = group.send("changes", group=gid, changes=[remove.encoded()])
                peer.pump(lambda: ref in group.acked)
                node.wait_for("removed")
                seen = len(group.texts)
                node.write("/gsay speclab after the removal")
                node.wait_for("no longer a member")
                peer.close("the spec test is done")
            assert len(group.texts) == seen
        except BaseException:
            print(node.output())
            raise
        finally:
            node.stop()
