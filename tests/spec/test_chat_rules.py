"""Rules docs/protocol.md states, checked on a real `p2pchat listen` node from the wire by the spec
implementation: what step 1 refuses (canonical addresses, the frame limit before step 3) and what the channel
refuses (three refused frames end the session with a sealed goodbye)."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
import pytest

from tests.conftest import free_loopback_ip
from tests.integration.chat_procs import ChatProcess
from tests.spec.harness import CHAT_PORT, NETWORK, SpecWorld, connect_from, start_world
from tests.spec.impl import chatcrypto as cc
from tests.spec.impl.peer import MAX_FRAME, ChatPeer, LedgerView
from tests.spec.impl.wire import SpecError, pack, socket_stream
from tests.spec.test_chat_interop import STEPS

pytestmark = pytest.mark.slow


@contextmanager
def listening_node(tmp_path: Any, *extra: str) -> Iterator[SpecWorld]:
    world = start_world(tmp_path)
    with world.cluster:
        node = ChatProcess("listen", "--host", world.host, "--accept-all", "--data-dir", str(world.data_dir), *extra)
        world.node_process = node
        try:
            node.wait_for("Waiting for chats")
            yield world
        finally:
            node.stop()


@pytest.fixture(scope="module")
def default_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpecWorld]:
    """One `p2pchat listen` with default options for the tests that need nothing else (each starts its own chats;
    a world takes a second or two to start)."""
    with listening_node(tmp_path_factory.mktemp("spec-default-node")) as world:
        yield world


def first_answer(world: SpecWorld, data: bytes) -> dict[str, Any]:
    with connect_from(world.spec_ip, world.host, CHAT_PORT) as sock:
        sock.sendall(data)
        return socket_stream(sock, MAX_FRAME).read()


def hello(**changes: Any) -> bytes:
    return pack("hello", **{"version": 2, "network": NETWORK, "nickname": "spec", "address": "", **changes})


def test_step_1_refuses_what_the_doc_refuses_and_takes_what_it_allows(default_node: SpecWorld) -> None:
    world = default_node
    assert first_answer(world, hello(version=7)) == {
        "t": "error", "reason": "this node supports chat protocol version 2 only, not version 7"}
    for address in ("127.000.0.2:8471", " 127.0.0.2:8471", "[127.0.0.2]:8471", "127.0.0.2", "127.0.0.2:08471",
                    "127.0.0.2:\u0668\u0660", "[::FFFF:7F00:2]:8471", "::1:8471", "127.0.0.2:0"):
        answer = first_answer(world, hello(address=address))
        assert answer["t"] == "error" and "not an IP address and port" in answer["reason"], address
    for name in ("nickname", "network", "address"):
        assert first_answer(world, hello(**{name: "a\u202eb"}))["t"] == "error", name
    # §1: fields not in the schema are ignored, and fields may come in any order
    assert first_answer(world, hello(address="[::1]:8471", extra=1))["t"] == "welcome"
    body = msgpack.packb({"address": "127.0.0.2:8471", "nickname": "x", "network": NETWORK, "version": 2,
                          "t": "hello"})
    assert first_answer(world, struct.pack(">I", len(body)) + body)["t"] == "welcome"
    # §1: before step 3 verified the peer, frames of at most 8 KiB
    assert first_answer(world, hello(nickname="x", extra=bytes(8000)))["t"] == "welcome"
    # (the length alone: the doc says it is refused before any of the body is read, and a body left unread
    # when the node closes could turn its close into a reset that loses the error frame)
    too_long = hello(extra=bytes(8200))
    assert len(too_long) - 4 > 8192
    assert first_answer(world, too_long[:4])["t"] == "error"


def authenticated_peer(world: SpecWorld, view: LedgerView) -> tuple[socket.socket, ChatPeer]:
    sock = connect_from(world.spec_ip, world.host, CHAT_PORT)
    peer = ChatPeer(world.key, "spec-peer", f"{world.spec_ip}:{CHAT_PORT}", view, sock.sendall,
                    socket_stream(sock, MAX_FRAME), NETWORK)
    try:
        peer.initiate("ip", world.host)
    except BaseException:
        sock.close()
        raise
    return sock, peer


def seal_padded(peer: ChatPeer, padded: bytes) -> None:
    """A sealed frame whose plaintext is ``padded`` as given (the spec sender pads correctly by itself)."""
    sender = peer.sender
    box = cc.seal_plaintext(sender.key, sender.t2, sender.direction, sender.epoch, sender.counter, padded)
    peer.send("sealed", epoch=sender.epoch, counter=sender.counter, box=box)
    sender.counter += 1


def goodbye_after(peer: ChatPeer) -> str:
    """The reason of the node's sealed goodbye (receipts before it are taken as they come)."""
    peer.pump(lambda: peer.goodbye is not None)
    assert peer.goodbye is not None
    return peer.goodbye


T = 1700000000.5
REFUSED: dict[str, Callable[[ChatPeer, int], None]] = {
    "an integer sent_at": lambda p, i: p.seal(cc.inner("text", id=i, sent_at=1700000000, text="x")),
    "a replayed text id": lambda p, i: p.seal(cc.inner("text", id=1, sent_at=T, text="x")),
    "a receipt of a text never sent": lambda p, i: p.seal(cc.inner("receipt", ids=[50])),
    "padding that is not zero": lambda p, i: seal_padded(p, cc.pad(cc.inner("typing", on=True))[:-1] + b"\x01"),
    "padding past the bucket": lambda p, i: seal_padded(p, cc.pad(cc.inner("typing", on=True)) + bytes(768)),
    "a batch whose ids do not increase": lambda p, i: p.seal(cc.inner("texts", texts=[[i, T, "a"], [i, T, "b"]])),
    "a rotation out of turn": lambda p, i: p.seal(cc.inner("rotate", epoch=5, pub=os.urandom(32))),
    "an epoch never agreed": lambda p, i: p.send("sealed", epoch=2, counter=p.sender.counter + i, box=os.urandom(300)),
}


def refused_three_times(world: SpecWorld, view: LedgerView, refused: Callable[[ChatPeer, int], None]) -> str:
    """A text (receipted), then three frames made by ``refused``: the reason of the node's goodbye."""
    sock, peer = authenticated_peer(world, view)
    with sock:
        peer.send_text("first")                      # id 1, accepted and receipted
        peer.pump(lambda: peer.receipts == [1])      # (a receipt follows the node's UI: wait for it first)
        for number in range(2, 5):
            refused(peer, number)
        reason = goodbye_after(peer)
        assert peer.receipts == [1]
        return reason


def test_three_refused_frames_end_the_session_and_a_float32_sent_at_is_taken(default_node: SpecWorld) -> None:
    world = default_node
    view = world.ledger_view()
    for name, refused in REFUSED.items():
        assert refused_three_times(world, view, refused) == "too many frames were refused", name
    for field, value in (("box", os.urandom(15)), ("epoch", 2**32)):
        sock, peer = authenticated_peer(world, view)
        with sock:
            frame = {"epoch": 0, "counter": 0, "box": os.urandom(300), field: value}
            peer.send("sealed", **frame)
            assert field in goodbye_after(peer), field         # the schema fault, named at once
    sock, peer = authenticated_peer(world, view)
    with sock:
        peer.seal(msgpack.packb({"t": "text", "id": 1, "sent_at": T, "text": "float 32"}, use_single_float=True))
        peer.pump(lambda: peer.receipts == [1])
        # §5.3 batches: one `texts` frame shows each entry and receipts every id
        peer.seal(cc.inner("texts", texts=[[2, T, "batch one"], [3, T, "batch two"]]))
        peer.pump(lambda: sorted(peer.receipts) == [1, 2, 3])
        peer.close()


def test_rotation_rules_repeated_rotate_and_the_thousand_text_bound(tmp_path):
    """§5.5: a repeated `rotate` (same epoch, same half) gets the same `rotate_ack` half again; another half for
    the same epoch is out of turn and answered with nothing; a text past 1 000 under one epoch is refused."""
    with listening_node(tmp_path) as world:
        view = world.ledger_view()
        sock, peer = authenticated_peer(world, view)
        with sock:
            acks: list[dict[str, Any]] = []
            peer._handle = lambda message: (acks.append(message) if message["t"] == "rotate_ack"      # type: ignore
                                            else ChatPeer._handle(peer, message))
            rotate = peer.sender.start_rotation(os.urandom(32))
            peer.seal(rotate)
            peer.seal(rotate)                                            # the same rotate again (a retry)
            peer.pump(lambda: len(acks) == 2)
            assert acks[0] == acks[1] and acks[0]["epoch"] == 1
            peer.seal(cc.inner("rotate", epoch=1, pub=os.urandom(32)))   # another half: out of turn, no answer
            peer.send_text("after the rotations")                        # still under epoch 0 (overlap)
            peer.pump(lambda: peer.receipts == [1])
            assert len(acks) == 2
            peer.sender.finish_rotation(acks[0])
            # 1 000 texts under epoch 1 are taken; the 1 001st is refused, two more end the session
            for number in range(2, 1002):
                peer.seal(cc.inner("text", id=number, sent_at=T, text="x"))
            peer.pump(lambda: 1001 in peer.receipts)
            for number in range(1002, 1005):
                peer.seal(cc.inner("text", id=number, sent_at=T, text="one too many"))
            assert goodbye_after(peer) == "too many frames were refused"
            assert max(peer.receipts) == 1001


def test_a_caller_without_an_address_is_looked_up_by_its_key(default_node: SpecWorld) -> None:
    """§3.2: a hello with an empty address is looked up by the key's fingerprint, and a key whose record has an
    address must call from that address."""
    world = default_node
    view = world.ledger_view()
    for source, accepted in ((world.spec_ip, True), (free_loopback_ip(), False)):
        sock = connect_from(source, world.host, CHAT_PORT)
        with sock:
            peer = ChatPeer(world.key, "spec-peer", "", view, sock.sendall, socket_stream(sock, MAX_FRAME),
                            NETWORK)
            if accepted:
                peer.initiate("ip", world.host)
                assert peer.log == STEPS
                peer.close()
            else:
                with pytest.raises(SpecError, match=f"the ledger binds your key to {world.spec_ip}, not to the "
                                                    f"address this node sees \\({source}\\)"):
                    peer.initiate("ip", world.host)


def test_a_repeated_rotate_ack_is_ignored_while_the_next_rotation_is_under_way(tmp_path):
    """§5.5: "S ignores a second identical rotate_ack for the epoch it already switched to" — R sends one for
    each repeated `rotate`. The node refused it (counted, three ended the chat) once its next rotation had started
    (rotate_every 1)."""
    with listening_node(tmp_path, "--rotate-every", "1") as world:
        node = world.node_process
        sock, peer = authenticated_peer(world, world.ledger_view())
        with sock:
            acks: list[bytes] = []
            held: list[dict[str, Any]] = []

            def answer(message: dict[str, Any]) -> None:
                if message["t"] == "rotate" and message["epoch"] == 1:
                    acks.append(peer.receiver.answer_rotation(message, os.urandom(32)))
                    peer.seal(acks[-1])
                elif message["t"] == "rotate":
                    held.append(message)                                     # answered after the repeats
                else:
                    ChatPeer._handle(peer, message)
            peer._handle = answer                                            # type: ignore[method-assign]
            node.choose_chat()
            node.write("one")                                                # then rotate{1}
            peer.pump(lambda: "one" in peer.texts and len(acks) == 1)
            node.write("two")                                                # under epoch 1, then rotate{2}
            peer.pump(lambda: "two" in peer.texts and len(held) == 1)
            # what R sends when S repeated rotate{1} (ROTATE_ACK_TIMEOUT): the same answer, before rotate{2}'s
            for _ in range(2):
                peer.seal(acks[0])
            peer.seal(peer.receiver.answer_rotation(held[0], os.urandom(32)))
            peer.send_text("still chatting")
            node.write("three")                                              # under epoch 2
            peer.pump(lambda: peer.receipts == [1] and "three" in peer.texts)
            assert peer.goodbye is None
            peer.close()
        node.wait_for("left the chat")
        assert "never asked for" not in node.output()



def test_a_key_at_its_chat_limit_is_refused_at_step_3_before_the_responder_signs(tmp_path):
    """§3.3 "Chats at once per key" (with `--chats-per-peer 2`): the third chat's `auth` gets the documented error,
    and the responder sends no `auth_reply` (it signs nothing)."""
    with listening_node(tmp_path, "--chats-per-peer", "2") as world:
        view = world.ledger_view()
        open_chats = [authenticated_peer(world, view) for _ in range(2)]
        try:
            with pytest.raises(SpecError, match=r"the peer refused: this node already has 2 chats open with your key "
                                                r"\(at most 2 at once\); end one of them before opening another"):
                authenticated_peer(world, view)
        finally:
            for sock, _ in open_chats:
                sock.close()


def test_the_initiator_checks_the_welcome_the_same_way(tmp_path):
    """§3.1: "The initiator checks the `welcome` the same way (and that the version equals the one it asked for)"
    — `p2pchat chat` calling the spec peer, which answers with a bad welcome each time."""
    world = start_world(tmp_path)
    with world.cluster, socket.create_server((world.spec_ip, CHAT_PORT)) as listener:
        listener.settimeout(30)
        for welcome, refusal in (({"address": "[127.0.0.2]:8471"}, "not an IP address and port"),
                                 ({"version": 3}, "version")):
            node = ChatProcess("chat", world.spec_ip, "--host", world.host, "--data-dir", str(world.data_dir))
            try:
                sock, _ = listener.accept()
                with sock:
                    sock.settimeout(20)
                    stream = socket_stream(sock, MAX_FRAME)
                    assert stream.read()["t"] == "hello"
                    sock.sendall(pack("welcome", **{"version": 2, "network": NETWORK, "nickname": "spec-peer",
                                                    "address": f"{world.spec_ip}:{CHAT_PORT}", **welcome}))
                    answer = stream.read()
                    assert answer["t"] == "error" and refusal in answer["reason"], (welcome, answer)
                node.wait_exit()
            finally:
                node.stop()
