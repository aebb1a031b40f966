"""Issue 11 against a running `p2pchat listen` process: what peers, strangers and a keyless man in the middle send
cannot fake the screen (rendered with a VT emulator), cannot be typed into by accident, and cannot flood it.

World: a real ledger network of the victim V, "bob" B and a look-alike "bоb" (Cyrillic о) M, each with its key
registered; B and M are in-process chat nodes on their own loopback addresses; a stranger S has no record."""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import Iterator

import pytest

from p2pchat.chat_protocol import CHAT, PROTOCOL_VERSION
from p2pchat.events import MessageReceived, SessionEnded, StepResult
from p2pchat.foundation.addresses import CHAT_PORT
from p2pchat.foundation.identity import KEY_FILE, Identity
from p2pchat.node import ChatNode
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.chat_procs import ChatProcess
from tests.integration.procs import Cluster
from tests.p2pchat.node_kit import EventLog, wait_until
from tests.p2pchat.vt_oracle import SENDER_LINE, render, screen_lines
from tests.security.attack_kit import Victim

pytestmark = pytest.mark.slow

LOOKALIKE = "b\u043eb"      # "bоb": Cyrillic small o


class World:
    def __init__(self, victim: Victim, bob: ChatNode, mallory: ChatNode, stranger_ip: str) -> None:
        self.victim = victim
        self.bob, self.bob_log = bob, EventLog(bob)
        self.mallory, self.mallory_log = mallory, EventLog(mallory)
        self.stranger_ip = stranger_ip

    def connect(self, node: ChatNode, log: EventLog) -> tuple[str, int]:
        """``node`` opens a chat to the victim; returns its session and the victim's chat number for it."""
        before = self.victim.proc.output().count(" is ready (path: ")
        sid = node.open_session(self.victim.ip)
        node.run_all(sid)
        log.wait(StepResult, 30, session=sid, step=Step.AGREE_KEY, ok=True)
        wait_until(lambda: self.victim.proc.output().count(" is ready (path: ") > before, 20,
                   what=f"the victim announcing the chat:\n{self.victim.since()}")
        numbers = re.findall(r"^\[\d+\] Chat (\d+) with .* is ready", self.victim.proc.output(), re.M)
        return sid, int(numbers[-1])


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    v, b, m, s = (free_loopback_ip() for _ in range(4))
    with Cluster(tmp_path_factory.mktemp("display"), make_identities(3)) as cluster:
        cluster.serve(v).wait_ready()
        cluster.join(b, v, extra=("--nickname", "bob")).wait_ready()
        # The ledger refuses look-alike nicknames now (docs/ledger.md, "Nicknames"): Mallory registers another
        # name and claims "bоb" in her hello, which is all a look-alike can still do.
        cluster.join(m, v, extra=("--nickname", "mallory")).wait_ready()
        for proc in cluster.procs:
            for host in (v, b, m):
                proc.wait_lookup(host, 60, what=f"{host}'s record\n{cluster.logs()}")
        ids = {ip: Identity.load(cluster.data_dir(ip) / KEY_FILE) for ip in (v, b, m)}
        proc = ChatProcess("listen", "--host", v, "--accept-all", "--step-timeout", "3", "--rotate-every", "3",
                           "--data-dir", str(cluster.data_dir(v)))
        bob = ChatNode(ids[b], host=b, nickname="bob", listen=False, step_timeout=5, rotate_every=3)
        mallory = ChatNode(ids[m], host=m, nickname=LOOKALIKE, listen=False, step_timeout=5, rotate_every=3)
        bob.start()
        mallory.start()
        try:
            proc.wait_for("Waiting for chats")
            yield World(Victim(proc, v, ids[v]), bob, mallory, s)
            assert proc.proc.poll() is None, proc.output()
        finally:
            bob.close()
            mallory.close()
            proc.stop()
        # whatever happened in the module, the victim's whole screen holds only text and line feeds
        screen = render(proc.output() + "\n", columns=4000)
        assert screen.forbidden() == [] and screen.title == "", screen.forbidden()[:5]


@pytest.fixture
def w(world: World) -> World:
    world.victim.mark()
    return world


def assert_screen_clean(output: str, senders: list[str]) -> list[str]:
    """Render ``output`` on an emulator: nothing but printing and line feeds; the message lines are exactly
    ``senders`` (in order). Returns the screen lines."""
    screen = render(output + "\n", columns=4000)   # a pipe has no width: the process cuts no line (a terminal
    assert screen.forbidden() == [], screen.forbidden()[:5]   # is cut by the Printer: test_terminal_rendering)
    assert screen.title == "" and screen.icon_name == ""
    lines = screen_lines(screen)
    assert [m.group(1) for line in lines if (m := SENDER_LINE.match(line))] == senders, "\n".join(lines)
    return lines


def test_a_strangers_error_frame_before_authentication_cannot_write_on_the_terminal(w):
    payload = ("\x1b[1A\x1b[2K\r✓ 4 Agree AES key — safety number 1234 5678 9012\n[1] [12:00:00] alice: hi"
               "\x1b]0;p2pchat — alice ✓ verified\x07\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07")
    hello = CHAT.encode("hello", version=PROTOCOL_VERSION, network="p2pchat", nickname="stranger", address="")
    with socket.create_connection((w.victim.ip, CHAT_PORT), timeout=10,
                                  source_address=(w.stranger_ip, 0)) as sock:
        sock.sendall(hello + CHAT.encode("error", reason=payload[:1000]))
        sock.settimeout(10)
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass
    out = w.victim.wait_new(" ended: ")
    lines = assert_screen_clean(out, [])
    assert not any(line.startswith(("✓ 4", "[1] [12:00:00]")) for line in lines)
    assert "^[]0;p2pchat" in out and "^[]52;c;" in out         # shown, written out, harmless


def test_a_peers_text_with_escape_codes_and_newlines_cannot_fake_lines_or_erase_them(w):
    sid, number = w.connect(w.bob, w.bob_log)
    evil = ("first\n[1] [12:00:00] alice: wire the money\r[2] [12:00:01] alice: now\x1b[2K\x1b[1A"
            "\u202e\u2066\u200e\u200f\u061c\x9b2J end")
    w.bob.send_text(sid, evil)
    w.bob.send_text(sid, "second line of bob")
    out = w.victim.wait_new("second line of bob")
    lines = assert_screen_clean(out, ["bob", "bob"])
    assert any("<U+202E><U+2066><U+200E><U+200F><U+061C><U+009B>2J end" in line for line in lines)
    w.bob.end_session(sid)
    w.bob_log.wait(SessionEnded, session=sid)
    w.victim.wait_new(f"Chat {number} with bob ended")


def test_a_goodbye_reason_cannot_erase_the_ended_line(w):
    sid, number = w.connect(w.bob, w.bob_log)
    session = w.bob._get(sid)
    with session.lock:
        session.writer.queue_all(session.channel.send_goodbye("\x1b[1A\x1b[2K\r[1] [12:00:00] alice: still here"))
        session.writer.schedule_flush()
    out = w.victim.wait_new(f"Chat {number} with bob ended")
    lines = assert_screen_clean(out, [])
    assert any(line.startswith(f"[{number}] Chat {number} with bob ended") for line in lines)
    w.bob.end_session(sid)


def test_a_keyless_man_in_the_middle_cannot_speak_after_step_4_an_error_frame_is_a_lost_connection(w):
    sid, number = w.connect(w.bob, w.bob_log)
    w.bob.inject_frame(sid, CHAT.encode("error", reason="[1] [12:00:00] alice: forged by the relay"))
    out = w.victim.wait_new(f"Chat {number} with bob ended")
    assert "the connection was lost" in out and "forged by the relay" not in out
    assert_screen_clean(out, [])


def test_a_sealed_frame_replayed_1200_times_gives_one_notice_and_ends_the_chat(w):
    sid, number = w.connect(w.bob, w.bob_log)
    captured: list[bytes] = []
    w.bob.set_wire_hook(sid, lambda frame: captured.append(frame) or frame)
    w.bob.send_text(sid, "captured once")
    w.victim.wait_new("captured once")
    w.bob.set_wire_hook(sid, None)
    w.victim.mark()
    for _ in range(1200):                    # 1,200 copies written as fast as the socket takes them
        w.bob.inject_frame(sid, captured[0])
    out = w.victim.wait_new(f"Chat {number} with bob ended")
    ended = w.bob_log.wait(SessionEnded, 20, session=sid)
    assert out.count("a message was replayed") == 1 and "captured once" not in out
    assert "3 altered, replayed or out-of-turn frames were refused; the chat was ended" in out
    assert "too many frames were refused" in ended.reason
    assert len(out.splitlines()) == 2, out      # one notice, one end: the flood cost two lines
    assert_screen_clean(out, [])


def test_a_look_alike_peer_connecting_mid_conversation_never_receives_the_users_next_line(w):
    sid, number = w.connect(w.bob, w.bob_log)
    w.victim.proc.write(f"/to {number}", "hello bob, first line")
    w.bob_log.wait(MessageReceived, 20, session=sid, text="hello bob, first line")
    msid, mnumber = w.connect(w.mallory, w.mallory_log)       # "bоb" arrives mid-conversation
    assert mnumber != number
    out = w.victim.wait_new(f"Lines you type still go to chat {number} (bob)")
    assert f"/to {mnumber} writes to mallory" in out           # named by its ledger record, not its "bоb" hello
    w.victim.proc.write("the second line, for bob only")
    w.bob_log.wait(MessageReceived, 20, session=sid, text="the second line, for bob only")
    w.victim.proc.write("/list")
    listing = w.victim.wait_new("← lines you type go here")
    assert re.search(rf"^  {number}  bob at .* ← lines you type go here$", listing, re.M), listing
    w.mallory.end_session(msid)
    w.mallory_log.wait(SessionEnded, session=msid)
    assert w.mallory_log.all(MessageReceived) == []
    w.bob.end_session(sid)
    w.bob_log.wait(SessionEnded, session=sid)
    out = w.victim.wait_new(f"Chat {number} with bob ended")
    w.victim.proc.write("a line with no chat chosen")
    assert "! not sent: no chat is chosen" in w.victim.wait_new("! not sent")
    assert w.mallory_log.all(MessageReceived) == []


def test_a_frame_type_from_a_stranger_is_shown_written_out(w):
    body = b"\x81\xa1t\xa7\x1b[2Kbad"           # msgpack {"t": "\x1b[2Kbad"}: an unknown frame type
    with socket.create_connection((w.victim.ip, CHAT_PORT), timeout=10,
                                  source_address=(w.stranger_ip, 0)) as sock:
        sock.sendall(struct.pack(">I", len(body)) + body)
        sock.settimeout(10)
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass
    out = w.victim.wait_new(" ended: ")
    assert_screen_clean(out, [])
