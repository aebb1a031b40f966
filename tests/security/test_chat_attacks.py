"""Attacks on a running `p2pchat listen` process (a real ledger network of three hosts: the victim V, an honest
peer H and the attacker M, each with its key registered for its address). After every attack the victim still
serves an honest chat, and nothing an attacker sent is ever shown as a message."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from p2pchat.chat_protocol import CHAT
from p2pchat.events import DeliveryReceipt, MessageReceived, Notice, SessionEnded, StepResult
from p2pchat.foundation import crypto
from p2pchat.foundation.addresses import CHAT_PORT
from p2pchat.foundation.identity import KEY_FILE, Identity
from p2pchat.node import ChatNode
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.chat_procs import ChatProcess, ledger_network
from tests.integration.procs import Cluster
from tests.p2pchat.node_kit import EventLog, wait_until
from tests.security.attack_kit import (
    MitmProxy,
    RawPeer,
    Victim,
    closed_by_peer,
    raw_socket,
    read_until_closed,
)

pytestmark = pytest.mark.slow


def failure(events: list) -> str:
    """The reason of the ``Failed`` event among a raw peer's handshake events (what the victim told it)."""
    failed = [e for e in events if type(e).__name__ == "Failed"]
    assert failed, events
    return failed[0].reason


class World:
    def __init__(self, victim: Victim, honest: ChatNode, honest_ip: str, mallory: Identity, mallory_ip: str,
                 honest_id: Identity) -> None:
        self.victim = victim
        self.honest = honest
        self.honest_log = EventLog(honest)
        self.honest_ip = honest_ip
        self.honest_id = honest_id
        self.mallory = mallory
        self.mallory_ip = mallory_ip

    def open_chat(self, peer: str | None = None) -> str:
        sid = self.honest.open_session(peer or self.victim.ip)
        self.honest.run_all(sid)
        return sid

    def honest_chat_works(self, text: str) -> None:
        """The victim still serves: a fresh honest chat completes and a message arrives."""
        sid = self.open_chat()
        self.honest_log.wait(StepResult, 30, session=sid, step=Step.AGREE_KEY, ok=True)
        self.honest.send_text(sid, text)
        self.victim.wait_new(text)
        self.honest.end_session(sid)
        self.honest_log.wait(SessionEnded, session=sid)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    v, h, m = free_loopback_ip(), free_loopback_ip(), free_loopback_ip()
    with Cluster(tmp_path_factory.mktemp("attacks"), make_identities(3)) as cluster:
        ledger_network(cluster, [v, h, m])
        ids = {ip: Identity.load(cluster.data_dir(ip) / KEY_FILE) for ip in (v, h, m)}
        proc = ChatProcess("listen", "--host", v, "--accept-all", "--step-timeout", "2", "--rotate-every", "3",
                           "--data-dir", str(cluster.data_dir(v)))
        honest = ChatNode(ids[h], host=h, nickname="honest", listen=False, step_timeout=5, rotate_every=3)
        honest.start()
        try:
            proc.wait_for("Waiting for chats")
            yield World(Victim(proc, v, ids[v]), honest, h, ids[m], m, ids[h])
            assert proc.proc.poll() is None, proc.output()
        finally:
            honest.close()
            proc.stop()


@pytest.fixture
def w(world: World) -> World:
    world.victim.mark()
    return world


def test_mitm_that_substitutes_keys_fails_authentication_and_nothing_leaks(w):
    mallory_der = w.mallory.public_der

    def swap_keys(direction: str, msg, frame: bytes) -> bytes:
        return CHAT.encode("key", **{**msg.fields, "key": mallory_der}) if msg.type == "key" else frame

    proxy = MitmProxy(w.victim.ip, (w.victim.ip, CHAT_PORT), w.mallory_ip, swap_keys).start()
    try:
        sid = w.open_chat(f"{w.victim.ip}:{proxy.port}")       # the honest peer dials the victim's address
        failed = w.honest_log.wait(StepResult, 20, session=sid, ok=False)
        assert failed.step == Step.SWAP_KEYS and "is not the key the ledger binds to" in failed.detail
        w.honest_log.wait(SessionEnded, session=sid)
        wait_until(lambda: "sealed" not in proxy.types() and ("up", "key") in proxy.seen, 5)
        assert "sealed" not in proxy.types()                      # no message ever crossed the proxy
        assert not w.honest_log.all(StepResult, session=sid, step=Step.AUTHENTICATE)
    finally:
        proxy.close()
    w.honest_chat_works("after the key-swapping proxy")


def test_mitm_that_only_relays_is_caught_by_the_address_check_and_nothing_leaks(w):
    proxy = MitmProxy(w.victim.ip, (w.victim.ip, CHAT_PORT), w.mallory_ip, lambda d, m, f: f).start()
    try:
        sid = w.open_chat(f"{w.victim.ip}:{proxy.port}")
        failed = w.honest_log.wait(StepResult, 20, session=sid, ok=False)
        assert failed.step == Step.SWAP_KEYS
        out = w.victim.wait_new("✗ 2 Swap public keys")
        assert f"not the key the ledger binds to {w.mallory_ip}" in out
        assert "sealed" not in proxy.types()
    finally:
        proxy.close()
    w.honest_chat_works("after the relaying proxy")


def test_a_peer_whose_address_is_bound_to_another_key_is_refused_at_step_two(w):
    impostor = RawPeer(w.honest_id, w.mallory_ip, w.victim)     # honest's key, from mallory's address
    try:
        impostor.run_step(Step.CONNECT)
        told = failure(impostor.run_step(Step.SWAP_KEYS))
        assert "the key you sent is not the one the ledger binds to your address" in told
    finally:
        impostor.close()
    out = w.victim.wait_new("✗ 2 Swap public keys")
    assert f"is not the key the ledger binds to {w.mallory_ip}" in out
    w.honest_chat_works("after the impostor")


def test_a_peer_from_an_address_without_a_record_is_refused(w):
    stranger_ip = free_loopback_ip()
    stranger = RawPeer(make_identities(4)[3], stranger_ip, w.victim)
    try:
        stranger.run_step(Step.CONNECT)
        assert "has no record for your address" in failure(stranger.run_step(Step.SWAP_KEYS))
    finally:
        stranger.close()
    assert "no ledger record for" in w.victim.wait_new("✗ 2 Swap public keys")


def test_a_replayed_handshake_fails_authentication_even_from_the_right_address(w):
    captured: list[bytes] = []
    sid = w.honest.open_session(w.victim.ip)
    w.honest.set_wire_hook(sid, lambda frame: captured.append(frame) or frame)
    w.honest.run_all(sid)
    w.honest_log.wait(StepResult, 30, session=sid, step=Step.AGREE_KEY, ok=True)
    w.honest.end_session(sid)
    w.honest_log.wait(SessionEnded, session=sid)
    w.victim.wait_new(" ended: ")
    w.victim.mark()
    # The attacker replays the recorded frames from the honest peer's own address, answering nothing itself.
    replay = RawPeer(w.mallory, w.honest_ip, w.victim)
    try:
        answers = []
        for frame in captured[:6]:            # hello, key, key_ok, auth, auth_ok, confirm
            replay.send_raw(frame)
            answers += closed_by_peer(replay.conn, timeout=1.0) if frame is captured[5] else []
        answers += closed_by_peer(replay.conn, timeout=3.0)
    finally:
        replay.close()
    out = w.victim.wait_new("✗ 3 Authenticate")
    assert "signature over this session's transcript does not verify" in out
    assert not any(a.type in ("auth_reply", "confirm_reply") for a in answers)
    assert "✓ 4 Agree AES key" not in out


def test_replayed_and_bit_flipped_message_frames_are_refused_never_shown_and_the_third_ends_the_chat(w):
    sid = w.open_chat()
    w.honest_log.wait(StepResult, 30, session=sid, step=Step.AGREE_KEY, ok=True)
    captured: list[bytes] = []
    w.honest.set_wire_hook(sid, lambda frame: captured.append(frame) or frame)
    w.honest.send_text(sid, "pay 10 coins")
    w.victim.wait_new("pay 10 coins")
    w.honest.set_wire_hook(sid, None)
    w.honest.inject_frame(sid, captured[0])                    # replay: the first refusal is reported
    assert "replayed" in w.victim.wait_new("! a message was replayed")

    def flip(where: str):
        done: list[bool] = []

        def hook(frame: bytes) -> bytes:
            if done:
                return frame
            done.append(True)
            msg = CHAT.decode(frame[4:])
            box = bytearray(msg["box"])
            if where == "ciphertext":
                box[7] ^= 0x10
            else:
                box[-1] ^= 0x01
            return CHAT.encode("sealed", epoch=msg["epoch"], counter=msg["counter"], box=bytes(box))
        return hook

    w.victim.mark()
    w.honest.set_wire_hook(sid, flip("ciphertext"))            # the second: refused without a new notice
    w.honest.send_text(sid, "altered ciphertext")
    w.honest.set_wire_hook(sid, None)
    w.honest.send_text(sid, "the real one")
    out = w.victim.wait_new("the real one")
    assert "altered" not in out and "! " not in out
    w.honest.set_wire_hook(sid, flip("tag"))                   # the third ends the chat, with one sentence
    w.honest.send_text(sid, "altered tag")
    out = w.victim.wait_new("frames were refused; the chat was ended")
    ended = w.honest_log.wait(SessionEnded, 20, session=sid)
    assert "too many frames were refused" in ended.reason       # the honest side is told, authenticated
    shown = w.victim.proc.output()
    assert shown.count("pay 10 coins") == 1 and "altered ciphertext" not in shown and "altered tag" not in shown


def test_a_step_out_of_order_is_refused_with_the_step_that_comes_first(w):
    peer = RawPeer(w.mallory, w.mallory_ip, w.victim)
    try:
        peer.run_step(Step.CONNECT)
        peer.send_raw(CHAT.encode("auth", sig=crypto.random_bytes(384), ledgers="agree"))   # step 3 before step 2
        frames = closed_by_peer(peer.conn)
    finally:
        peer.close()
    assert any(f.type == "error" and "out of order" in f["reason"] for f in frames)
    out = w.victim.wait_new("✗ 2 Swap public keys")
    assert "before step 2 Swap public keys was finished" in out
    w.honest_chat_works("after the out-of-order steps")


MALFORMED = {
    "truncated": struct.pack(">I", 200) + b"\x81\xa1t\xa5hello",      # a frame cut short, then end of stream
    "oversized": struct.pack(">I", 100 * 1024 * 1024),                  # announces 100 MB
    "invalid msgpack": struct.pack(">I", 16) + bytes([0xC1]) * 16,      # 0xc1 is never valid msgpack
    "not a map": struct.pack(">I", 3) + b"\x92\x01\x02",
    "unknown type": struct.pack(">I", 9) + b"\x81\xa1t\xa5bogus",
    "random bytes": crypto.random_bytes(4096),
}
ERROR_EXPECTED = {"oversized": b"over the", "invalid msgpack": b"not valid msgpack", "not a map": b"should be a map",
                  "unknown type": b"unknown message type"}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_frames_close_only_that_connection(w, name):
    sock = raw_socket(w.victim, w.mallory_ip)
    try:
        sock.sendall(MALFORMED[name])
        if name in ("truncated", "random bytes"):
            sock.shutdown(1)                   # nothing more will come
        answer = read_until_closed(sock)       # the victim closes (after an error frame where it can say why)
    finally:
        sock.close()
    if name in ERROR_EXPECTED:
        assert ERROR_EXPECTED[name] in answer
    w.honest_chat_works(f"after the {name} frame")


def test_a_peer_silent_mid_handshake_times_out_alone(w):
    peer = RawPeer(w.mallory, w.mallory_ip, w.victim)
    try:
        peer.run_step(Step.CONNECT)
        peer.send_raw(CHAT.encode("key", key=w.mallory.public_der, nonce=crypto.random_bytes(32),
                                  ephemeral=crypto.random_bytes(32), final_height=0, final_hash=bytes(32),
                                  tip_height=0, tip_hash=bytes(32)))                               # then silence
        w.honest_chat_works("while someone is silent")
        out = w.victim.wait_new("went silent during step 2 Swap public keys", timeout=20)
        assert "✗ 2 Swap public keys" in out
        assert closed_by_peer(peer.conn) is not None
    finally:
        peer.close()


def test_both_sides_sending_across_many_rotations_lose_nothing(w):
    sid = w.open_chat()
    w.honest_log.wait(StepResult, 30, session=sid, step=Step.AGREE_KEY, ok=True)
    w.victim.wait_new(" is ready (path: ")
    ready = w.victim.proc.output().count(" is ready (path: ")
    w.victim.proc.choose_chat(ready)                                 # the latest chat: this one
    w.victim.proc.write(*(f"back {i} – é" for i in range(30)))     # the victim types while it receives
    for i in range(30):
        w.honest.send_text(sid, f"burst {i} – ü")
        if i % 3 == 2:
            wait_until(lambda: w.honest.pending_receipts(sid) == 0, 10)
    w.victim.wait_new("burst 29 – ü")
    wait_until(lambda: len(w.honest_log.all(MessageReceived, session=sid)) == 30, 20)
    out = w.victim.since()
    assert [line.split(": ", 1)[1] for line in out.splitlines() if ": burst " in line] == \
        [f"burst {i} – ü" for i in range(30)]
    assert [m.text for m in w.honest_log.all(MessageReceived, session=sid)] == [f"back {i} – é" for i in range(30)]
    assert out.count("key rotated") >= 16 and "refused" not in out
    assert not w.honest_log.all(Notice, session=sid, kind="refused")
    assert w.honest.session_info(sid).key_epoch >= 8
    w.honest.end_session(sid)
    w.honest_log.wait(SessionEnded, session=sid)


def test_a_one_mebibyte_message_of_non_ascii_text_arrives_whole(w):
    sid = w.open_chat()
    w.honest_log.wait(StepResult, 30, session=sid, step=Step.AGREE_KEY, ok=True)
    big = "ü" * (512 * 1024)                     # 1 MiB of UTF-8
    msg_id = w.honest.send_text(sid, big)
    w.honest_log.wait(DeliveryReceipt, 30, session=sid, msg_id=msg_id)
    w.victim.wait_new(big[:64])
    assert any(line.endswith(": " + big) for line in w.victim.since().splitlines())
    w.honest.end_session(sid)
    w.honest_log.wait(SessionEnded, session=sid)
