"""The spec implementation chats with a real `p2pchat` node over a direct connection: the four steps as
initiator (against `p2pchat listen`) and as responder (called by `p2pchat chat`), one text each way with its
receipt, and one key rotation in each direction."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

import pytest

from tests.integration.chat_procs import ChatProcess
from tests.spec.harness import CHAT_PORT, NETWORK, called_peer, start_world
from tests.spec.impl import chatcrypto as cc
from tests.spec.impl.peer import MAX_FRAME, ChatPeer
from tests.spec.impl.wire import socket_stream
from tests.spec.test_chat_vectors import file_root

pytestmark = pytest.mark.slow

STEPS = ["1 Connect", "2 Swap public keys", "3 Authenticate", "4 Agree AES key"]


def answered_chat(peer: ChatPeer, node: ChatProcess) -> None:
    """The node called the spec peer, which answered (its four steps done): the exchange, then the spec peer says
    goodbye and the node's input ends."""
    assert peer.log == STEPS
    node.wait_for("✓ 4 Agree AES key")
    exchange(peer, node, choose=False)
    peer.close("the spec test is done")
    node.wait_for("left the chat")
    node.close_input()


def exchange(peer: ChatPeer, node: ChatProcess, choose: bool) -> None:
    """One text each way (each receipted), a rotation of each direction, a text under each new key."""
    first = peer.send_text("from the spec implementation ✓")             # rotate_every 1: a rotate follows
    node.wait_for("from the spec implementation ✓")
    if choose:
        node.choose_chat()
    node.write("from the node ✓")
    peer.pump(lambda: "from the node ✓" in peer.texts and first in peer.receipts)
    peer.pump(lambda: "rotated to epoch 1" in peer.log)                  # the node answered our rotate
    second = peer.send_text("under epoch 1")
    node.wait_for("under epoch 1")
    node.write("after the node's rotation")
    peer.pump(lambda: "after the node's rotation" in peer.texts and second in peer.receipts)
    assert "peer rotated to epoch 1" in peer.log
    assert peer.receiver.epoch >= 1 and peer.sender.epoch >= 1
    assert peer.receiver.refused == []


def test_spec_initiator_chats_with_p2pchat_listen(tmp_path):
    world = start_world(tmp_path)
    with world.cluster:
        node = ChatProcess("listen", "--host", world.host, "--accept-all", "--once", "--rotate-every", "1",
                           "--data-dir", str(world.data_dir))
        try:
            node.wait_for("Waiting for chats")
            with called_peer(world, rotate_every=1) as peer:
                assert peer.log == STEPS
                assert (peer.peer_verdict, peer.verdict) == ("agree", "agree")     # §3.2: one chain, both sides
                node.wait_for("✓ 4 Agree AES key")
                # §4: the node shows the safety number the spec implementation computes
                number = cc.safety_number(cc.H(peer.der), cc.H(world.records[1].key))
                node.wait_for(f"safety number {number}")
                exchange(peer, node, choose=True)
                peer.close("the spec test is done")
            assert node.wait_exit() == 0, node.output()
        finally:
            node.stop()
        assert "left the chat" in node.output()


def test_spec_responder_is_called_by_p2pchat_chat(tmp_path):
    world = start_world(tmp_path)
    with world.cluster:
        listener = socket.create_server((world.spec_ip, CHAT_PORT))
        accepted: list[socket.socket] = []
        thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), name="spec-accept")
        thread.start()
        node = ChatProcess("chat", world.spec_ip, "--host", world.host, "--rotate-every", "1",
                           "--data-dir", str(world.data_dir))
        try:
            thread.join(30)
            assert accepted, node.output()
            sock = accepted[0]
            sock.settimeout(20)
            with sock, listener:
                peer = ChatPeer(world.key, "spec-peer", f"{world.spec_ip}:{CHAT_PORT}", world.ledger_view(),
                                sock.sendall, socket_stream(sock, MAX_FRAME), NETWORK, rotate_every=1)
                peer.respond("ip", sock.getpeername()[0])
                answered_chat(peer, node)
            node.wait_exit()
        finally:
            node.stop()
            listener.close()
        assert "matches the ledger record for " + world.spec_ip in node.output()




def test_files_both_ways_between_the_spec_peer_and_a_real_node(tmp_path):
    """§5.7 from the wire: the node's offer (`/send`) is accepted with `max_chunk` and `root: true`, its chunks are
    acknowledged and the digest checked before `file_done`; the spec peer's own offer (with a `root`) lands in the
    node's downloads folder byte for byte."""
    world = start_world(tmp_path)
    sent = tmp_path / "from-node.bin"
    sent.write_bytes(bytes(i % 251 for i in range(3 * 1024 * 1024 + 5)))
    downloads = tmp_path / "downloads"
    with world.cluster:
        node = ChatProcess("listen", "--host", world.host, "--accept-all", "--accept-files", "--once",
                           "--downloads", str(downloads), "--data-dir", str(world.data_dir))
        try:
            node.wait_for("Waiting for chats")
            with called_peer(world) as peer:
                receiver = FileReceiver(peer)
                node.choose_chat()
                node.write(f"/send {sent}")
                peer.pump(lambda: receiver.done)
                assert receiver.data == sent.read_bytes()
                assert receiver.offer["sha256"] == cc.H(receiver.data)        # a first offer carries sha256
                assert max(receiver.chunk_sizes) <= 1048448

                content = bytes(range(256)) * 4099                           # a root over 2 pieces
                tid = os.urandom(16)
                peer.seal(cc.inner("file_offer", id=tid, name="../spec report.txt", size=len(content),
                                   root=file_root(content)))
                peer.pump(lambda: receiver.accepted is not None)
                accept: dict[str, Any] = receiver.accepted or {}
                assert accept["offset"] == 0 and accept.get("root") is True
                step = min(int(accept.get("max_chunk", 262016)), 1048448)
                for offset in range(0, len(content), step):
                    peer.seal(cc.inner("file_chunk", id=tid, offset=offset, data=content[offset:offset + step]))
                peer.pump(lambda: receiver.finished == tid)
                peer.close()
            assert node.wait_exit() == 0, node.output()
        finally:
            node.stop()
        assert (downloads / "spec report.txt").read_bytes() == content          # only the last component


class FileReceiver:
    """The spec peer's side of §5.7: takes the node's offer, acks what it got, answers `file_done`; notes the
    node's answers to its own offer."""

    def __init__(self, peer: ChatPeer) -> None:
        self.peer, self.data, self.done = peer, b"", False
        self.offer: dict[str, object] = {}
        self.chunk_sizes: list[int] = []
        self.accepted: dict[str, object] | None = None
        self.finished: bytes | None = None
        self._handle = peer._handle
        peer._handle = self.handle                                    # type: ignore[method-assign]

    def handle(self, message: dict[str, object]) -> None:
        t = message["t"]
        if t == "file_offer":
            self.offer = message
            self.peer.seal(cc.inner("file_accept", id=message["id"], offset=0, max_chunk=1048448, root=True))
        elif t == "file_chunk":
            data = message["data"]
            assert isinstance(data, bytes) and message["offset"] == len(self.data)
            self.data += data
            self.chunk_sizes.append(len(data))
            self.peer.seal(cc.inner("file_ack", id=message["id"], offset=len(self.data)))
            if len(self.data) == self.offer["size"]:
                digest = self.offer.get("root") or self.offer.get("sha256")
                assert digest in (cc.H(self.data), file_root(self.data))
                self.peer.seal(cc.inner("file_done", id=message["id"]))
                self.done = True
        elif t == "file_accept":
            self.accepted = message
        elif t == "file_done":
            assert isinstance(message["id"], bytes)
            self.finished = message["id"]
        elif t in ("file_ack", "file_decline", "file_cancel"):
            if t != "file_ack":
                raise AssertionError(f"the node answered {message}")
        else:
            self._handle(message)
