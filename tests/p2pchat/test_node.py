"""The chat node with real sockets on 127.x addresses: steps, refusals, timeouts, messages, rotation, shutdown.

The peers find each other through a fixed directory here; tests/integration/test_chat_*.py use real ledger nodes.
"""

from __future__ import annotations

import socket
import threading

import pytest

from p2pchat.admission import Admission
from p2pchat.chat_protocol import CHAT, PROTOCOL_VERSION
from p2pchat.events import (
    DeliveryReceipt,
    IncomingChat,
    MessageReceived,
    Notice,
    PeerTyping,
    SessionEnded,
    StepRefused,
    StepResult,
)
from p2pchat.foundation.errors import UserError
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip, make_identities
from tests.p2pchat.node_kit import EventLog, connect_all, entry, make_peer, pair, wait_until


def chat_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(("chat", "chatnode"))]


def test_run_all_does_the_four_steps_on_both_sides_and_messages_get_receipts(identities):
    with pair(identities) as (alice, bob, _):
        sid, bsid = connect_all(alice, bob)
        assert [e.step for e in alice.log.all(StepResult, ok=True)] == list(Step)
        assert [e.step for e in bob.log.all(StepResult, ok=True)] == list(Step)
        info = alice.node.session_info(sid)
        assert info.path == "direct" and info.peer_nickname == "bob" and info.key_epoch == 0
        assert info.safety_number == bob.node.session_info(bsid).safety_number
        assert info.peer_fingerprint.replace(" ", "") == identities[1].fingerprint.hex()[:32]
        msg_id = alice.node.send_text(sid, "hello bob")
        got = bob.log.wait(MessageReceived, text="hello bob")
        assert got.sender == "alice" and got.session == bsid
        alice.log.wait(DeliveryReceipt, msg_id=msg_id)
        bob.node.send_text(bsid, "hi alice")
        assert alice.log.wait(MessageReceived, text="hi alice").sender == "bob"


def test_steps_one_at_a_time_refuse_a_step_out_of_order_naming_the_one_first(identities):
    with pair(identities) as (alice, bob, _):
        sid = alice.node.open_session(f"{bob.ip}:{bob.node.port}")
        alice.node.run_step(sid, Step.AUTHENTICATE)
        refused = alice.log.wait(StepRefused, step=Step.AUTHENTICATE)
        assert "1 Connect" in refused.reason or "step 1" in refused.reason
        alice.node.run_step(sid, Step.CONNECT)
        alice.log.wait(StepResult, step=Step.CONNECT, ok=True)
        alice.node.run_step(sid, Step.AGREE_KEY)
        refused = alice.log.wait(StepRefused, step=Step.AGREE_KEY)
        assert "2 (Swap public keys)" in refused.reason
        for step in (Step.SWAP_KEYS, Step.AUTHENTICATE, Step.AGREE_KEY):
            alice.node.run_step(sid, step)
            alice.log.wait(StepResult, step=step, ok=True)
        alice.node.run_step(sid, Step.SWAP_KEYS)
        assert "already agreed" in alice.log.wait(StepRefused, step=Step.SWAP_KEYS).reason
        assert not alice.log.all(SessionEnded)


def test_callee_is_asked_and_a_rejection_ends_both_sides(identities):
    with pair(identities, bob={"auto_accept": False}) as (alice, bob, _):
        sid = alice.node.open_session(bob.ip + f":{bob.node.port}")
        alice.node.run_all(sid)
        asked = bob.log.wait(IncomingChat)
        assert asked.nickname == "alice" and asked.peer_address.startswith(alice.ip)
        bob.node.accept(asked.session, False)
        failed = alice.log.wait(StepResult, step=Step.CONNECT, ok=False)
        assert "declined" in failed.detail
        alice.log.wait(SessionEnded, session=sid)
        bob.log.wait(SessionEnded, session=asked.session)


def test_callee_that_accepts_gets_the_chat(identities):
    with pair(identities, bob={"auto_accept": False}) as (alice, bob, _):
        sid = alice.node.open_session(f"{bob.ip}:{bob.node.port}")
        alice.node.run_all(sid)
        asked = bob.log.wait(IncomingChat)
        bob.node.accept(asked.session, True)
        alice.log.wait(StepResult, step=Step.AGREE_KEY, ok=True)
        bob.node.accept(asked.session, True)      # a second answer is refused, the chat goes on
        bob.log.wait(StepRefused, session=asked.session, step=Step.CONNECT)
        alice.node.send_text(sid, "thanks")
        bob.log.wait(MessageReceived, text="thanks")


def test_a_peer_whose_address_the_ledger_binds_to_another_key_fails_step_two(identities):
    carol_id = identities[2]
    with pair(identities, bob={"register": False}) as (alice, bob, directory):
        directory.add(entry(carol_id, "carol", bob.ip, bob.node.port))   # the ledger says: bob's IP is carol's
        sid = alice.node.open_session(f"{bob.ip}:{bob.node.port}")
        alice.node.run_all(sid)
        failed = alice.log.wait(StepResult, step=Step.SWAP_KEYS, ok=False)
        assert "is not the key the ledger binds to" in failed.detail
        ended = alice.log.wait(SessionEnded, session=sid)
        assert not ended.clean
        assert not alice.log.all(StepResult, step=Step.AUTHENTICATE)


def test_a_peer_without_a_ledger_record_fails_step_two_with_the_reason(identities):
    with pair(identities, bob={"register": False}) as (alice, bob, _):
        sid = alice.node.open_session(f"{bob.ip}:{bob.node.port}")
        alice.node.run_all(sid)
        failed = alice.log.wait(StepResult, step=Step.SWAP_KEYS, ok=False)
        assert "no record" in failed.detail


def test_unreachable_peer_fails_step_one_with_the_reason(identities):
    with pair(identities) as (alice, _bob, _):
        ip = free_loopback_ip()
        sid = alice.node.open_session(f"{ip}:9")
        alice.node.run_all(sid)
        failed = alice.log.wait(StepResult, step=Step.CONNECT, ok=False)
        assert "cannot reach" in failed.detail and "Connection refused" in failed.detail
        assert f"nothing answered at {ip}:9" in failed.detail
        assert "relay" not in failed.detail          # a call by address never tries one


def test_a_peer_silent_mid_handshake_ends_its_session_only(identities):
    with pair(identities, bob={"step_timeout": 0.5, "handshake_timeout": 1.0}) as (alice, bob, _):
        silent = socket.create_connection((bob.ip, bob.node.port), timeout=5)
        silent.sendall(CHAT.encode("hello", version=PROTOCOL_VERSION, network="p2pchat", nickname="mallory",
                                   address="127.0.0.9:8471"))
        sid, bsid = connect_all(alice, bob)               # served meanwhile
        ended = wait_until(lambda: [e for e in bob.log.all(SessionEnded) if e.session != bsid], 10)
        assert "unfinished" in ended[0].reason or "silent" in ended[0].reason
        alice.node.send_text(sid, "still here")
        bob.log.wait(MessageReceived, text="still here")
        silent.close()


def test_a_chat_accepted_then_left_idle_blames_the_caller_on_both_sides(identities):
    # The callee answers at once, before its accept deadline (1 s); the handshake deadline (1.5 s) then passes
    # between steps 1 and 2, which is the caller's turn: nobody is told the callee did not answer.
    timeouts = {"accept_timeout": 1.0, "handshake_timeout": 1.5, "step_timeout": 1.0}
    with pair(identities, **timeouts, bob={"auto_accept": False}) as (alice, bob, _):
        sid = alice.node.open_session(f"{bob.ip}:{bob.node.port}")
        alice.node.run_step(sid, Step.CONNECT)
        bob.node.accept(bob.log.wait(IncomingChat).session, True)
        alice.log.wait(StepResult, step=Step.CONNECT, ok=True)
        caller, callee = alice.log.wait(SessionEnded, session=sid), bob.log.wait(SessionEnded)
        for reason in (caller.reason, callee.reason):
            assert "left the handshake unfinished at step 2 Swap public keys" in reason, reason
            assert "did not accept" not in reason and "did not answer" not in reason, reason
        # whichever clock ran out first, the caller's text says it was its own turn
        assert "you left the handshake unfinished" in caller.reason
        assert "caller" in callee.reason


def test_a_connection_that_never_says_hello_is_dropped(identities):
    with pair(identities, bob={"step_timeout": 0.3}) as (_alice, bob, _):
        mute = socket.create_connection((bob.ip, bob.node.port), timeout=5)
        assert mute.recv(100) == b""            # closed by bob after the step timeout
        mute.close()


def test_rotation_both_sides_sending_nothing_lost_nothing_refused(identities):
    with pair(identities, rotate_every=3) as (alice, bob, _):
        sid, bsid = connect_all(alice, bob)
        n = 40

        def send(node, session, who):
            # Bursts of three, then wait for the receipts: a rotation completes between bursts (within a burst
            # the sender keeps using the current key until the peer acknowledges the new one).
            for i in range(n):
                node.send_text(session, f"{who} {i}")
                if i % 3 == 2:
                    wait_until(lambda: node.pending_receipts(session) == 0, 10, step=alice.log.pump)

        threads = [threading.Thread(target=send, args=(alice.node, sid, "a")),
                   threading.Thread(target=send, args=(bob.node, bsid, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_until(lambda: len(bob.log.all(MessageReceived)) == n and len(alice.log.all(MessageReceived)) == n, 20)
        assert [m.text for m in bob.log.all(MessageReceived)] == [f"a {i}" for i in range(n)]
        assert [m.text for m in alice.log.all(MessageReceived)] == [f"b {i}" for i in range(n)]
        wait_until(lambda: len(alice.log.all(DeliveryReceipt)) == n and len(bob.log.all(DeliveryReceipt)) == n, 20)
        assert not alice.log.all(Notice, kind="refused") and not bob.log.all(Notice, kind="refused")
        assert len(alice.log.all(Notice, kind="rotation")) >= 2 * (n // 3) - 4
        assert alice.node.session_info(sid).key_epoch >= n // 3 - 1


def test_non_ascii_text_and_a_one_mebibyte_message_arrive_intact(identities):
    with pair(identities) as (alice, bob, _):
        sid, _ = connect_all(alice, bob)
        text = "Grüße, 你好, привет, 🙂 — ✓"
        alice.node.send_text(sid, text)
        assert bob.log.wait(MessageReceived, text=text)
        big = "é" * (512 * 1024)                 # 1 MiB of UTF-8
        msg_id = alice.node.send_text(sid, big)
        assert bob.log.wait(MessageReceived, msg_id=msg_id, timeout=20).text == big
        with pytest.raises(UserError, match="at most"):
            alice.node.send_text(sid, big + "x")


def test_typing_sends_only_changes_of_state(identities):
    with pair(identities) as (alice, bob, _):
        sid, _ = connect_all(alice, bob)
        for _ in range(20):
            alice.node.set_typing(sid, True)
        alice.node.set_typing(sid, False)
        bob.log.wait(PeerTyping, typing=False)
        assert [e.typing for e in bob.log.all(PeerTyping)] == [True, False]


def test_sending_before_the_chat_is_ready_says_which_step_is_missing(identities):
    with pair(identities) as (alice, bob, _):
        sid = alice.node.open_session(bob.ip)
        with pytest.raises(UserError, match="4 Agree AES key"):
            alice.node.send_text(sid, "too early")


def test_end_session_says_goodbye_and_the_peer_sees_a_clean_end(identities):
    with pair(identities) as (alice, bob, _):
        sid, bsid = connect_all(alice, bob)
        alice.node.end_session(sid)
        assert alice.log.wait(SessionEnded, session=sid).clean
        ended = bob.log.wait(SessionEnded, session=bsid)
        assert ended.clean and "alice left the chat" in ended.reason


def test_a_vanished_peer_ends_the_session_with_a_clear_reason(identities):
    with pair(identities) as (alice, bob, _):
        sid, bsid = connect_all(alice, bob)
        bob_session = bob.node._get(bsid)
        bob_session.link.close()                    # the connection drops without a goodbye
        ended = alice.log.wait(SessionEnded, session=sid)
        assert not ended.clean and "closed the connection" in ended.reason


def test_close_says_goodbye_and_joins_every_thread(identities):
    with pair(identities) as (alice, bob, _):
        _, bsid = connect_all(alice, bob)
        alice.node.close()
        ended = bob.log.wait(SessionEnded, session=bsid)
        assert ended.clean
    assert chat_threads() == []


def test_many_sessions_at_once_on_one_node():
    ids = make_identities(3)
    # Ten handshakes at once from one address is over the default limits on strangers (see test_admission).
    roomy = Admission(per_address=10, per_minute=40)
    with pair(ids, bob={"admission": roomy}) as (alice, bob, directory):
        carol = make_peer(ids[2], "carol", directory)
        try:
            sessions = []
            for _ in range(10):
                for caller in (alice, carol):
                    sid = caller.node.open_session(f"{bob.ip}:{bob.node.port}")
                    caller.node.run_all(sid)
                    sessions.append((caller, sid))
            wait_until(lambda: len(bob.log.all(StepResult, step=Step.AGREE_KEY, ok=True)) == 20, 60)
            for caller, sid in sessions:
                caller.log.wait(StepResult, session=sid, step=Step.AGREE_KEY, ok=True)
                caller.node.send_text(sid, f"from {sid}")
            wait_until(lambda: len(bob.log.all(MessageReceived)) == 20, 20)
        finally:
            carol.node.close()


def test_events_log_helper_sees_node_errors_for_a_taken_port(identities):
    with pair(identities) as (_alice, bob, directory):
        from p2pchat.node import ChatNode

        clash = ChatNode(identities[2], host=bob.ip, port=bob.node.port, nickname="x", directory=directory)
        with pytest.raises(UserError, match="cannot listen"):
            clash.start()
        log = EventLog(clash)
        log.pump()
        assert "cannot listen" in log.events[0].text
        clash.close()


def test_a_burst_of_texts_read_at_once_is_acknowledged_by_fewer_receipt_frames_every_id_receipted(identities):
    with pair(identities, rotate_every=1000) as (alice, bob, _):
        sid, bsid = connect_all(alice, bob)
        sent_by_bob: list[bytes] = []
        bob.node.set_wire_hook(bsid, lambda frame: sent_by_bob.append(frame) or frame)
        n = 40
        bob_session = bob.node._get(bsid)
        alice_session = alice.node._get(sid)
        # Bob's reader waits for his session lock while the whole burst lands in his socket, so it reads the
        # texts in (at most) a couple of recv() calls: the receipt waits for the end of what was read.
        with bob_session.lock:
            ids = [alice.node.send_text(sid, f"burst {i}") for i in range(n)]
            wait_until(lambda: not alice_session.outbox and not alice_session.partial, 10)
        wait_until(lambda: alice.node.pending_receipts(sid) == 0, 10, step=bob.log.pump)
        assert [e.msg_id for e in alice.log.all(DeliveryReceipt)] == ids
        assert [m.text for m in bob.log.all(MessageReceived)] == [f"burst {i}" for i in range(n)]
        assert 1 <= len(sent_by_bob) <= n // 4            # receipts only (no rotation at this rotate_every)
        assert not alice.log.all(Notice, kind="refused")


def test_texts_sent_one_at_a_time_are_each_receipted_at_once(identities):
    with pair(identities) as (alice, bob, _):
        sid, bsid = connect_all(alice, bob)
        sent_by_bob: list[bytes] = []
        bob.node.set_wire_hook(bsid, lambda frame: sent_by_bob.append(frame) or frame)
        for i in range(3):
            msg_id = alice.node.send_text(sid, f"one {i}")
            alice.log.wait(DeliveryReceipt, msg_id=msg_id)
            assert alice.node.pending_receipts(sid) == 0
            assert len(sent_by_bob) == i + 1              # its own receipt frame, not held back for later texts


def test_a_listener_following_its_address_moves_its_socket_when_the_address_changes(identities):
    """--host auto: the listening socket follows this machine's address (the ledger node publishes the record);
    a caller reaches the same running node at the new address, and nothing answers at the old one."""
    from p2pchat.foundation.host_address import HostWatch
    from p2pchat.peer_directory import FixedDirectory

    old_ip, new_ip = free_loopback_ip(), free_loopback_ip()
    interfaces = {"eth0": [old_ip]}
    watch = HostWatch(addresses=lambda: dict(interfaces), route_source=lambda: None, interval=0.1)
    directory = FixedDirectory()
    alice = make_peer(identities[0], "alice", directory)
    bob = make_peer(identities[1], "bob", directory, ip="127.0.0.1", register=False, auto_accept=True,
                    host_watch=watch)
    try:
        assert bob.node.host == old_ip
        port = bob.node.port
        interfaces["eth0"] = [new_ip]
        wait_until(lambda: bob.node.host == new_ip, what="bob's node to move")
        directory.add(entry(identities[1], "bob", new_ip, port))     # the record its ledger node published
        bob.ip = new_ip
        connect_all(alice, bob)
        with pytest.raises(OSError):
            socket.create_connection((old_ip, port), timeout=2).close()
    finally:
        alice.node.close()
        bob.node.close()
